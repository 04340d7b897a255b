"""Statistics of the seed's sections 2 and 3: mean JCT, per-turn latency, T8/T1 and its shape,
winner per GPU x DRAM x JPS with a bootstrap confidence interval over jobs.

All functions take long frames keyed by load.KEYS and return small frames with the same keys.
Only valid cells (validity.assess) are given numbers; the callers keep the others as states.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import KEYS
from harness.cellkey import BY_NAME, fmt_value

log = logging.getLogger(__name__)

# A group (sweep, GPU, DRAM, JPS) holds the contestants that are compared: its cells, one per
# (policy, scheduling order) pair, so that "FCFS · program order" can win against "FCFS".
CONTESTANT = ["policy", "sched"]
GROUP = [k for k in KEYS if k not in CONTESTANT]
REFERENCE_POLICY = "continuum"
DEFAULT_SCHED: str = BY_NAME["sched"].legacy  # the engine's default order (and the seed's)
Contestant = tuple[str, str]  # (policy, sched)
_CHUNK_ELEMS = 4_000_000  # bootstrap index matrix cap, elements (32 MB as int64)


@dataclass(frozen=True)
class Window:
    """Jobs kept for the statistics, by arrival order: drop the first `head` and the last
    `tail` fraction of each cell's jobs (ramp-up and drain). Default: all jobs, as the seed."""

    head: float = 0.0
    tail: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.head < 1 and 0 <= self.tail < 1 and self.head + self.tail < 1):
            raise ValueError(f"window head={self.head} tail={self.tail}: each must be in [0, 1) "
                             "and together below 1")

    @property
    def is_all(self) -> bool:
        return self.head == 0 and self.tail == 0

    def describe(self) -> str:
        if self.is_all:
            return "all jobs (no ramp-up/drain window)"
        return (f"jobs by arrival order without the first {self.head:.0%} (ramp-up) and "
                f"the last {self.tail:.0%} (drain) of each cell")

    def bounds(self, n: int) -> tuple[int, int]:
        """Half-open range [lo, hi) of arrival ranks kept out of n jobs."""
        return math.floor(self.head * n), n - math.floor(self.tail * n)


def window_jobs(jobs: pd.DataFrame, window: Window) -> pd.DataFrame:
    """jobs plus `in_window` (bool) and `arrival_rank` (0-based, per cell)."""
    g = jobs.groupby(KEYS, sort=False)["arrival_s"]
    rank = g.rank(method="first").fillna(0).astype("int64") - 1
    n = g.transform("size")
    lo = np.floor(window.head * n)
    hi = n - np.floor(window.tail * n)
    return jobs.assign(arrival_rank=rank, in_window=(rank >= lo) & (rank < hi))


def _rng(seed: int, *label: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(label).encode())])


def bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator,
                    idx_rows: np.ndarray | None = None) -> np.ndarray:
    """Means of n_boot resamples of x (with replacement)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    out = np.empty(n_boot)
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    for s in range(0, n_boot, step):
        k = min(step, n_boot - s)
        idx = idx_rows[s:s + k] if idx_rows is not None else rng.integers(0, n, size=(k, n))
        out[s:s + k] = x[idx].mean(axis=1)
    return out


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def rel_diff(a: np.ndarray, b: np.ndarray, n_boot: int, level: float,
             rng: np.random.Generator, paired: bool = False) -> tuple[float, float, float]:
    """(mean(a)/mean(b) - 1) in percent, with its bootstrap CI. Paired resampling needs a and
    b aligned job by job (same job ids, same order)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0 or b.mean() == 0:
        return math.nan, math.nan, math.nan
    point = (a.mean() / b.mean() - 1) * 100
    if n_boot <= 0 or a.size < 2 or b.size < 2:
        return point, math.nan, math.nan
    if paired:
        ra, rb = _paired_means(a, b, n_boot, rng)
    else:
        ra, rb = bootstrap_means(a, n_boot, rng), bootstrap_means(b, n_boot, rng)
    lo, hi = _percentiles((ra / rb - 1) * 100, level)
    return point, lo, hi


def _paired_means(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    n = a.size
    ra, rb = np.empty(n_boot), np.empty(n_boot)
    step = max(1, _CHUNK_ELEMS // n)
    for s in range(0, n_boot, step):
        k = min(step, n_boot - s)
        idx = rng.integers(0, n, size=(k, n))
        ra[s:s + k], rb[s:s + k] = a[idx].mean(axis=1), b[idx].mean(axis=1)
    return ra, rb


def job_samples(jobs_w: pd.DataFrame, valid: pd.DataFrame) -> dict[tuple, pd.Series]:
    """JCT per valid cell, indexed by job id (sorted): ok jobs inside the window."""
    keep = jobs_w[jobs_w["in_window"] & (jobs_w["status"] == "ok") & jobs_w["jct_s"].notna()]
    keep = keep.merge(valid[KEYS], on=KEYS)
    return {k: g.set_index("job_id")["jct_s"].sort_index()
            for k, g in keep.groupby(KEYS, sort=True)}


@dataclass
class Bootstrap:
    """Resampled means of JCT per valid cell. The cells of one group (sweep, GPU, DRAM, JPS:
    every policy and scheduling order) share their resampling indices when they hold the same
    job ids (paired: same seed, same jobs), which is what a comparison between them needs."""

    means: dict[tuple, np.ndarray]
    paired: dict[tuple, bool]
    level: float

    def ci(self, key: tuple) -> tuple[float, float]:
        m = self.means.get(key)
        return _percentiles(m, self.level) if m is not None and m.size else (math.nan, math.nan)

    def rel(self, a: tuple, b: tuple, samples: dict[tuple, pd.Series]
            ) -> tuple[float, float, float]:
        """(mean(a)/mean(b) - 1) in percent with its CI, for two cells of one group."""
        ma, mb = samples[a].mean(), samples[b].mean()
        point = (ma / mb - 1) * 100 if mb else math.nan
        ra, rb = self.means.get(a), self.means.get(b)
        if ra is None or rb is None or not ra.size or not rb.size:
            return point, math.nan, math.nan
        return (point, *_percentiles((ra / rb - 1) * 100, self.level))


def _group_key(key: tuple) -> tuple:
    k = dict(zip(KEYS, key, strict=True))
    return tuple(k[g] for g in GROUP)


def bootstrap(samples: dict[tuple, pd.Series], n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> Bootstrap:
    groups: dict[tuple, list[tuple]] = {}
    for key in samples:
        groups.setdefault(_group_key(key), []).append(key)
    means: dict[tuple, np.ndarray] = {}
    paired: dict[tuple, bool] = {}
    for g, keys in groups.items():
        idx0 = samples[keys[0]].index
        paired[g] = all(samples[k].index.equals(idx0) for k in keys)
        if n_boot <= 0 or any(samples[k].size < 2 for k in keys):
            continue
        if paired[g]:
            xs = [samples[k].to_numpy(float) for k in keys]
            for k, m in zip(keys, _shared_means(xs, n_boot, _rng(seed, "group", g)),
                            strict=True):
                means[k] = m
        else:
            for k in keys:
                means[k] = bootstrap_means(samples[k].to_numpy(float), n_boot,
                                           _rng(seed, "cell", k))
    return Bootstrap(means, paired, level)


def _shared_means(xs: list[np.ndarray], n_boot: int, rng: np.random.Generator
                  ) -> list[np.ndarray]:
    """Resampled means of several aligned arrays, with the same indices for all."""
    n = xs[0].size
    out = [np.empty(n_boot) for _ in xs]
    step = max(1, _CHUNK_ELEMS // n)
    for s in range(0, n_boot, step):
        k = min(step, n_boot - s)
        idx = rng.integers(0, n, size=(k, n), dtype=np.int32)
        for o, x in zip(out, xs, strict=True):
            o[s:s + k] = x[idx].mean(axis=1)
    return out


def cell_jct(samples: dict[tuple, pd.Series], boot: Bootstrap) -> pd.DataFrame:
    """Mean, percentiles and bootstrap CI of the mean of JCT, per cell."""
    rows = []
    for key, s in samples.items():
        x = s.to_numpy()
        lo, hi = boot.ci(key)
        p50, p90, p99 = np.quantile(x, [0.5, 0.9, 0.99]) if x.size else (math.nan,) * 3
        rows.append({**dict(zip(KEYS, key, strict=True)), "n_used": x.size,
                     "mean_jct_s": x.mean() if x.size else math.nan, "ci_lo_s": lo,
                     "ci_hi_s": hi, "p50_jct_s": p50, "p90_jct_s": p90, "p99_jct_s": p99})
    cols = KEYS + ["n_used", "mean_jct_s", "ci_lo_s", "ci_hi_s", "p50_jct_s", "p90_jct_s",
                   "p99_jct_s"]
    return pd.DataFrame(rows, columns=cols)


def compare_samples(a: pd.Series, b: pd.Series, n_boot: int, level: float,
                    rng: np.random.Generator) -> tuple[float, float, float, bool]:
    """rel_diff of two cells' JCT (e.g. of two sweeps); paired when both hold the same job
    ids."""
    paired = a.index.equals(b.index)
    return (*rel_diff(a.to_numpy(), b.to_numpy(), n_boot, level, rng, paired), paired)


def group_label(row: dict | pd.Series) -> str:
    """A group of contestants as a path: ``gpu=h100/dram=64/jps=3``."""
    return "/".join(f"{n}={fmt_value(row[n])}" for n in GROUP if n != "sweep")


def cell_key(group: dict | pd.Series, c: Contestant) -> tuple:
    """The cell of contestant c in a group (any mapping with the GROUP keys), in KEYS order."""
    named = dict(zip(CONTESTANT, c, strict=True))
    return tuple(named[n] if n in named else group[n] for n in KEYS)


def reference_of(c: Contestant, have: Callable[[Contestant], bool],
                 policy: str = REFERENCE_POLICY) -> Contestant | None:
    """What contestant c is measured against: the reference policy under c's scheduling order
    when that cell is there (`have`), else under the default order; None for the reference
    policy itself or when neither is there."""
    if c[0] == policy:
        return None
    for sched in dict.fromkeys((c[1], DEFAULT_SCHED)):
        if have((policy, sched)):
            return policy, sched
    return None


def versus(samples: dict[tuple, pd.Series], boot: Bootstrap, policy: str = REFERENCE_POLICY
           ) -> pd.DataFrame:
    """Each valid cell against the same group's `policy` cell (reference_of: under the same
    scheduling order, else the default order; `vs_sched` says which): percent of mean JCT
    and CI."""
    rows = []
    for key in samples:
        k = dict(zip(KEYS, key, strict=True))

        def have(c: Contestant, k: dict = k) -> bool:
            return cell_key(k, c) in samples

        ref = reference_of((k["policy"], k["sched"]), have, policy)
        if ref is None:
            continue
        pct, lo, hi = boot.rel(key, cell_key(k, ref), samples)
        rows.append({**k, "vs": policy, "vs_sched": ref[1], "pct": pct, "pct_lo": lo,
                     "pct_hi": hi, "paired": boot.paired.get(_group_key(key), False)})
    return pd.DataFrame(rows, columns=KEYS + ["vs", "vs_sched", "pct", "pct_lo", "pct_hi",
                                              "paired"])


def is_tie(lo: float, hi: float) -> bool:
    """A difference whose CI holds zero is a tie (no CI: not called a tie)."""
    return bool(not math.isnan(lo) and not math.isnan(hi) and lo <= 0 <= hi)


# --- per-turn latency, T8/T1 and its shape (seed section 3) ---------------------------------

FLAT_SPREAD = 1.5  # max/min of the per-turn means below this: "flat"
GROWTH_RATIO = 1.5  # Tlast/T1 at or above this: the latency grows with the turn
WALL_SLOPE = 2.0  # second half rising this many times faster than the first: "wall"
SPIKE_TAIL = 0.8  # spike: the tail (T3..) stays below this fraction of max(T1, T2)


def in_window_turns(turns: pd.DataFrame, jobs_w: pd.DataFrame, window: Window
                    ) -> pd.DataFrame:
    """ok turn rows of the jobs inside the window."""
    ok = turns[turns["status"] == "ok"]
    if window.is_all:
        return ok
    keep = jobs_w.loc[jobs_w["in_window"], KEYS + ["job_id"]]
    return ok.merge(keep, on=KEYS + ["job_id"])


def per_turn(turns_ok: pd.DataFrame, valid: pd.DataFrame) -> pd.DataFrame:
    """Per valid cell and turn: rows, mean and p90 latency, mean TTFT (ok turns only)."""
    g = turns_ok.groupby(KEYS + ["turn"], sort=True)
    out = pd.DataFrame({
        "n": g.size(),
        "mean_latency_s": g["latency_s"].mean(),
        "p90_latency_s": g["latency_s"].quantile(0.9),
        "mean_ttft_s": g["ttft_s"].mean(),
    }).reset_index()
    return out.merge(valid[KEYS], on=KEYS).astype({"turn": "int64"})


def classify_shape(means: np.ndarray) -> str:
    """Name the per-turn curve as the seed's section 3.5 does (thresholds above)."""
    m = np.asarray(means, dtype=float)
    if m.size < 3 or np.isnan(m).any() or m.min() <= 0:
        return "n/a"
    head = max(m[0], m[1])
    if int(np.argmax(m)) < 2 and m[2:].max() < SPIKE_TAIL * head and m[-1] / m[0] < 1.2:
        return "spike, flat tail"
    if m.max() / m.min() < FLAT_SPREAD:
        return "flat"
    if m[-1] / m[0] >= GROWTH_RATIO:
        mid = (m.size - 1) // 2
        first = (m[mid] - m[0]) / mid
        second = (m[-1] - m[mid]) / (m.size - 1 - mid)
        if second > WALL_SLOPE * max(first, 0.0) and second > 0:
            return "flat, then wall" if first * mid < 0.5 * m[0] else "accelerating"
        return "linear growth"
    return "mixed"


def turn_ratio(pt: pd.DataFrame) -> pd.DataFrame:
    """T<last>/T1 per cell, and the shape of the curve."""
    rows = []
    for key, g in pt.groupby(KEYS, sort=True):
        g = g.sort_values("turn")
        m = g["mean_latency_s"].to_numpy()
        t1 = m[0] if g["turn"].iloc[0] == 1 else math.nan
        rows.append({**dict(zip(KEYS, key, strict=True)), "n_turns": int(g["turn"].max()),
                     "t1_s": t1, "tlast_s": m[-1], "tlast_over_t1": m[-1] / t1,
                     "peak_turn": int(g["turn"].iloc[int(np.argmax(m))]),
                     "shape": classify_shape(m)})
    cols = KEYS + ["n_turns", "t1_s", "tlast_s", "tlast_over_t1", "peak_turn", "shape"]
    return pd.DataFrame(rows, columns=cols)


# --- winner per GPU x DRAM x JPS (seed section 2.3) ------------------------------------------

def _label(c: Contestant) -> str:
    from analysis.style import series_label

    return series_label(*c)


def _verdict(w: Contestant, r: Contestant, pct: float, lo: float, hi: float, tie: bool) -> str:
    ci = f"[{lo:+.1f}, {hi:+.1f}]" if not math.isnan(lo) else "[no CI]"
    if tie:
        return f"tie: {_label(w)} ≈ {_label(r)} ({pct:+.1f}% {ci})"
    return f"{_label(w)} {pct:+.1f}% vs {_label(r)} {ci}"


def _winner_row(gkey: tuple, g: pd.DataFrame, samples: dict[tuple, pd.Series],
                boot: Bootstrap, reference: str) -> dict:
    row: dict = dict(zip(GROUP, gkey, strict=True))

    def key(c: Contestant) -> tuple:
        return cell_key(row, c)

    valid = g[g["valid"]]
    ok = {c: samples[key(c)] for c in zip(valid["policy"], valid["sched"], strict=True)
          if key(c) in samples}
    ok = {c: s for c, s in ok.items() if s.size}
    bad = g[[c not in ok for c in zip(g["policy"], g["sched"], strict=True)]]
    ns = sorted({int(s.size) for s in ok.values()})
    seeds = set(valid["seed"].dropna())
    row.update(policies=len(g), valid=len(ok), n_jobs=",".join(map(str, ns)),
               comparable=len(ns) <= 1 and len(seeds) <= 1,
               invalid=", ".join(f"{_label(c)} ({st})" for c, st in
                                 zip(zip(bad["policy"], bad["sched"], strict=True),
                                     bad["state"], strict=True)))
    order = sorted(ok, key=lambda c: ok[c].mean())
    win = order[0] if order else None
    run = order[1] if len(order) > 1 else None
    row.update(winner=win[0] if win else None, winner_sched=win[1] if win else None,
               winner_jct_s=ok[win].mean() if win else math.nan,
               runner_up=run[0] if run else None, runner_up_sched=run[1] if run else None,
               runner_up_jct_s=ok[run].mean() if run else math.nan)
    pct = lo = hi = math.nan
    tie = False
    if win and run:
        pct, lo, hi = boot.rel(key(win), key(run), samples)
        tie = is_tie(lo, hi)
    row.update(pct_vs_runner_up=pct, ci_lo=lo, ci_hi=hi, tie=tie)
    rp = rlo = rhi = math.nan
    ref = reference_of(win, ok.__contains__, reference) if win else None
    if win and ref:
        rp, rlo, rhi = boot.rel(key(win), key(ref), samples)
    row.update({f"pct_vs_{reference}": rp, f"{reference}_ci_lo": rlo,
                f"{reference}_ci_hi": rhi, f"tie_vs_{reference}": is_tie(rlo, rhi),
                f"{reference}_sched": ref[1] if ref else None})
    if not win:
        row["verdict"] = "no valid cell"
    elif not run:
        row["verdict"] = f"only {_label(win)} valid"
    else:
        row["verdict"] = _verdict(win, run, pct, lo, hi, tie)
    if not row["comparable"]:
        row["verdict"] += " (N or seed differs: not comparable)"
    return row


def winners(cells: pd.DataFrame, samples: dict[tuple, pd.Series], boot: Bootstrap,
            reference: str = REFERENCE_POLICY) -> pd.DataFrame:
    """One row per sweep x GPU x DRAM x JPS: the contestant (policy, scheduling order) of
    lowest mean JCT, its margin to the runner-up and to the reference policy (reference_of),
    with bootstrap CIs; a margin whose CI holds 0 is a tie."""
    rows = [_winner_row(k, g, samples, boot, reference)
            for k, g in cells.groupby(GROUP, sort=True)]
    return pd.DataFrame(rows)
