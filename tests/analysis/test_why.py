import json

import pandas as pd
import pytest

from analysis import why

K = {"sweep": "s", "gpu": "h100", "dram": 400, "policy": "lmcache", "sched": "fcfs",
     "jps": 3.0}


def _metrics(rows: list[tuple[float, str, dict, float]]) -> pd.DataFrame:
    return pd.DataFrame([{**K, "t_s": t, "name": n,
                          "labels": json.dumps({"engine": "0", **lab}, sort_keys=True),
                          "value": v} for t, n, lab, v in rows])


def test_counter_increase_counts_steps_and_resets():
    m = _metrics([(t, why.HITS, {}, v) for t, v in
                  [(0, 100.0), (1, 110.0), (2, 130.0), (3, 5.0), (4, 15.0)]])
    inc = why.counter_increase(m)
    # 100 -> 130 is +30; the drop to 5 is a reset (+5); then +10. The start value is not counted.
    assert inc["increase"].item() == pytest.approx(45.0)


def test_hit_rate_is_hits_over_prompt_tokens_not_queries():
    m = _metrics([(0, why.HITS, {}, 0.0), (9, why.HITS, {}, 300.0),
                  (0, why.QUERIES, {}, 0.0), (9, why.QUERIES, {}, 5000.0),
                  (0, why.PREEMPTIONS, {}, 0.0), (9, why.PREEMPTIONS, {}, 4.0),
                  (0, "vllm:prefix_cache_hits_created", {}, 1.7e9)])
    turns = pd.DataFrame([{**K, "turn": t, "prompt_tokens": 500, "server_prompt_tokens": None,
                           "cached_tokens": c, "status": "ok"} for t, c in [(1, 0), (2, 300)]])
    turns["server_prompt_tokens"] = turns["server_prompt_tokens"].astype(float)
    valid = pd.DataFrame([K])
    w = why.why_table(valid, turns, m).iloc[0]
    assert w["prefix_hit_rate"] == pytest.approx(300 / 1000)
    assert w["prefix_queries"] == pytest.approx(5000)
    assert w["cached_frac"] == pytest.approx(300 / 1000)
    assert w["preemptions"] == pytest.approx(4)


def test_offload_bytes_by_transfer_type_summed_over_engines():
    m = _metrics([(0, why.OFFLOAD_BYTES, {"transfer_type": "GPU_to_CPU"}, 0.0),
                  (5, why.OFFLOAD_BYTES, {"transfer_type": "GPU_to_CPU"}, 2e9),
                  (0, why.OFFLOAD_BYTES, {"transfer_type": "CPU_to_GPU"}, 0.0),
                  (5, why.OFFLOAD_BYTES, {"transfer_type": "CPU_to_GPU"}, 5e8)])
    m2 = m.assign(labels=m["labels"].str.replace('"engine": "0"', '"engine": "1"'))
    b = why.offload_bytes(why.counter_increase(pd.concat([m, m2]))).iloc[0]
    assert b["bytes_offload"] == pytest.approx(4e9)
    assert b["bytes_onload"] == pytest.approx(1e9)


def test_kv_usage_prefers_the_current_name():
    m = _metrics([(0, "vllm:kv_cache_usage_perc", {}, 0.5),
                  (0, "vllm:gpu_cache_usage_perc", {}, 0.9)])
    assert why.kv_usage(m)["value"].tolist() == [0.5]
    old = _metrics([(0, "vllm:gpu_cache_usage_perc", {}, 0.9)])
    assert why.kv_usage(old)["value"].tolist() == [0.9]


def test_downsample_bounds_points_per_cell():
    s = pd.DataFrame({**K, "t_s": range(1000), "value": [0.5] * 1000})
    d = why.downsample(s, points=100)
    assert len(d) == 100 and d["value"].eq(0.5).all()


def test_clock_outliers_are_flagged_and_left_out():
    # a shared server: the baseline scrape (value from the previous cell) came with a clock
    # that is not relative to t0, so it sorts last and would read as a counter reset
    m = _metrics([(3660.0, why.HITS, {}, 7680.0), (1.0, why.HITS, {}, 7936.0),
                  (5.0, why.HITS, {}, 15360.0)])
    jobs = pd.DataFrame([{**K, "end_s": 11.0}])
    out = why.clock_outliers(m, jobs)
    assert len(out) == 1 and out["n"].item() == 1 and out["t_max"].item() == 3660.0
    assert why.counter_increase(m)["increase"].item() == pytest.approx(7424 + 7680)
    kept = why.drop_clock_outliers(m, jobs)
    assert kept["t_s"].tolist() == [1.0, 5.0]
    assert why.counter_increase(kept)["increase"].item() == pytest.approx(7424)
    assert why.clock_outliers(kept, jobs).empty
