"""predictive_prefetch with the ``learned`` predictor (the ``predictive_learned`` policy) on a
real vLLM CPU server with a 56-block KV cache: it learns each tool's gap from what the server
sees, ignores the hint's tool time, and the prefetch it times still lands before the turn.

One job ("L") of 9 turns (1,500 prompt tokens, 128 more per turn), the tools between them
alternating ``grep`` / ``build``; every hint says ``kvb_tool_s = 60`` (deliberately wrong: what
``oracle`` would predict), while the client really waits 1.5 s after a turn before the next
one when the tool is ``grep``, 7 s when it is ``build``; the server sees ~0.01 s more (reply
and request latency, ``harness/plugins/gaps.py``). In each ``build`` gap two unhinted
3,900-token prompts (62 blocks) cycle the whole cache, so the job's KV is evicted unless the
connector holds it (0.2-0.25 s of traffic seen). Settings: ``fixed_s`` 15 s, ``min_samples``
2, ``lead_s`` 2 s, ``learn_rate`` and ``quantile`` the defaults (0.05, the median). What
``predictors.Learned`` predicts at each turn end (seen: grep gaps 1.51 s, build 7.01 s):

===  =====  ============================  ========  =========================================
gap  tool   source                        seen      the next turn
===  =====  ============================  ========  =========================================
1    grep   fixed_s (nothing seen)        15 s      late (KV on the host tier, still cached)
2    build  fixed_s (1 gap overall < 2)   15 s      late, evicted: loaded from the host tier
3    grep   all tools' fit (grep: 1 gap)  1.63 s    prefetched (KV still cached)
4    build  all tools' fit (mostly grep)  1.62 s    prefetched at once, held through traffic
5    grep   grep's own fit                1.51 s    prefetched (KV still cached)
6    build  build's own fit               7.01 s    evicted, copied back 2 s before the turn
7    grep   grep's own fit                1.51 s    prefetched (KV still cached)
8    build  build's own fit               7.01 s    evicted, copied back 2 s before the turn
===  =====  ============================  ========  =========================================

The snapshot has each tool's running error summary (``info.prediction``: n, bias, MAE, early
share); read after every return, its difference is that return's error e = predicted -
actual. The test then replays ``predictors.Learned`` with the same settings in the server's
order: prediction p from the gaps so far, actual = p - e, observe(actual). Those actuals must
be the gaps the client made (plus at most ``LATENCY_S``), which holds only if the server
predicted exactly p each time (had it used the hint, the first "actual" would be 15 - (60 -
1.5) < 0). /metrics' per-tool counters (``kvbench:predictions_total{tool="grep"}`` ...) must
agree with the snapshot.

Margins (all against the server-side gap, whose jitter was ~0.01 s here): gaps 1-2 return
6 s or more before their prefetch is due (15 - 2 s); after learning the prefetch is due
2 s before the return; the eviction traffic must be over by then (asserted < 4.5 s, took
0.25 s). About 34 s of traffic after a ~40 s server start.
"""

from __future__ import annotations

import time
import urllib.request

import plugin_server as serving
import pytest
from plugin_server import Job, churn, wait_for
from prometheus_client.parser import text_string_to_metric_families

from harness.hints import Hint
from harness.plugins import predictive_prefetch as pp
from harness.plugins import predictors

pytestmark = pytest.mark.server
HINT_S = 60.0  # every hint's kvb_tool_s: wrong on purpose
GAPS = {"grep": 1.5, "build": 7.0}  # what the client waits after a turn (s)
TOOLS = ["grep", "build"] * 4  # the tool after turns 1-8; turn 9 is the last
SETTINGS = {"predictor": "learned", "fixed_s": 15.0, "min_samples": 2, "lead_s": 2.0,
            "host_tier_gb": 0.05}
CHURN = (2, 3900)  # unhinted prompts x tokens in each build gap: 62 blocks, the whole cache
FIRST, NEW = 1500, 128  # the job's first prompt, tokens added per turn
LATENCY_S = 1.0  # server gap - client gap allowed (reply + next request; seen: 0.01 s)
KIB = 1024  # tiny Llama: 1 KiB of KV per token


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predictive_learned")
    settings = {**SETTINGS, "stats_dir": str(tmp / "stats")}
    srv = serving.start(tmp, pp.server_args(settings), pp.server_env(settings))
    try:
        out = scenario(srv)
        replay(out["gaps"], settings)
        yield out
    finally:
        serving.stop(srv)


def scenario(srv) -> dict:
    job = Job(srv, "L", seed=5, first=FIRST)
    turns = [job.send(tool_s=HINT_S, tool=TOOLS[0])]
    gaps, sums = [], {t: (0.0, 0.0, 0.0) for t in GAPS}  # tool -> sum of e, |e|, early
    for i, tool in enumerate(TOOLS):
        done = turns[-1]["done"]
        churn_s = None
        if tool == "build":
            churn(srv, CHURN[0], seed=1000 + 10 * i, tokens=CHURN[1])
            churn_s = time.monotonic() - done
        time.sleep(max(0.0, done + GAPS[tool] - time.monotonic()))
        sent = time.monotonic()
        last = i == len(TOOLS) - 1
        turns.append(job.send(tool_s=0.0 if last else HINT_S, last=last, new_tokens=NEW,
                              tool="" if last else TOOLS[i + 1]))
        n = TOOLS[:i + 1].count(tool)
        row = tool_row(srv, tool, n)
        err, abs_err, early = (n * row[k] for k in ("bias_s", "mae_s", "early_share"))
        before = sums[tool]
        sums[tool] = (err, abs_err, early)
        gaps.append({"tool": tool, "client_s": sent - done, "churn_s": churn_s,
                     "err": err - before[0], "abs_err": abs_err - before[1],
                     "early": round(early - before[2])})
    time.sleep(0.5)
    wait_for(lambda: sum(r.get(counter("predictions"), 0.0)
                         for r in tool_metrics(srv).values()) >= len(TOOLS), 10)
    snap = srv.stats(pp.POLICY)
    admissions = {a["turn"]: a for a in snap["admissions"] if a["job"] == "L"}
    return {"turns": turns, "gaps": gaps, "snap": snap, "admissions": admissions,
            "metrics": srv.metrics(), "tool_metrics": tool_metrics(srv)}


def tool_row(srv, tool: str, n: int) -> dict:
    """The snapshot's prediction summary of ``tool`` once it counts ``n`` returns."""

    def row() -> dict:
        return srv.stats(pp.POLICY)["info"].get("prediction", {}).get("tools", {}).get(tool, {})

    assert wait_for(lambda: row().get("n") == n, 10), (tool, n, row())
    return row()


def replay(gaps: list[dict], settings: dict) -> None:
    """Each return's prediction and server-side gap, from its error and the Learned
    predictor replayed in the server's order."""
    model = predictors.make("learned", pp.SPEC.parse_settings(settings))
    for g in gaps:
        hint = Hint("L", 1, False, HINT_S, g["tool"])
        g["predicted"] = model.predict(hint)
        g["actual"] = g["predicted"] - g["err"]
        model.observe(hint, g["actual"])


def counter(name: str) -> str:
    return f"kvbench:{name}_total"


def tool_metrics(srv) -> dict[str, dict[str, float]]:
    """The per-tool counters on /metrics, {tool: {sample: value}} (``Server.metrics`` sums
    the ``tool`` label away)."""
    with urllib.request.urlopen(f"{srv.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("kvbench:") and s.name.endswith("_total") and "tool" in s.labels:
                row = out.setdefault(s.labels["tool"], {})
                row[s.name] = row.get(s.name, 0.0) + s.value
    return out


def show(gaps: list[dict]) -> str:
    return "; ".join(f"{g['tool']} p={g['predicted']:.2f} a={g['actual']:.2f} "
                     f"client={g['client_s']:.2f}" for g in gaps)


def test_predictions_are_the_learned_fit_of_the_real_gaps_not_the_hint(run):
    gaps = run["gaps"]
    assert run["snap"]["info"]["prediction"]["predictor"] == "learned"
    for g in gaps:  # the replayed server gaps are the gaps the client made (plus latency)
        assert -0.05 < g["actual"] - g["client_s"] < LATENCY_S, show(gaps)
        assert g["abs_err"] == pytest.approx(abs(g["err"]), abs=2e-3), g
        if abs(g["err"]) > 2e-3:  # else the summary's rounding hides the sign
            assert g["early"] == int(g["err"] > 0), g
    fixed = SETTINGS["fixed_s"]
    assert [g["predicted"] for g in gaps[:2]] == [fixed, fixed]  # nothing learned yet
    assert gaps[0]["err"] > fixed - GAPS["grep"] - LATENCY_S and gaps[0]["early"] == 1
    assert gaps[1]["err"] > fixed - GAPS["build"] - LATENCY_S and gaps[1]["early"] == 1
    for g in gaps[2:]:  # learned: near the real gaps, nowhere near the hint's 60 s
        assert g["predicted"] < 0.2 * HINT_S, show(gaps)
    for g in gaps[4:]:  # each tool's own fit (2 gaps seen)
        assert abs(g["err"]) < 0.5, show(gaps)
        assert abs(g["predicted"] - GAPS[g["tool"]]) < LATENCY_S, show(gaps)


def test_each_tool_gets_its_own_estimate(run):
    gaps = run["gaps"]
    # gaps 3 and 4: too few of the tool's own, all tools' fit (1 grep gap then 1 build gap
    # with weight 0.05): near grep's gap, so build's second gap is predicted ~5 s short
    for g in gaps[2:4]:
        assert GAPS["grep"] - 0.05 < g["predicted"] < GAPS["grep"] + 1.0, show(gaps)
    assert gaps[3]["err"] < -(GAPS["build"] - GAPS["grep"] - 1.0) and gaps[3]["early"] == 0
    grep = [g["predicted"] for g in gaps[4:] if g["tool"] == "grep"]
    build = [g["predicted"] for g in gaps[4:] if g["tool"] == "build"]
    assert min(build) - max(grep) > GAPS["build"] - GAPS["grep"] - 1.0, show(gaps)
    pred = run["snap"]["info"]["prediction"]
    assert {t: pred["tools"][t]["n"] for t in GAPS} == {"grep": 4, "build": 4}
    assert pred["all"]["n"] == len(TOOLS)
    for tool in GAPS:  # the per-tool counters on /metrics say the same
        mine, row = [g for g in gaps if g["tool"] == tool], run["tool_metrics"][tool]
        assert row[counter("predictions")] == len(mine)
        assert row[counter("returns_before_prediction")] == sum(g["early"] for g in mine)
        # a counter never incremented (no return after the prediction) has no sample
        over = row.get(counter("prediction_over_seconds"), 0.0)
        under = row.get(counter("prediction_under_seconds"), 0.0)
        assert over - under == pytest.approx(sum(g["err"] for g in mine), abs=2e-3)
        assert over + under == pytest.approx(pred["tools"][tool]["mae_s"] * len(mine), abs=2e-3)
    assert run["metrics"][counter("predictions")] == len(TOOLS)


def full_blocks(turn: dict) -> int:
    """Tokens in the full blocks of the turn's previous context: all a prefix cache (or the
    host tier) can give back; the partial last block is recomputed."""
    return serving.BLOCK * (turn["prev_context"] // serving.BLOCK)


def test_late_before_learning_prefetched_after(run):
    adm, turns = run["admissions"], run["turns"]  # turns[t - 1]: turn t
    states = {t: adm[t]["state_at_arrival"] for t in range(2, 10)}
    assert states == {2: "host", 3: "host", **dict.fromkeys(range(4, 10), "vram")}, states
    # turn 3 came after the first build gap (15 s predicted): evicted, loaded late from host
    assert adm[3]["local_tokens"] == 0 and adm[3]["host_tokens"] == full_blocks(turns[2])
    assert turns[2]["cached"] >= full_blocks(turns[2]), turns[2]
    for t in (7, 9):  # after the learned build gaps: evicted, prefetched back in time
        turn = turns[t - 1]
        assert turn["cached"] >= full_blocks(turn), (t, turn)
        assert adm[t]["local_tokens"] >= full_blocks(turn) and adm[t]["host_tokens"] == 0, adm[t]
    for g in run["gaps"]:
        if g["churn_s"] is not None:
            assert g["churn_s"] < GAPS["build"] - SETTINGS["lead_s"] - 0.5, run["gaps"]
    c = run["snap"]["counters"]
    assert c["prefetch_late"] == 2 and c["prefetch_hits"] == 6, c
    assert c["late_load_bytes"] == full_blocks(turns[2]) * KIB, c  # turn 2's whole context
    # the eviction traffic took all of turn 6's and turn 8's KV: the prefetches copied it back
    assert c["prefetch_bytes"] == (full_blocks(turns[6]) + full_blocks(turns[8])) * KIB, c
    assert c["pins_released_pressure"] == 0 and c["wasted_prefetches"] == 0, c
    assert run["snap"]["jobs"] == {} and run["snap"]["gauges"]["host_tier_blocks"] == 0
    m = run["metrics"]
    assert m[counter("prefetch_late")] == 2 and m[counter("prefetch_hits")] == 6
    assert m[counter("prefetch_bytes")] == c["prefetch_bytes"]
