"""``python -m launch {sweep,status,cell,workload}``: the command-line edge (rich output lives
here)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cellkey import NAMES, fmt_value
from harness.errors import ConfigError, KvbenchError
from harness.lock import SWEEP_LOCK, FolderLock, Holder
from harness.records import disk_full, write_failure
from launch import cancel as cancelmod
from launch import plan as planmod
from launch import status as statusmod
from launch import submit
from launch.cluster import check_partition
from workloads.sources import describe as describe_jobs

console = Console(stderr=False)
log = logging.getLogger("launch")

USAGE = """python -m launch sweep [--dry-run] [--wait] [--rerun PATTERN] [overrides ...]
                                                       e.g. gpu=h100 dram=400 jps=[3,6]
python -m launch status <sweep folder>
python -m launch cancel <sweep folder>                 stop its queued and running cells
python -m launch cell [overrides ...]                  one cell in the foreground
python -m launch workload --out FILE [overrides ...]   one cell's jobs to FILE (.parquet/.jsonl)"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch", usage=USAGE)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (a bug)")  # fmt: skip
    sub = ap.add_subparsers(dest="verb", required=True)
    sw = sub.add_parser("sweep", parents=[common], help="plan and submit a sweep")
    sw.add_argument("--dry-run", action="store_true", help="print the cells and the batch script")
    sw.add_argument("--no-report", action="store_true", help="local: skip the report at the end")
    sw.add_argument("--wait", action="store_true",
                    help="if another command holds the sweep folder, wait for it, then resume")
    sw.add_argument("--rerun", action="append", default=[], metavar="PATTERN",
                    help="run these complete cells again (fnmatch over the cell path, e.g. "
                         "'gpu=cpu/dram=8/policy=fcfs/*'; repeatable); their files move to "
                         "_attempts/<n>/")  # fmt: skip
    sw.add_argument("overrides", nargs="*")
    st = sub.add_parser("status", parents=[common], help="state of each cell of a sweep folder")
    st.add_argument("folder", type=Path)
    ca = sub.add_parser("cancel", parents=[common],
                        help="stop a sweep's queued and running cells (resumable)")
    ca.add_argument("folder", type=Path)
    ce = sub.add_parser("cell", parents=[common], help="run one cell in the foreground")
    ce.add_argument("overrides", nargs="*")
    wo = sub.add_parser("workload", parents=[common],
                        help="write one cell's jobs to a file, to inspect or replay")
    wo.add_argument("--out", required=True, help="FILE.parquet or FILE.jsonl")
    wo.add_argument("overrides", nargs="*", help="overrides selecting one cell (jps=3 ...)")
    args = ap.parse_args(_flags_first(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.verb == "sweep":
            return cmd_sweep(args.overrides, args.dry_run, not args.no_report,
                             rerun=args.rerun, wait=args.wait)  # fmt: skip
        if args.verb == "status":
            return statusmod.show(args.folder, console)
        if args.verb == "cancel":
            return cancelmod.cancel(args.folder, console)
        if args.verb == "workload":
            return cmd_workload(args.out, args.overrides)
        return cmd_cell(args.overrides)
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KvbenchError as e:
        console.print(f"[bold red]failed:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before anything ran (a running sweep handles its own)
        console.print("interrupted", highlight=False)
        return 130
    except Exception as e:  # a bug: one line here, the traceback with --debug
        if not args.debug and isinstance(e, OSError) and disk_full(e):  # the disk, not a bug
            where = Path(e.filename) if e.filename else None
            console.print(f"[bold red]failed:[/] {escape(write_failure(e, where))}",
                          highlight=False, soft_wrap=True)  # fmt: skip
            return 1
        if args.debug:
            raise
        console.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} "
                      f"(a kvbench bug; rerun with --debug for the traceback)",
                      highlight=False, soft_wrap=True)  # fmt: skip
        return 70


def _flags_first(argv: list[str]) -> list[str]:
    """Let flags come anywhere among the overrides (``sweep gpu=h100 --dry-run dram=400``)."""
    if not argv:
        return argv
    flags: list[str] = []
    rest: list[str] = []
    args = iter(argv[1:])
    for a in args:
        if a.startswith("--"):
            flags += [a, next(args, "")] if a in _VALUE_FLAGS else [a]
        else:
            rest.append(a)
    return [argv[0], *flags, *rest]


_VALUE_FLAGS = {"--out", "--rerun"}  # flags followed by their value


def cell_table(p: planmod.Plan) -> Table:
    t = Table(title=f"{p.sweep.path}  ({len(p.cells)} cells, {len(p.todo())} to run)")
    for col in (*NAMES, "state", "cell folder"):
        t.add_column(col)
    todo = set(p.todo())
    again = set(p.rerun())
    for c in p.cells:
        state = "rerun" if c in again else "to run" if c in todo else "done (skipped)"
        t.add_row(*(fmt_value(v) for v in c.as_dict().values()), state, c.rel_dir)
    return t


def policy_table(p: planmod.Plan) -> Table:
    """What runs for each policy (and order): never a silent substitution."""
    from harness import policies

    t = Table(title="what runs, per policy")
    for col in ("policy", "sched", "implementation"):
        t.add_column(col, overflow="fold")
    seen: set[tuple[str, str]] = set()
    for c in p.cells:
        if (c.policy, c.sched) in seen:
            continue
        seen.add((c.policy, c.sched))
        cfg = p.configs[c]
        t.add_row(c.policy, c.sched, policies.of(cfg).implementation(cfg))
    return t


def print_warnings(p: planmod.Plan) -> None:
    for line in p.warnings:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def workload_line(cfg) -> str:
    """The resolved workload, model and engine of a cell, in one line."""
    w, m, e = cfg.workload, cfg.model, cfg.engine
    jobs = describe_jobs(w, float(cfg.jps))
    weights = "dummy weights" if m.load_format == "dummy" else m.load_format
    return (f"workload {w.name}: {jobs}; model {m.name} ({m.path}, {weights}); "
            f"engine {e.name} ({e.package} {e.version})")


def cmd_sweep(overrides: list[str], dry_run: bool, report: bool, rerun: tuple | list = (),
              wait: bool = False) -> int:  # fmt: skip
    t0 = time.perf_counter()
    p = planmod.make(overrides, rerun=list(rerun))
    console.print(p.cluster.describe(), highlight=False, soft_wrap=True)
    exp = p.base.experiment
    why = (" (the command names a GPU and no experiment: the seed's sweep for it; "
           "experiment=<name> plans another)") if p.experiment_defaulted else ""
    console.print(f"experiment: {exp.name} - {exp.description}{why}", highlight=False,
                  soft_wrap=True)  # fmt: skip
    console.print(cell_table(p))
    console.print(policy_table(p))
    print_warnings(p)
    console.print(
        f"planned {len(p.cells)} cells in {time.perf_counter() - t0:.2f} s", highlight=False
    )
    if dry_run:
        _preview(p)
        if p.executor == "slurm":
            try:
                check_partition(p.base.cluster.partition)
            except ConfigError as e:  # this machine's SLURM may not be the profile's cluster
                console.print(f"[yellow]warning:[/] {escape(str(e))}; submitting here would be "
                              "refused", highlight=False, soft_wrap=True)  # fmt: skip
        return 0
    if p.executor == "slurm":
        check_partition(p.base.cluster.partition)
    if p.executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            f"cluster={p.base.cluster.name} submits with sbatch, which is not on this machine's "
            f"PATH; run the command on the cluster's login node, or add --dry-run to preview"
        )
    flags = [*(["--wait"] if wait else []), *(x for r in rerun for x in ("--rerun", r))]
    command = "python -m launch sweep " + shlex.join([*flags, *overrides])
    before = {c.rel_dir for c in p.todo()}
    failed: bool | None = None
    with sweep_lock(p.sweep.path, wait, command):
        # Held for a local sweep's whole run, for a SLURM sweep's submission. What was planned
        # is read again under the lock: another command may have run or submitted cells.
        p.refresh()
        p.sweep.save()
        todo = p.todo()
        if {c.rel_dir for c in todo} != before:
            console.print(f"the sweep folder changed since planning: {len(todo)} cell(s) to run "
                          "now", highlight=False)  # fmt: skip
        if not todo:
            console.print("every cell is complete; nothing to run")
            return 0
        if p.executor == "slurm":
            return _submit_slurm(p, todo)
        failed = _run_local(p, todo)
    if report:
        _report(p.sweep.path)
    return 1 if failed else 0


@contextlib.contextmanager
def sweep_lock(path: Path, wait: bool, command: str):
    """Hold the sweep folder's lock (``harness.lock``) for the block: a second command on the
    folder is refused in one line naming the holder (exit 2), or waits with ``--wait``."""
    lock = FolderLock(path, SWEEP_LOCK, "sweep folder", command=command,
                      hint=f"add --wait to wait for it; follow it with python -m launch status "
                           f"{path}, stop it with python -m launch cancel {path}")  # fmt: skip

    def waiting(holder: Holder | None) -> None:
        who = holder.describe() if holder else "another process"
        console.print(f"waiting: sweep folder {path} is in use by {who}", highlight=False,
                      soft_wrap=True, markup=False)  # fmt: skip

    lock.acquire(wait=wait, on_wait=waiting)
    try:
        if lock.took_over is not None:
            console.print(lock.takeover_line(), highlight=False, soft_wrap=True, markup=False)
        yield lock
    finally:
        lock.release()


def _preview(p: planmod.Plan) -> None:
    """Each job array (SLURM: one per resource group) or server group (local) with its cells,
    resources, workload, model and engine, and on SLURM its batch script. Needs no SLURM.
    Only the cells the sweep would run: a folder whose cells are all complete submits nothing."""
    todo = p.todo()
    if not todo:
        console.print(f"\nevery cell is complete; nothing would be submitted ({len(p.cells)} "
                      "done; sweep --rerun PATTERN runs done cells again)", highlight=False,
                      soft_wrap=True)  # fmt: skip
        return
    items = [(c, p.configs[c], p.cell_dir(c)) for c in todo]
    groups = submit.server_groups(items)
    if p.executor == "slurm":
        arrays: dict[str, list] = {}
        for g in groups:
            arrays.setdefault(submit.group_key(submit.resources(g[0][1])), []).append(g)
        console.print(f"\n{len(arrays)} job array(s) would be submitted (one sbatch per resource "
                      f"group), {len(groups)} array tasks in all.", highlight=False)  # fmt: skip
        for k, array in enumerate(arrays.values(), 1):
            cfg = array[0][0][1]
            res = submit.resources(cfg)
            cells = [c for g in array for c, _, _ in g]
            console.print(f"\n[bold]array {k} of {len(arrays)}[/]: {len(array)} task(s), "
                          f"{len(cells)} cell(s): {_span(cells)}", highlight=False,
                          soft_wrap=True)  # fmt: skip
            console.print("  resources: " + ", ".join(f"{key}={v}" for key, v in res.items()
                                                       if key != "slurm_setup"),
                          highlight=False, soft_wrap=True, markup=False)  # fmt: skip
            for line in dict.fromkeys(workload_line(c) for g in array for _, c, _ in g):
                console.print("  " + line, highlight=False, soft_wrap=True, markup=False)
            console.print("  batch script:", highlight=False)
            script = submit.sbatch_preview(p.sweep.path, cfg, len(array))
            console.print(script, highlight=False, markup=False, soft_wrap=True)
    else:
        console.print(f"\nlocal executor: {len(groups)} server group(s) run one after another "
                      "on this machine, each a submitit local job running "
                      "harness.cell.run_cells", highlight=False)  # fmt: skip
        for k, g in enumerate(groups, 1):
            lines = "; ".join(dict.fromkeys(workload_line(c) for _, c, _ in g))
            console.print(f"  group {k}: {_span([c for c, _, _ in g])}; {lines}",
                          highlight=False, soft_wrap=True, markup=False)  # fmt: skip
    console.print("dry run: nothing submitted, nothing written")


def _span(cells) -> str:
    """A few cells' labels, and how many more."""
    shown = ", ".join(c.label for c in cells[:3])
    return shown + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")


def _submit_slurm(p: planmod.Plan, todo) -> int:
    active = statusmod.active_cells(p.sweep)
    todo = [c for c in todo if c.rel_dir not in active]
    if active:
        console.print(
            f"{len(active)} cell(s) still queued or running from an earlier submission; "
            "not resubmitted"
        )
    items = [(c, p.configs[c], p.cell_dir(c)) for c in todo]
    jobs = submit.submit_slurm(p.sweep.path, items, rerun=[p.cell_dir(c) for c in p.rerun()])
    p.sweep.add_submission({"time": time.time(), "executor": "slurm", "jobs": jobs})
    arrays = sorted({j["job_id"].split("_")[0] for j in jobs})
    console.print(f"submitted {len(jobs)} cells as {len(arrays)} job array(s): {', '.join(arrays)}")
    console.print(f"follow with: python -m launch status {p.sweep.path}")
    return 0


def _run_local(p: planmod.Plan, todo) -> bool:
    """Run the cells here, one server group after another; True if any failed."""
    from launch.local import run_serially

    t0 = time.perf_counter()
    failed = run_serially(p, todo, console)
    console.print(f"sweep {p.sweep.path}: {len(todo) - len(failed)} of {len(todo)} cells ran, "
                  f"{len(failed)} failed, in {time.perf_counter() - t0:.0f} s",
                  highlight=False)  # fmt: skip
    return bool(failed)


def _report(sweep: Path) -> None:
    try:
        from analysis.report import build_report
    except ImportError as e:
        console.print(f"(no report: {e})")
        return
    from launch.compose import REPO_ROOT

    try:
        out = build_report([sweep], REPO_ROOT / "reports" / sweep.name)
    except Exception as e:  # noqa: BLE001 - the cells are safe; say why the report is not
        log.exception("report failed")
        console.print(f"[red]report failed[/] ({type(e).__name__}: {e}); the cells are intact: "
                      f"python -m analysis report {sweep}", highlight=False)  # fmt: skip
        return
    console.print(f"report: {out}", highlight=False)


def cmd_cell(overrides: list[str]) -> int:
    from harness.cell import run_cell

    p = planmod.make(overrides)
    if len(p.cells) != 1:
        raise ConfigError(f"cell runs exactly one cell; these overrides give {len(p.cells)}: "
                          f"set {', '.join(n + '=' for n in NAMES)} to one value each")  # fmt: skip
    c = p.cells[0]
    print_warnings(p)
    command = "python -m launch cell " + shlex.join(overrides)
    with sweep_lock(p.sweep.path, False, command):  # only to record the cell in sweep.json
        p.refresh()
        p.sweep.save()
    man = run_cell(p.configs[c], p.cell_dir(c))  # holds the cell folder's lock while it runs
    status = man.status if man else "skipped (complete)"
    console.print(f"cell {p.cell_dir(c)}: {status}")
    return 0 if man is None or man.status == "ok" else 1


def cmd_workload(out: str, overrides: list[str]) -> int:
    """Plan one cell (nothing written but ``out``) and write its jobs, as the harness builds
    them (``workloads.build``), to ``out``; replay with ``workload.trace=<out>``."""
    import workloads

    p = planmod.make(overrides)
    if len(p.cells) != 1:
        raise ConfigError(f"workload writes exactly one cell; these overrides give {len(p.cells)}: "
                          f"set {', '.join(n + '=' for n in NAMES)} to one value each")  # fmt: skip
    if Path(out).suffix not in workloads.io.SUFFIXES:
        raise ConfigError(f"--out {out}: allowed suffixes: {', '.join(workloads.io.SUFFIXES)}")
    wl = workloads.build(p.configs[p.cells[0]])
    path = workloads.save(wl, out)
    s = wl.summary()
    console.print(f"{path}: {s['n_jobs']} jobs, {s['n_turns']} turns, seed {s['seed']}, "
                  f"jps {s['jps']:g}, {s['prompt_tokens_total']} prompt tokens, "
                  f"digest {s['digest']}", highlight=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
