"""Submission through submitit: SLURM job arrays on a cluster, the local executor here.

On SLURM, cells that ask for the same resources (gres, constraint, memory, time, partition)
go as one job array with a parallelism limit: one ``sbatch`` per resource group, not per
cell. ``sweep`` returns once the arrays are submitted. A cell pre-empted or timed out is
requeued by submitit (:class:`CellJob` is checkpointable) and restarts cleanly, at most
``cluster.max_requeue`` times. Locally, cells run one after another (one GPU, or two CPU
cores), each as a submitit local job, while the terminal shows progress; the job's controller
runs in its own session (:class:`SessionLocalExecutor`), so Ctrl-C in the terminal reaches the
launcher alone, which stops the job cleanly (``launch.local``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import submitit
from omegaconf import DictConfig, OmegaConf

from harness import records
from harness.cellkey import CellKey
from launch.validate import mem_request_gb

log = logging.getLogger(__name__)


class CellJob(submitit.helpers.Checkpointable):
    """What a scheduler runs: the cells of one server (one cell, or the JPS levels of one
    gpu/dram/policy when ``cluster.share_server``). Picklable; configs travel as YAML text."""

    def __init__(self, max_requeue: int = 3) -> None:
        self.max_requeue = max_requeue

    def __call__(self, cfg_yamls: list[str], cell_dirs: list[str],
                 rerun: list[str] | None = None) -> list[dict]:  # fmt: skip
        """``rerun``: complete cells to run again (``sweep --rerun``); the others are skipped."""
        from harness.cell import run_cells  # imported on the node

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        records.no_world_write()  # nothing the cells or their server write is world-writable
        mans = run_cells([OmegaConf.create(y) for y in cfg_yamls], [Path(d) for d in cell_dirs],
                         rerun=[Path(d) for d in rerun or ()])  # fmt: skip
        return [{"cell_dir": d, "status": m.status if m else "skipped"}
                for d, m in zip(cell_dirs, mans, strict=True)]

    def checkpoint(self, cfg_yamls: list[str], cell_dirs: list[str],  # type: ignore[override]
                   rerun: list[str] | None = None):  # fmt: skip
        """The requeued job runs the same cells without ``rerun``: a cell this job completed
        stays complete (only the command's explicit rerun moves a complete cell)."""
        attempts = max(len(list((Path(d) / "_attempts").glob("*"))) for d in cell_dirs)
        if attempts >= self.max_requeue:
            log.warning("cells %s: %d attempts already; not requeued", cell_dirs, attempts)
            return None
        log.warning(
            "cells %s: requeued (attempt %d of at most %d)",
            cell_dirs, attempts + 1, self.max_requeue + 1,
        )  # fmt: skip
        return submitit.helpers.DelayedSubmission(CellJob(self.max_requeue), cfg_yamls, cell_dirs)


Item = tuple[CellKey, DictConfig, Path]


def server_groups(items: list[Item]) -> list[list[Item]]:
    """Cells that one job runs: all JPS levels of the same other axes (one server) if the
    cluster shares servers, else one cell each."""
    groups: dict[CellKey, list[Item]] = defaultdict(list)
    for cell, cfg, d in items:
        key = cell.replace(jps=0.0) if cfg.cluster.share_server else cell
        groups[key].append((cell, cfg, d))
    return [sorted(g, key=lambda x: x[0].jps) for g in groups.values()]


def job_args(group, rerun=()) -> tuple[list[str], list[str], list[str]]:
    """CellJob's arguments for a server group; ``rerun``: cell folders of complete cells that
    the command reruns (``sweep --rerun``)."""
    again = {Path(d) for d in rerun}
    return ([OmegaConf.to_yaml(cfg) for _, cfg, _ in group], [str(d) for _, _, d in group],
            [str(d) for _, _, d in group if Path(d) in again])  # fmt: skip


def resources(cfg: DictConfig) -> dict:
    """submitit parameters for one cell, from the gpu, dram and cluster configs."""
    cl = cfg.cluster
    constraint = " & ".join(c for c in (cfg.gpu.slurm.constraint, cl.constraint) if c) or None
    params = {
        "timeout_min": int(cl.time_min),
        "mem_gb": mem_request_gb(cfg),
        "cpus_per_task": int(cl.cpus_per_task),
        "slurm_partition": cl.partition,
        "slurm_account": cl.account,
        "slurm_qos": cl.qos,
        "slurm_gres": cfg.gpu.slurm.gres if cfg.engine.device == "cuda" else None,
        "slurm_constraint": constraint,
        "slurm_setup": list(cl.setup),
        "slurm_additional_parameters": dict(cl.slurm_extra),
    }
    return {k: v for k, v in params.items() if v not in (None, [], {})}


def group_key(params: dict) -> str:
    return repr(sorted(params.items()))


def slurm_executor(folder: Path, cfg: DictConfig, params: dict, name: str) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=int(cfg.cluster.max_requeue)
    )
    ex.update_parameters(
        name=name, slurm_array_parallelism=int(cfg.cluster.array_parallelism), **params
    )
    return ex


def submit_slurm(sweep_path: Path, items: list[Item], rerun=()) -> list[dict]:
    """One array per resource group; returns [{cell, job_id}] for the sweep manifest.
    ``rerun``: folders of complete cells to run again (``sweep --rerun``)."""
    arrays: dict[str, list] = defaultdict(list)
    for group in server_groups(items):
        arrays[group_key(resources(group[0][1]))].append(group)
    out = []
    for groups in arrays.values():
        cfg0 = groups[0][0][1]
        ex = slurm_executor(
            sweep_path / "_submitit", cfg0, resources(cfg0), f"kvbench-{cfg0.experiment.name}"
        )
        job_fn = CellJob(int(cfg0.cluster.max_requeue))
        with ex.batch():
            jobs = [ex.submit(job_fn, *job_args(g, rerun)) for g in groups]
        for group, job in zip(groups, jobs, strict=True):
            out += [{"cell": cell.rel_dir, "job_id": job.job_id} for cell, _, _ in group]
        log.info("submitted %d jobs as array %s", len(jobs), jobs[0].job_id.split("_")[0])
    tighten_submission_files(sweep_path / "_submitit")
    return out


def tighten_submission_files(folder: Path) -> None:
    """After a submission: submitit leaves ``.submission_file_<uuid>.sh``, the batch script's
    temporary name, as a symlink to ``<job>_submission.sh``, and a symlink's own mode is
    always 0777 (ignored by Linux, yet it lists as world-writable). Remove those links (submitit
    never reads them again) and give each script at most ``0o755 & ~umask``: what the umask
    allows a script, never world-writable, never looser than it was. Its other files (the
    pickles a job loads) lose world-write, which only a umask of 0 gives them."""
    for link in folder.glob(".submission_file_*.sh"):
        if link.is_symlink():
            link.unlink()
    for f in folder.iterdir():
        if f.is_symlink() or not f.is_file():
            continue
        mode = f.stat().st_mode & 0o777
        script = f.name.endswith("_submission.sh") or f.name.startswith(".submission_file_")
        new = mode & records.file_mode(executable=True) & 0o755 if script else mode & ~0o002
        if new != mode:
            f.chmod(new)


class SessionLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, with the job's controller started in a session (and process
    group) of its own.

    submitit starts the controller as a plain child of the launcher, in the terminal's
    foreground process group: Ctrl-C reached the controller too, which then killed the cell
    (SIGKILL one second after passing SIGINT on) before it could write its records or stop its
    server. In its own session only the launcher gets the terminal's signals, and the launcher
    decides: it sends SIGTERM to the controller, which forwards it to the cell, which stops
    cleanly (``launch.local``). Everything else is submitit's own ``start_controller``; only the
    ``subprocess.Popen`` it calls gets ``start_new_session=True``, for the time of the call."""

    def _submit_command(self, command: str):
        import submitit.local.local as sub_local

        def popen(*args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            return subprocess.Popen(*args, **kwargs)

        own_session = SimpleNamespace(**{**vars(subprocess), "Popen": popen})
        with _swapped(sub_local, "subprocess", own_session):
            return super()._submit_command(command)


@contextlib.contextmanager
def _swapped(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def local_executor(sweep_path: Path, cfg: DictConfig) -> SessionLocalExecutor:
    """The local executor of a server group (submitit's parameters: ``local_setup`` is its
    ``setup``; a local job has no name)."""
    ex = SessionLocalExecutor(folder=sweep_path / "_submitit")
    params = local_gpu_params(cfg)
    if "local_setup" in params:
        params["setup"] = params.pop("local_setup")
    ex.update_parameters(timeout_min=int(cfg.cluster.time_min), **params)
    return ex


def local_gpu_params(cfg: DictConfig, environ: dict | None = None) -> dict:
    """submitit's local executor sets CUDA_VISIBLE_DEVICES to its first ``gpus_per_node`` GPU
    indices, and to "" (no GPU at all) when none are asked for: a CUDA cell asks for its one
    GPU; if this process was given GPUs (CUDA_VISIBLE_DEVICES set), the job keeps that list."""
    if cfg.engine.device != "cuda":
        return {}
    params: dict = {"gpus_per_node": 1}
    vis = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES", "").strip()
    if vis:
        params["local_setup"] = [f"export CUDA_VISIBLE_DEVICES={shlex.quote(vis)}"]
    return params


class _ScriptOnlyExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor for rendering a batch script where SLURM is absent (a dry
    run on a laptop): its constructor refuses to run without ``srun``; this one never submits."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def sbatch_preview(sweep_path: Path, cfg: DictConfig, n_cells: int) -> str:
    """The batch script one array of this resource group gets (nothing is submitted; no
    SLURM binary is needed). The parameters go through submitit's own conversion, as
    :func:`slurm_executor` gives them to ``AutoExecutor``: generic names renamed by
    ``_convert_parameters``, ``slurm_``-prefixed ones passed as they are."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = sweep_path / "_submitit"
    ex = _ScriptOnlyExecutor(folder=folder, max_num_timeout=int(cfg.cluster.max_requeue))
    params = {"name": f"kvbench-{cfg.experiment.name}", **resources(cfg)}
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    specific = {k.removeprefix("slurm_"): v for k, v in params.items() if k.startswith("slurm_")}
    ex.update_parameters(**ex._convert_parameters(generic), **specific,
                         array_parallelism=int(cfg.cluster.array_parallelism))  # fmt: skip
    return _make_sbatch_string(
        command="python -u -m submitit.core._submit " + str(folder),
        folder=folder,
        map_count=n_cells,
        **ex.parameters,
    )  # the time limit covers every cell of a shared server: see ClusterConf.time_min
