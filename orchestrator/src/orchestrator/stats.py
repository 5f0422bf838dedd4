"""The statistics every summary, compare, agreement and leaderboard uses: one place, pure Python.

Everything here is a well-defined textbook formula over plain floats (or item key -> float maps),
so the orchestrator needs no numpy/scipy; tests/orchestrator/test_stats.py checks each one against
scipy (or, where scipy has none, a computation written out in the test).

- ``mean_interval``: the mean and its Student-t interval (n shown; none below 2 values).
- ``paired_differences`` / ``paired_t``: ``b - a`` on the keys both maps scored, the t interval of
  the mean difference and its two-sided p-value (scipy.stats.ttest_rel).
- ``macro_mean_interval``: the unweighted mean over strata of each stratum's mean (a table's
  Average), with a Welch-Satterthwaite t interval.
- ``bca_interval``: a BCa bootstrap interval of any statistic of one sample (seeded, as
  scipy.stats.bootstrap(method="BCa") computes it).
- ``spearman``, ``kendall_tau_b`` (Knight's O(n log n) algorithm), ``pair_counts`` /
  ``preference_agreement`` (of the pairs both orderings rank strictly, the share ranked alike).
- ``holm``: Holm's step-down adjustment of p-values.
- ``rank_intervals``: each model's rank interval from Holm-adjusted paired t-tests against every
  other model on shared items (1 + models significantly better .. N - models significantly worse).

Why t intervals for means and paired differences: with 4 items a category, a percentile bootstrap
draws from at most 35 distinct resamples and its interval is too narrow (it ignores the n-1 in the
variance and the t tail); the t interval is exact for normal differences and close for bounded
judge scores. BCa is used where no closed form exists (correlations, agreement, spreads).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

LEVEL = 0.95
_NORMAL = statistics.NormalDist()


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its interval. ``low``/``high`` are None where no interval exists (too few
    values, a constant sample for BCa): ``n`` always says how many values it rests on."""

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    method: str
    level: float = LEVEL

    @property
    def defined(self) -> bool:
        return self.low is not None and self.high is not None

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of ``value``."""
        if self.low is None or self.high is None:
            return False
        return self.low > value or self.high < value

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "estimate": r(self.estimate),
            "low": r(self.low),
            "high": r(self.high),
            "n": self.n,
            "method": self.method,
            "level": self.level,
        }


@dataclass(frozen=True, slots=True)
class TTest:
    """A paired (one-sample) t-test of mean 0 with its interval; ``p`` None below 2 values."""

    interval: Interval
    t: float | None
    df: float
    p: float | None


# ---- Student's t distribution -------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on the CDF to double precision)."""
    if not 0.0 < q < 1.0:
        raise ValueError("q must be in (0, 1)")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    target = 1.0 - q  # upper tail
    low, high = 0.0, 1.0
    while t_sf(high, df) > target:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_sf(mid, df) > target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * max(1.0, high):
            break
    return 0.5 * (low + high)


# ---- means and paired differences -----------------------------------------------------------


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def t_test(values: Sequence[float | None], level: float = LEVEL) -> TTest:
    """Mean of ``values`` (None dropped), its t interval, and the two-sided p-value of mean 0."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return TTest(Interval(None, None, None, 0, "t", level), None, 0, None)
    mean = math.fsum(xs) / n
    if n < 2:
        return TTest(Interval(mean, None, None, n, "t", level), None, 0, None)
    df = n - 1
    se = statistics.stdev(xs) / math.sqrt(n)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return TTest(Interval(mean, mean, mean, n, "t", level), t, df, p)
    half = t_ppf(0.5 + level / 2.0, df) * se
    t = mean / se
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    return TTest(Interval(mean, mean - half, mean + half, n, "t", level), t, df, p)


def mean_interval(values: Sequence[float | None], level: float = LEVEL) -> Interval:
    """The mean of ``values`` (None dropped) with its Student-t interval."""
    return t_test(values, level).interval


def paired_differences(a: Mapping[K, float | None], b: Mapping[K, float | None]) -> dict[K, float]:
    """``b[k] - a[k]`` for every key both maps hold a number for, in ``a``'s order."""
    out: dict[K, float] = {}
    for key, x in a.items():
        y = b.get(key)
        if x is not None and y is not None:
            out[key] = y - x
    return out


def paired_t(
    a: Mapping[K, float | None], b: Mapping[K, float | None], level: float = LEVEL
) -> TTest:
    """Paired t-test of ``b - a`` on shared keys (scipy.stats.ttest_rel(b, a))."""
    return t_test(list(paired_differences(a, b).values()), level)


def macro_t_test(strata: Sequence[Sequence[float]], level: float = LEVEL) -> TTest:
    """The unweighted mean of the strata means, its Welch-Satterthwaite t interval, and the
    two-sided p-value of mean 0 (t = estimate / se with Satterthwaite's df).

    Var = sum(s_c^2 / n_c) / K^2; df = (sum v_c)^2 / sum(v_c^2 / (n_c - 1)). Empty strata are
    left out (as the Average leaves out empty rows); a stratum of one value has no variance, so
    then there is no interval. ``n`` counts the values in all strata."""
    kept = [list(s) for s in strata if s]
    n = sum(len(s) for s in kept)
    if not kept:
        return TTest(Interval(None, None, None, 0, "welch-t", level), None, 0, None)
    estimate = math.fsum(math.fsum(s) / len(s) for s in kept) / len(kept)
    if any(len(s) < 2 for s in kept):
        return TTest(Interval(estimate, None, None, n, "welch-t", level), None, 0, None)
    parts = [statistics.variance(s) / len(s) for s in kept]
    total = math.fsum(parts)
    if total == 0.0:
        p = 1.0 if estimate == 0.0 else 0.0
        t = 0.0 if estimate == 0.0 else math.copysign(math.inf, estimate)
        return TTest(Interval(estimate, estimate, estimate, n, "welch-t", level), t, n - 1, p)
    df = total**2 / math.fsum(v * v / (len(s) - 1) for v, s in zip(parts, kept, strict=True))
    se = math.sqrt(total) / len(kept)
    half = t_ppf(0.5 + level / 2.0, df) * se
    t = estimate / se
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    interval = Interval(estimate, estimate - half, estimate + half, n, "welch-t", level)
    return TTest(interval, t, df, p)


def macro_mean_interval(strata: Sequence[Sequence[float]], level: float = LEVEL) -> Interval:
    """The unweighted mean of the strata means, with a Welch-Satterthwaite t interval
    (``macro_t_test``)."""
    return macro_t_test(strata, level).interval


# ---- bootstrap --------------------------------------------------------------------------------


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default percentile)."""
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bca_bounds(
    theta_hat: float,
    replicates: Sequence[float],
    jackknife: Sequence[float],
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """BCa interval from bootstrap replicates and leave-one-out values (Efron and Tibshirani
    1993, ch. 14; as scipy.stats.bootstrap computes it). None where it is undefined: every
    replicate on one side of the estimate."""
    reps = sorted(replicates)
    b = len(reps)
    if b == 0 or not jackknife:
        return None
    if reps[0] == reps[-1]:
        return (reps[0], reps[0])
    below = sum(1 for r in reps if r < theta_hat)
    at_or_below = sum(1 for r in reps if r <= theta_hat)
    share = (below + at_or_below) / (2.0 * b)
    if not 0.0 < share < 1.0:
        return None
    z0 = _NORMAL.inv_cdf(share)
    n = len(jackknife)
    mean_j = math.fsum(jackknife) / n
    u = [(n - 1) * (mean_j - v) for v in jackknife]
    den = math.fsum(x * x for x in u) / n**2
    a = 0.0 if den == 0.0 else (math.fsum(x**3 for x in u) / n**3) / (6.0 * den**1.5)
    alpha = (1.0 - level) / 2.0
    bounds = []
    for z in (_NORMAL.inv_cdf(alpha), -_NORMAL.inv_cdf(alpha)):
        num = z0 + z
        bounds.append(_quantile(reps, _NORMAL.cdf(z0 + num / (1.0 - a * num))))
    return (bounds[0], bounds[1])


def bca_interval(
    data: Sequence[T],
    statistic: Callable[[Sequence[T]], float | None],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """The statistic of ``data`` with a seeded BCa bootstrap interval (items resampled with
    replacement; pass pairs for paired statistics). A resample where the statistic is undefined
    (None, e.g. a constant resample for a correlation) is dropped; too few left: no interval."""
    found = bca_intervals(
        data, lambda d: {"x": statistic(d)}, ("x",), resamples=resamples, seed=seed, level=level
    )
    return found["x"]


def bca_intervals(
    data: Sequence[T],
    statistics_of: Callable[[Sequence[T]], Mapping[str, float | None]],
    names: Sequence[str],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """BCa intervals of several statistics computed together on the same resamples (one pass
    of an expensive shared step, e.g. counting pairs, serves them all)."""
    n = len(data)
    theta = statistics_of(data) if n else dict.fromkeys(names)
    undefined = {name: Interval(theta.get(name), None, None, n, "bca", level) for name in names}
    if n < 2:
        return undefined
    rng = random.Random(seed)
    replicates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        values = statistics_of(rng.choices(data, k=n))
        for name in names:
            if (v := values.get(name)) is not None:
                replicates[name].append(v)
    jack: dict[str, list[float | None]] = {name: [] for name in names}
    for i in range(n):
        values = statistics_of([d for j, d in enumerate(data) if j != i])
        for name in names:
            jack[name].append(values.get(name))
    found = {}
    for name in names:
        estimate = theta.get(name)
        reps, leave_one_out = replicates[name], jack[name]
        if estimate is None or len(reps) < resamples // 2 or None in leave_one_out:
            found[name] = undefined[name]
            continue
        bounds = bca_bounds(estimate, reps, [v for v in leave_one_out if v is not None], level)
        found[name] = (
            undefined[name]
            if bounds is None
            else Interval(estimate, bounds[0], bounds[1], n, "bca", level)
        )
    return found


# ---- rank correlation and agreement ---------------------------------------------------------


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given the mean of their ranks (scipy.stats.rankdata 'average')."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None below 2 pairs or when either side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    n = len(x)
    if n < 2:
        return None
    mx, my = math.fsum(x) / n, math.fsum(y) / n
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    if sxx == 0.0 or syy == 0.0:
        return None
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr)."""
    return pearson(average_ranks(x), average_ranks(y))


@dataclass(frozen=True, slots=True)
class PairCounts:
    """How the n(n-1)/2 pairs of items are ordered by two score lists."""

    pairs: int
    concordant: int
    discordant: int
    tied_x: int  # tied in x (including tied in both)
    tied_y: int
    tied_both: int

    @property
    def tau_b(self) -> float | None:
        nx, ny = self.pairs - self.tied_x, self.pairs - self.tied_y
        if nx <= 0 or ny <= 0:
            return None
        return (self.concordant - self.discordant) / math.sqrt(nx) / math.sqrt(ny)

    @property
    def agreement(self) -> float | None:
        """Of the pairs both lists order strictly, the share they order the same way."""
        strict = self.concordant + self.discordant
        return None if strict == 0 else self.concordant / strict


def _tied_pairs(sorted_values: Sequence[Any]) -> int:
    total, run = 0, 1
    for i in range(1, len(sorted_values) + 1):
        if i < len(sorted_values) and sorted_values[i] == sorted_values[i - 1]:
            run += 1
        else:
            total += run * (run - 1) // 2
            run = 1
    return total


def pair_counts(x: Sequence[float], y: Sequence[float]) -> PairCounts:
    """Concordant, discordant and tied pairs in O(n log n) (Knight 1966, as scipy does)."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    n = len(x)
    points = sorted(zip(x, y, strict=True))
    ys = sorted(set(y))
    rank = {v: i + 1 for i, v in enumerate(ys)}
    tree = [0] * (len(ys) + 1)
    seen = 0
    discordant = 0
    i = 0
    while i < n:  # one group of equal x at a time: pairs within it are x-ties, not counted here
        j = i
        while j < n and points[j][0] == points[i][0]:
            j += 1
        for k in range(i, j):
            r = rank[points[k][1]]
            at_most = 0
            while r > 0:
                at_most += tree[r]
                r -= r & -r
            discordant += seen - at_most  # earlier (smaller x) points with a larger y
        for k in range(i, j):
            r = rank[points[k][1]]
            while r <= len(ys):
                tree[r] += 1
                r += r & -r
        seen += j - i
        i = j
    total = n * (n - 1) // 2
    tied_x = _tied_pairs([p[0] for p in points])
    tied_y = _tied_pairs(sorted(y))
    tied_both = _tied_pairs(points)
    concordant = total - tied_x - tied_y + tied_both - discordant
    return PairCounts(total, concordant, discordant, tied_x, tied_y, tied_both)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (scipy.stats.kendalltau); None when either side is constant."""
    return pair_counts(x, y).tau_b


def preference_agreement(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Of the item pairs both score lists order strictly, the share ordered the same way."""
    return pair_counts(x, y).agreement


# ---- many tests at once -------------------------------------------------------------------------


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input's order (None stays None, not counted)."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for position, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - position) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True, slots=True)
class RankInterval:
    rank: int  # by mean, 1 = best
    low: int
    high: int
    better: list[str]  # models significantly better (Holm-adjusted)
    worse: list[str]


PairTest = Callable[[Mapping[Any, float | None], Mapping[Any, float | None]], TTest]


def rank_intervals(
    scores: Mapping[str, Mapping[Any, float | None]],
    *,
    order: Sequence[str] | None = None,
    alpha: float = 1.0 - LEVEL,
    test: PairTest = paired_t,
) -> dict[str, RankInterval]:
    """Each model's rank and rank interval: [1 + #models significantly better, N - #models
    significantly worse], from a test of ``b - a`` on the items each pair shares (default the
    paired t-test; a leaderboard ranked by a mean of category means passes a Welch test by
    category), Holm-adjusted over all N(N-1)/2 pairs. ``order`` is the ranking (best first);
    default: by mean item score."""
    names = list(scores)
    if order is None:
        means = {m: mean_interval(list(scores[m].values())).estimate for m in names}
        order = sorted(names, key=lambda m: (means[m] is None, -(means[m] or 0.0)))
    pairs = list(combinations(names, 2))
    tests = [test(scores[a], scores[b]) for a, b in pairs]
    adjusted = holm([t.p for t in tests])
    better: dict[str, list[str]] = {m: [] for m in names}
    worse: dict[str, list[str]] = {m: [] for m in names}
    for (a, b), result, p in zip(pairs, tests, adjusted, strict=True):
        estimate = result.interval.estimate
        if p is None or p >= alpha or not estimate:
            continue
        winner, loser = (b, a) if estimate > 0 else (a, b)
        better[loser].append(winner)
        worse[winner].append(loser)
    n = len(names)
    return {
        m: RankInterval(
            rank=list(order).index(m) + 1,
            low=1 + len(better[m]),
            high=n - len(worse[m]),
            better=better[m],
            worse=worse[m],
        )
        for m in names
    }
