"""orchestrator.stats against scipy (or a computation written out here where scipy has none)."""

from __future__ import annotations

import math
import random
import statistics
from itertools import combinations

import numpy as np
import pytest
from scipy import special
from scipy import stats as sp

from orchestrator import stats


def samples(seed: int, n: int, *, ties: bool = False) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    if ties:  # judge scores in generate mode: whole numbers 0-10
        x = [float(rng.randint(0, 10)) for _ in range(n)]
        y = [min(10.0, max(0.0, v + rng.choice([-2, -1, 0, 0, 1]))) for v in x]
    else:
        x = [rng.uniform(0, 10) for _ in range(n)]
        y = [v * 0.6 + rng.gauss(0, 2) for v in x]
    return x, y


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 11, 30, 99, 1000, 4.7, 25.3])
def test_t_distribution_matches_scipy(df: float) -> None:
    for q in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025, 0.0005):
        assert stats.t_ppf(q, df) == pytest.approx(sp.t.ppf(q, df), rel=1e-9, abs=1e-12)
    for t in (0.0, 0.3, 1.0, 2.5, -1.7, 12.0, 60.0):
        assert stats.t_sf(t, df) == pytest.approx(sp.t.sf(t, df), rel=1e-8, abs=1e-300)


def test_incomplete_beta_matches_scipy() -> None:
    for a, b, x in [(0.5, 0.5, 0.3), (2, 3, 0.9), (15, 0.5, 0.99), (0.5, 40, 0.01), (5, 5, 0.5)]:
        assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10)


@pytest.mark.parametrize("n", [2, 3, 4, 9, 40])
def test_mean_interval_is_scipys_t_interval(n: int) -> None:
    x, _ = samples(n, n)
    got = stats.mean_interval([*x, None])
    expected = sp.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert got.n == n and got.method == "t"
    assert got.estimate == pytest.approx(statistics.fmean(x), rel=1e-12)
    assert got.low == pytest.approx(expected.low, rel=1e-9)
    assert got.high == pytest.approx(expected.high, rel=1e-9)


def test_mean_interval_needs_two_values_and_says_how_many() -> None:
    assert stats.mean_interval([]).as_dict()["n"] == 0
    one = stats.mean_interval([3.0, None])
    assert (one.estimate, one.low, one.high, one.n) == (3.0, None, None, 1)
    assert not one.excludes(0.0)
    same = stats.mean_interval([2.0, 2.0, 2.0])
    assert (same.low, same.high) == (2.0, 2.0)


@pytest.mark.parametrize("n", [3, 4, 12, 60])
def test_paired_t_is_scipys_ttest_rel_on_shared_keys(n: int) -> None:
    x, y = samples(100 + n, n)
    a = {f"i{i}": v for i, v in enumerate(x)}
    b = {f"i{i}": v for i, v in enumerate(y)}
    a["only-a"], b["only-b"], a["unscored"], b["unscored"] = 1.0, 2.0, None, 4.0
    got = stats.paired_t(a, b)
    expected = sp.ttest_rel(y, x)
    ci = expected.confidence_interval(0.95)
    assert got.interval.n == n and got.df == n - 1
    assert got.t == pytest.approx(expected.statistic, rel=1e-9)
    assert got.p == pytest.approx(expected.pvalue, rel=1e-8)
    assert got.interval.low == pytest.approx(ci.low, rel=1e-9)
    assert got.interval.high == pytest.approx(ci.high, rel=1e-9)


def test_macro_mean_interval_is_welch_satterthwaite() -> None:
    strata = [samples(s, n)[0] for s, n in ((1, 4), (2, 7), (3, 3))]
    got = stats.macro_mean_interval([*strata, []])
    # Written out: Var(mean of K means) = sum(s_c^2/n_c)/K^2, Satterthwaite's df.
    k = len(strata)
    v = [np.var(s, ddof=1) / len(s) for s in strata]
    df = sum(v) ** 2 / sum(vc**2 / (len(s) - 1) for vc, s in zip(v, strata, strict=True))
    centre = np.mean([np.mean(s) for s in strata])
    half = sp.t.ppf(0.975, df) * math.sqrt(sum(v)) / k
    assert got.n == 14 and got.method == "welch-t"
    assert got.estimate == pytest.approx(centre, rel=1e-12)
    assert got.low == pytest.approx(centre - half, rel=1e-9)
    assert got.high == pytest.approx(centre + half, rel=1e-9)
    # Its test: t = centre / se with Satterthwaite's df, two-sided.
    test = stats.macro_t_test(strata)
    se = math.sqrt(sum(v)) / k
    assert test.t == pytest.approx(centre / se, rel=1e-9)
    assert test.df == pytest.approx(df, rel=1e-12)
    assert test.p == pytest.approx(2 * sp.t.sf(abs(centre / se), df), rel=1e-8)
    # One stratum alone: Welch's interval is the plain t interval.
    alone = stats.macro_mean_interval([strata[1]])
    plain = stats.mean_interval(strata[1])
    assert alone.low == pytest.approx(plain.low) and alone.high == pytest.approx(plain.high)
    assert stats.macro_mean_interval([[1.0, 2.0], [3.0]]).low is None


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [2, 5, 30, 301])
def test_rank_correlations_match_scipy(n: int, ties: bool) -> None:
    x, y = samples(7 * n, n, ties=ties)
    if len(set(x)) < 2 or len(set(y)) < 2:
        x[0], y[-1] = -1.0, -1.0
    assert stats.spearman(x, y) == pytest.approx(sp.spearmanr(x, y).statistic, abs=1e-12)
    assert stats.kendall_tau_b(x, y) == pytest.approx(
        sp.kendalltau(x, y, variant="b").statistic, abs=1e-12
    )
    assert stats.average_ranks(x) == pytest.approx(list(sp.rankdata(x)))


def test_constant_scores_have_no_correlation() -> None:
    assert stats.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert stats.kendall_tau_b([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None


@pytest.mark.parametrize("ties", [False, True])
def test_pair_counts_and_preference_agreement_count_every_pair(ties: bool) -> None:
    x, y = samples(11, 40, ties=ties)
    counts = stats.pair_counts(x, y)
    c = d = tx = ty = both = 0
    for i, j in combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        c += sx * sy > 0
        d += sx * sy < 0
        tx += sx == 0
        ty += sy == 0
        both += sx == 0 and sy == 0
    assert (counts.concordant, counts.discordant) == (c, d)
    assert (counts.tied_x, counts.tied_y, counts.tied_both) == (tx, ty, both)
    assert counts.pairs == 40 * 39 // 2
    assert stats.preference_agreement(x, y) == pytest.approx(c / (c + d))


def test_holm_matches_the_step_down_written_out() -> None:
    rng = random.Random(5)
    p: list[float | None] = [rng.random() ** 3 for _ in range(9)] + [None, 0.5]
    got = stats.holm(p)
    real = [(v, i) for i, v in enumerate(p) if v is not None]
    m = len(real)
    order = sorted(real)
    expected: dict[int, float] = {}
    for k, (_, i) in enumerate(order):
        expected[i] = min(1.0, max((m - j) * order[j][0] for j in range(k + 1)))
    assert got[9] is None
    for i, value in expected.items():
        assert got[i] == pytest.approx(value)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def _bca_written_out(theta: float, reps: list[float], jack: list[float]) -> tuple[float, float]:
    reps_a = np.asarray(reps)
    share = (np.sum(reps_a < theta) + np.sum(reps_a <= theta)) / (2 * len(reps))
    z0 = special.ndtri(share)
    u = (len(jack) - 1) * (np.mean(jack) - np.asarray(jack))
    a = np.sum(u**3) / len(jack) ** 3 / (6 * (np.sum(u**2) / len(jack) ** 2) ** 1.5)
    out = []
    for z in (special.ndtri(0.025), special.ndtri(0.975)):
        out.append(np.percentile(reps_a, 100 * special.ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return out[0], out[1]


def test_bca_bounds_follow_efron_and_tibshirani() -> None:
    rng = random.Random(3)
    data = [rng.expovariate(1.0) for _ in range(15)]
    reps = [statistics.fmean(rng.choices(data, k=15)) for _ in range(999)]
    jack = [statistics.fmean(data[:i] + data[i + 1 :]) for i in range(15)]
    got = stats.bca_bounds(statistics.fmean(data), reps, jack)
    assert got is not None
    assert got == pytest.approx(_bca_written_out(statistics.fmean(data), reps, jack), rel=1e-9)


def test_bca_interval_agrees_with_scipys_bootstrap() -> None:
    x, y = samples(21, 50)
    ours = stats.bca_interval(
        list(zip(x, y, strict=True)),
        lambda pairs: stats.spearman([p[0] for p in pairs], [p[1] for p in pairs]),
        resamples=6000,
        seed=1,
    )
    theirs = sp.bootstrap(
        (x, y),
        lambda a, b: sp.spearmanr(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=6000,
        method="BCa",
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert ours.n == 50 and ours.method == "bca"
    assert ours.estimate == pytest.approx(sp.spearmanr(x, y).statistic)
    width = theirs.high - theirs.low
    # Different random draws: the bounds agree to a few percent of the width.
    assert ours.low == pytest.approx(theirs.low, abs=0.08 * width)
    assert ours.high == pytest.approx(theirs.high, abs=0.08 * width)


def test_bca_interval_is_seeded_and_undefined_when_too_small() -> None:
    data = [1.0, 4.0, 2.0, 8.0, 5.0, 7.0]
    first = stats.bca_interval(data, statistics.fmean, resamples=500, seed=4)
    assert first == stats.bca_interval(data, statistics.fmean, resamples=500, seed=4)
    assert first.low is not None and first.high is not None
    assert first.low < statistics.fmean(data) < first.high
    assert stats.bca_interval([1.0], statistics.fmean).low is None


def test_rank_intervals_follow_holm_adjusted_paired_tests() -> None:
    rng = random.Random(8)
    items = [f"item-{i}" for i in range(25)]
    shift = {"strong": 2.0, "good": 1.9, "weak": 0.0, "noisy": 0.5}
    base = {i: rng.uniform(2, 8) for i in items}
    scores = {
        m: {i: base[i] + s + rng.gauss(0, 0.4 if m != "noisy" else 3.0) for i in items}
        for m, s in shift.items()
    }
    got = stats.rank_intervals(scores)
    # Written out with scipy: every pair's ttest_rel, Holm over the 6 pairs.
    pairs = list(combinations(scores, 2))
    p = [
        sp.ttest_rel([scores[b][i] for i in items], [scores[a][i] for i in items]) for a, b in pairs
    ]
    order = np.argsort([r.pvalue for r in p])
    adjusted = np.empty(len(p))
    running = 0.0
    for k, idx in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[idx].pvalue))
        adjusted[idx] = running
    better = dict.fromkeys(scores, 0)
    worse = dict.fromkeys(scores, 0)
    for (a, b), r, adj in zip(pairs, p, adjusted, strict=True):
        if adj < 0.05:
            win, lose = (b, a) if r.statistic > 0 else (a, b)
            better[lose] += 1
            worse[win] += 1
    means = {m: statistics.fmean(v.values()) for m, v in scores.items()}
    ranking = sorted(scores, key=lambda m: -means[m])
    for m in scores:
        assert (got[m].low, got[m].high) == (1 + better[m], 4 - worse[m])
        assert got[m].rank == ranking.index(m) + 1
    assert got["strong"].low == 1 and got["good"].low == 1  # not told apart
    assert got["weak"].high == 4
