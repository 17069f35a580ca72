"""The statistics of bench/compare.py: intervals over seeds, paired tests, the family's control, the verdict rule.

    interval(samples, statistic)  95% percentile-bootstrap interval (scipy.stats.bootstrap, 10,000 resamples,
                                  a fixed seed: the report is a pure function of the runs)
    mean, iqm, improvement        the statistics it is taken of: mean, interquartile mean (the mean of the middle
                                  half), rliable's probability of improvement P(X > Y) (Agarwal et al. 2021)
    pair_summary(xs, ys)          X against Y on paired seeds: the mean difference with its bootstrap and paired t
                                  intervals, the paired t-test's p, the exact Wilcoxon signed-rank p, P(X > Y)
    t_test(diff)                  the paired t-test alone (compare.py's leave-one-seed-out redoes it per seed)
    control_family(summary)       Holm's adjustment over every paired comparison the report gives, then RULE

How it connects: compare.py reads the runs and calls these; tests/test_compare.py checks them by hand and checks
that the committed results.json's verdicts follow from its own numbers by RULE.
"""

import statistics

import numpy as np
from scipy.stats import bootstrap, trim_mean, ttest_1samp, wilcoxon

RESAMPLES, STAT_SEED = 10_000, 0
MIN_SEEDS = 5  # below this a percentile bootstrap's interval is too narrow to call anything
ALPHA = 0.05  # the family's error rate: Holm keeps the chance of ANY false call among the report's below it
RULE = ("A difference X - Y is called (X > Y or X < Y) where its paired t-test's p, Holm-adjusted over the family of "
        "every paired comparison in the report (each pair x environment x metric), is below 0.05: that adjusted p "
        "decides, and it alone keeps the chance of any false call in the family under 5%. The 95% intervals beside it "
        "(percentile bootstrap, t) are each comparison's own, not adjusted for the family: they give the size of a "
        "difference. Both must also exclude 0 on the call's side, which adds little: for the t interval that follows "
        "from any Holm p below 0.05 (the unadjusted p is no larger), and the bootstrap interval can only withhold a "
        "call, never make one. Else a difference is 'not measurable' with these seeds. The exact Wilcoxon signed-rank "
        "p (zeros ranked then dropped, as Pratt; ties midranked; with zeros or ties every one of the 2^n sign flips "
        "enumerated) and its Holm adjustment are given beside, as a check that assumes no normality.")


def interval(samples, statistic, paired=False):
    """The 95% percentile-bootstrap interval of statistic(*samples)."""
    if all(len(set(s)) == 1 for s in samples):  # no spread: every resample gives the same value
        value = float(statistic(*[np.array(s) for s in samples]))
        return [value, value]
    result = bootstrap([np.array(s, dtype=float) for s in samples], statistic, paired=paired, vectorized=True,
                       n_resamples=RESAMPLES, confidence_level=0.95, method="percentile",
                       random_state=np.random.default_rng(STAT_SEED))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def mean(x, axis=-1):
    return np.mean(x, axis=axis)


def iqm(x, axis=-1):
    return trim_mean(x, 0.25, axis=axis)


def improvement(x, y, axis=-1):
    """rliable's probability of improvement P(X > Y): over all pairs of runs, 1 where x > y, 1/2 where equal."""
    x, y = np.expand_dims(x, -1), np.expand_dims(y, -2)
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-1, -2))


def paired_tests(diff):
    """The paired t-test's p and 95% interval (t_test), and the exact two-sided Wilcoxon signed-rank p, of the
    differences. Wilcoxon: zero differences take part in the ranking, then drop out (zero_method "pratt"); ties get
    midranks; with zeros or ties scipy enumerates all 2^n sign flips (method "auto" at n <= 13), so the p is exact
    either way."""
    d = np.array(diff, dtype=float)
    wilcoxon_p = 1.0 if np.all(d == 0) else float(wilcoxon(d, zero_method="pratt").pvalue)
    return {**t_test(d), "wilcoxon_p": wilcoxon_p}


def t_test(diff):
    """The paired t-test's p and 95% interval of the differences (alone: compare.py's leave-one-seed-out redoes it
    for every comparison once per seed, where the exact Wilcoxon's enumerations would take half a minute)."""
    d = np.array(diff, dtype=float)
    if np.all(d == d[0]):  # no spread: t is undefined; p 1 for no difference at all, 0 for one constant difference
        return {"t_ci": [float(d[0])] * 2, "t_p": float(d[0] == 0)}
    t = ttest_1samp(d, 0.0)
    ci = t.confidence_interval(0.95)
    return {"t_ci": [float(ci.low), float(ci.high)], "t_p": float(t.pvalue)}


def holm(pvalues):
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept non-decreasing, at
    most 1. Calling only where the adjusted p < ALPHA keeps the chance of any false call in the family below it."""
    order, out, running = sorted(range(len(pvalues)), key=lambda i: pvalues[i]), [0.0] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[i]))
        out[i] = running
    return out


def verdict(v, seeds):
    """RULE, for one comparison's numbers v (diff_ci, t_ci, t_p_holm)."""
    if seeds < MIN_SEEDS:
        return "too few seeds"
    for side, sign in (("X > Y", 1), ("X < Y", -1)):
        if v["t_p_holm"] < ALPHA and all(sign * lo > 0 and sign * hi > 0 for lo, hi in (v["diff_ci"], v["t_ci"])):
            return side
    return "not measurable"


def pair_summary(x_runs, y_runs, metrics):
    """X against Y on the seeds both ran (runs in seed order): per metric the paired differences' mean, bootstrap
    and t intervals, t-test and Wilcoxon p, and P(X > Y) with its interval. Adjustment and verdict: control_family."""
    out = {"seeds": len(x_runs)}
    for m in metrics:
        x, y = [r[m] for r in x_runs], [r[m] for r in y_runs]
        diff = [a - b for a, b in zip(x, y)]
        out[m] = {"diff": statistics.fmean(diff), "diff_ci": interval([diff], mean), **paired_tests(diff),
                  "p_improvement": float(improvement(x, y)), "p_improvement_ci": interval([x, y], improvement)}
    return out


def control_family(pairs, metrics):
    """Holm over the family (every comparison of `pairs` x `metrics` with >= MIN_SEEDS seeds), for the t-test (which
    decides) and for Wilcoxon (beside it); then every comparison's verdict by RULE. Returns the family's size."""
    family = [p[m] for p in pairs if p["seeds"] >= MIN_SEEDS for m in metrics]
    for test in ("t_p", "wilcoxon_p"):
        for v, adjusted in zip(family, holm([v[test] for v in family])):
            v[f"{test}_holm"] = adjusted
    for p in pairs:
        for m in metrics:
            p[m]["verdict"] = verdict(p[m], p["seeds"])
    return len(family)
