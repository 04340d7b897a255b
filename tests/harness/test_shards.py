"""The sharded client without a server: how jobs are dealt, ranks, how many workers a cell
gets (harness/workers.py), the config key and the plan's warning, the manifest's record, and
a worker killed while it waits (its death named, the others' records kept, no process left).
The same against a real vLLM server: tests/harness/test_shards_server.py."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest

from harness import records, workers
from harness.client import ClientOptions, arrival_ranks
from harness.errors import ConfigError
from harness.shards import ClientWorkerDied, ShardedClient, deal, make_client
from launch import plan, schema
from tests.conftest import spawned_children
from workloads.agent import JobSpec, Workload


def job(i: int, arrival: float, turns: int = 2) -> JobSpec:
    return JobSpec(job_id=i, arrival_s=arrival, first_prompt=(11, 12, 13),
                   tool_outputs=((14, 15),) * (turns - 1), tool_s=(0.1,) * (turns - 1),
                   completion_tokens=4)  # fmt: skip


# ids deliberately out of arrival order, with a tie (jobs 4 and 1 at 0.5 s)
JOBS = [job(0, 0.9), job(4, 0.5), job(1, 0.5), job(3, 0.1), job(2, 2.0), job(5, 0.3)]


def test_deal_is_round_robin_in_arrival_order():
    shares = deal(JOBS, 2)
    assert [[j.job_id for j in s] for s in shares] == [[3, 1, 0], [5, 4, 2]]
    assert [[j.job_id for j in s] for s in deal(JOBS, 4)] == [[3, 0], [5, 2], [1], [4]]
    assert deal(JOBS, 8)[6:] == [[], []]  # more workers than jobs: empty shares (not started)


def test_ranks_are_global_not_per_share():
    ranks = arrival_ranks(JOBS)
    assert ranks == {3: 0, 5: 1, 1: 2, 4: 3, 0: 4, 2: 5}
    second = deal(JOBS, 2)[1]
    assert arrival_ranks(second) == {5: 0, 4: 1, 2: 2}  # what a share alone would say: wrong
    assert [ranks[j.job_id] for j in second] == [1, 3, 5]  # what its worker gets


def test_make_client_is_the_in_process_client_for_one_worker():
    opts = ClientOptions(model="m")
    assert type(make_client("http://x", "k", opts, 1)).__name__ == "AgentClient"
    assert isinstance(make_client("http://x", "k", opts, 3), ShardedClient)


@pytest.mark.parametrize(
    "environ, affinity, want",
    [
        ({}, 16, (16, "CPU affinity")),
        ({"SLURM_CPUS_PER_TASK": "8"}, 64, (8, "SLURM_CPUS_PER_TASK")),
        ({"SLURM_CPUS_PER_TASK": "8"}, 4, (4, "SLURM_CPUS_PER_TASK")),  # no more than it may use
        ({"SLURM_JOB_CPUS_PER_NODE": "12(x2)"}, 64, (12, "SLURM_JOB_CPUS_PER_NODE")),
        ({"SLURM_JOB_CPUS_PER_NODE": "6,4", "SLURM_CPUS_PER_TASK": ""}, 64,
         (6, "SLURM_JOB_CPUS_PER_NODE")),
    ],
)  # fmt: skip
def test_cell_cores_from_slurm_else_affinity(environ, affinity, want):
    c = workers.cell_cores(environ, affinity=affinity)
    assert (c.n, c.source) == want


@pytest.mark.parametrize(
    "setting, rate, device, cores, want",
    [
        ("auto", 8, "cpu", 2, 1),  # the 2-core dev machine's smoke cells: one, in process
        ("auto", 48, "cpu", 2, 1),  # the CPU engine keeps a core: 1 even if 2 are needed
        ("auto", 120, "cuda", 8, 3),  # the seed's top load on a PACE task: capped by need
        ("auto", 120, "cuda", 4, 2),  # capped by the cores the server leaves
        ("auto", 8, "cuda", 64, 1),
        ("auto", 400, "cpu", 16, 8),  # the CPU engine keeps half
        (4, 8, "cuda", 2, 4),  # a number is taken as it is
    ],
)  # fmt: skip
def test_auto_workers_from_cores_and_rate(setting, rate, device, cores, want):
    choice = workers.choose(setting, rate, device, workers.Cores(cores, "test"))
    assert choice.workers == want
    assert choice.short == (rate > want * workers.WORKER_RPS)
    assert choice.basis.startswith("auto: " if setting == "auto" else "workload.client_workers")


def test_needed_and_cores_for():
    assert [workers.needed(r) for r in (0, 40, 40.5, 120)] == [1, 1, 2, 3]
    assert workers.cores_for(3, "cuda") == 5 and workers.cores_for(1, "cpu") == 2
    assert workers.request_rate(15, workers.turns_per_job(JOBS)) == 30


@pytest.mark.parametrize("value", [0, -2, "two", 1.5, True, "4"])
def test_bad_client_workers_refused(value):
    with pytest.raises(ConfigError) as e:
        schema.WorkloadConf(name="w", client_workers=value)
    assert str(e.value).startswith(f"workload.client_workers={schema._show(value)}: must be a "
                                   "positive number of client processes, or auto")  # fmt: skip


def test_bad_client_workers_refused_at_planning_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^workload.client_workers=two: must be a positive "
                                          r"number of client processes, or auto \(from [^\n]*$"):
        plan.make([f"results_dir={tmp_path}", "workload.client_workers=two"])


def test_client_workers_default_auto_and_set(tmp_path):
    p = plan.make([f"results_dir={tmp_path}"])
    assert {c.workload.client_workers for c in p.configs.values()} == {"auto"}
    p = plan.make([f"results_dir={tmp_path}", "workload.client_workers=3"])
    assert {c.workload.client_workers for c in p.configs.values()} == {3}


def test_plan_warns_of_cells_the_client_cannot_carry(tmp_path):
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "2"}  # two cores, as the dev machine
    base = [f"results_dir={tmp_path}", "workload=agent8", "policy=fcfs", "jps=[1,6]"]
    (line,) = plan.make(base, environ=env).warnings  # jps 6 x 8 turns = 48/s; jps 1 is fine
    assert "1 cell(s) expect 48 requests/s (6 jobs/s x 8 turns), more than 1 client" in line
    assert "workload.client_workers=2" in line and "jps=6" in line
    assert "\n" not in line
    assert plan.make([*base, "workload.client_workers=2"], environ=env).warnings == []
    assert plan.make([f"results_dir={tmp_path}"], environ=env).warnings == []  # the smoke


def test_manifest_records_workers_and_reads_old_ones():
    man = {"kvbench_manifest": 2, "cell": {"gpu": "cpu", "dram": 8, "policy": "fcfs",
                                           "sched": "fcfs", "jps": 1.0},
           "client": {"jobs_ok": 3, "lag_p99_s": 0.01}}  # fmt: skip
    old = records.Manifest.from_json(man)
    assert old.client is not None and old.client.workers == 1 and old.client.workers_basis is None
    man["client"] |= {"workers": 3, "workers_basis": "auto: ..."}
    back = records.Manifest.from_json(records.Manifest.from_json(man).to_json())
    assert back.client is not None and (back.client.workers, back.client.workers_basis) == (
        3, "auto: ...")


def test_a_killed_worker_fails_the_run_and_leaves_no_process():
    """No server needed: every job arrives in 60 s, so the workers wait; one is killed."""
    wl = Workload([job(i, 60.0 + i) for i in range(4)], jps=1.0, seed=0)
    client = ShardedClient("http://127.0.0.1:9", "key", ClientOptions(model="m"), 2)

    async def kill_one() -> None:
        await client.started.wait()
        os.kill(client.pids[1], signal.SIGKILL)

    async def main() -> None:
        killer = asyncio.create_task(kill_one())
        try:
            await client.run(wl)
        finally:
            killer.cancel()

    with pytest.raises(ClientWorkerDied) as e:
        asyncio.run(main())
    pid = client.pids[1]
    assert str(e.value) == (f"client worker 2 of 2 (pid {pid}) died: killed by SIGKILL; the "
                            f"cell's records are incomplete")  # fmt: skip
    res = e.value.result
    assert res is not None and [j.job_id for j in res.jobs] == [0, 1, 2, 3]
    assert len(res.turns) == 8 and all(j.status == "failed" for j in res.jobs)
    kept = [t for t in res.turns if t.job_id in (0, 2)]  # worker 1's: aborted, rows say why
    assert {t.status for t in kept} == {"not_sent"}
    assert all(t.error and "killed by SIGKILL" in t.error for t in kept)
    lost = [t for t in res.turns if t.job_id in (1, 3)]
    assert {t.status for t in lost} == {"error"}
    assert all(t.error and t.error.startswith("record lost: client worker 2") for t in lost)
    assert not spawned_children()
    assert not any(psutil.pid_exists(p) for p in client.pids)  # joined: no zombie either
