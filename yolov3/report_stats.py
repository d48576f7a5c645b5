"""The ablation report's statistics: Student's t in closed form, paired differences over seeds, per-arm summaries.

Seeds pair runs: the baseline's seed k run is compared with each arm's seed k run, and the interval of the mean
difference is mean ± t_{(1+level)/2, n-1} · sd / sqrt(n). Two runs trained in different numeric precision (fp32 vs
bf16, as ``train.amp: auto`` gives on different CPUs) are never paired: that seed is left out and named. The
paired t-test's two-sided p-values of a study's comparisons (every arm against the baseline, one metric) are
Holm-corrected together (:func:`holm_adjust`): a study that compares 8 arms has 8 chances of a false positive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from yolov3.report_load import METRICS, RunResult, noobj_obj_ratio

CONFIDENCE = 0.95  # two-sided level of the paired interval
SUMMARY_METRICS = METRICS + ("train_obj", "train_noobj", "noobj_obj_ratio", "wall_time_s")


# --------------------------------------------------------------------------------------------------------------------
# Student t and paired differences
# --------------------------------------------------------------------------------------------------------------------
def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df`` >= 1, in closed form (Abramowitz & Stegun 26.7.3-4).

    With theta = atan(|t| / sqrt(df)) and c = cos^2(theta), A = P(|T| < |t|) is
      odd df:  (2/pi) [theta + sin(theta) cos(theta) (1 + 2/3 c + 2*4/(3*5) c^2 + ... up to (df-3)/2 terms)]
               (just 2 theta / pi for df = 1)
      even df: sin(theta) [1 + 1/2 c + 1*3/(2*4) c^2 + ... up to (df-2)/2 terms]
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = (1.0, 1.0) if df > 1 else (0.0, 0.0)
        for k in range(1, (df - 3) // 2 + 1):
            term *= (2 * k) / (2 * k + 1) * c2
            series += term
        inside = (2 / math.pi) * (theta + math.sin(theta) * math.cos(theta) * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, (df - 2) // 2 + 1):
            term *= (2 * k - 1) / (2 * k) * c2
            series += term
        inside = math.sin(theta) * series
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (e.g. t_{0.975, 2} = 4.303), by bisection on the CDF."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    high = 1.0
    while student_t_cdf(high, df) < p:  # bracket the root; the CDF is increasing
        high *= 2
    low = 0.0
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def mean_sd(values: Sequence[float]) -> tuple:
    """(mean, sample standard deviation with n-1); sd is nan for fewer than 2 values, both nan for none."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
    return float(values.mean()), sd


@dataclass
class PairedDifference:
    """Variant minus baseline over the seeds both finished; interval = mean ± t_{(1+level)/2, n-1} sd / sqrt(n)."""

    n: int
    seeds: list
    mean: float
    sd: float
    half_width: Optional[float]  # None when n < 2 (undefined)
    low: Optional[float]
    high: Optional[float]
    excludes_zero: Optional[bool]
    p_value: Optional[float] = None  # two-sided paired t-test; None when n < 2
    p_holm: Optional[float] = None  # Holm-adjusted over the study's comparisons of this metric (summarize_arms)
    unpaired_precision: list = field(default_factory=list)  # seeds both finished but in different precision


def paired_difference(baseline_by_seed: dict, variant_by_seed: dict, level: float = CONFIDENCE,
                      baseline_numeric: Optional[dict] = None, variant_numeric: Optional[dict] = None
                      ) -> PairedDifference:
    """Paired comparison over the seeds present (and finite) in both {seed: value} mappings.

    ``*_numeric``: {seed: (configured train.amp, precision it ran in)} of the runs; a seed whose two runs were
    configured alike but ran in different precisions (``auto`` on two kinds of CPU) is left out
    (``unpaired_precision``). Arms that set different precisions on purpose (a precision study) are paired. The p-value is the paired t-test's, two-sided; with every difference equal
    (sd 0) it is 0 for a non-zero mean and 1 for a zero one."""
    seeds = sorted(s for s in variant_by_seed if s in baseline_by_seed
                   and np.isfinite(variant_by_seed[s]) and np.isfinite(baseline_by_seed[s]))
    unpaired = []
    if baseline_numeric is not None and variant_numeric is not None:
        unpaired = [s for s in seeds if s in baseline_numeric and s in variant_numeric
                    and baseline_numeric[s][0] == variant_numeric[s][0] and baseline_numeric[s][1]
                    and variant_numeric[s][1] and baseline_numeric[s][1] != variant_numeric[s][1]]
        seeds = [s for s in seeds if s not in unpaired]
    diffs = [variant_by_seed[s] - baseline_by_seed[s] for s in seeds]
    mean, sd = mean_sd(diffs)
    if len(diffs) < 2:
        return PairedDifference(len(diffs), seeds, mean, sd, None, None, None, None, unpaired_precision=unpaired)
    n = len(diffs)
    half = t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    if sd > 0:
        p_value = 2.0 * (1.0 - student_t_cdf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    else:
        p_value = 0.0 if mean != 0 else 1.0
    return PairedDifference(n, seeds, mean, sd, half, mean - half, mean + half,
                            bool(mean - half > 0 or mean + half < 0), p_value=min(max(p_value, 0.0), 1.0),
                            unpaired_precision=unpaired)


def holm_adjust(p_values: dict) -> dict:
    """Holm's step-down adjustment of {name: p} (None entries are left out): the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < alpha controls the chance of any
    false positive among the m comparisons at alpha (Holm 1979)."""
    named = sorted(((p, name) for name, p in p_values.items() if p is not None), key=lambda item: item[0])
    m = len(named)
    adjusted, running = {}, 0.0
    for rank, (p, name) in enumerate(named):  # rank 0-based: factor m - rank
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


# --------------------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class ArmSummary:
    """One arm (variant + grid point) over its finished seeds."""

    arm: str
    variant: str
    grid: dict
    seeds: list  # finished seeds
    n: int
    values: dict  # metric -> {seed: value}
    mean: dict  # metric -> mean over seeds
    sd: dict  # metric -> sample sd (nan for n < 2)
    vs_baseline: dict  # metric -> PairedDifference (absent for the baseline itself)
    statuses: dict = field(default_factory=dict)  # run status -> count over the arm's planned runs
    numeric: dict = field(default_factory=dict)  # seed -> (configured train.amp, the precision its run trained in)


def summarize_arms(runs: Sequence[RunResult], baseline: Optional[str]) -> list:
    """Mean ± sd per arm over finished runs, and paired differences to the baseline arm, in planned order."""
    order: list = []
    by_arm: dict = {}
    statuses: dict = {}
    for run in runs:
        if run.arm not in by_arm:
            order.append(run.arm)
            by_arm[run.arm] = []
            statuses[run.arm] = {}
        statuses[run.arm][run.status] = statuses[run.arm].get(run.status, 0) + 1
        if run.status == "finished":
            by_arm[run.arm].append(run)
    arms = []
    for arm in order:
        finished = by_arm[arm]
        values = {m: {r.seed: (noobj_obj_ratio(r.metrics) if m == "noobj_obj_ratio" else r.metrics.get(m, float("nan")))
                      for r in finished} for m in SUMMARY_METRICS}
        stats = {m: mean_sd(list(values[m].values())) for m in SUMMARY_METRICS}
        first = next(r for r in runs if r.arm == arm)
        arms.append(ArmSummary(arm=arm, variant=first.variant, grid=dict(first.grid),
                               seeds=sorted(r.seed for r in finished), n=len(finished), values=values,
                               mean={m: s[0] for m, s in stats.items()}, sd={m: s[1] for m, s in stats.items()},
                               vs_baseline={}, statuses=statuses[arm],
                               numeric={r.seed: (((r.config or {}).get("train") or {}).get("amp"), r.numeric)
                                        for r in finished}))
    base = next((a for a in arms if a.arm == baseline), None)
    if base is not None:
        for arm in arms:
            if arm is not base:
                arm.vs_baseline = {m: paired_difference(base.values[m], arm.values[m],
                                                        baseline_numeric=base.numeric, variant_numeric=arm.numeric)
                                   for m in METRICS}
        for metric in METRICS:  # one family per metric: every arm against the baseline
            adjusted = holm_adjust({a.arm: a.vs_baseline[metric].p_value for a in arms if a.vs_baseline})
            for arm in arms:
                if arm.vs_baseline:
                    arm.vs_baseline[metric].p_holm = adjusted.get(arm.arm)
    return arms


def common_objectness_losses(logits: np.ndarray, positive: bool, scorer: str) -> np.ndarray:
    """Per-sample loss of objectness logits under one common function, float64: ``bce`` or ``focal2`` (focal
    loss, gamma 2, no alpha); positives against target 1, negatives against 0. In log space, so the far tail keeps
    its value (a negative at logit -20 scores 2.1e-9)."""
    z = -np.asarray(logits, dtype=float) if positive else np.asarray(logits, dtype=float)  # loss = softplus(z)
    loss = np.logaddexp(0.0, z)
    if scorer == "focal2":
        loss = loss * np.exp(-2.0 * np.logaddexp(0.0, -z))  # (1 - p_t)^2 = sigmoid(z)^2
    elif scorer != "bce":
        raise ValueError(f"common_objectness_losses: scorer {scorer!r}; choose bce or focal2")
    return loss
