"""Is sampler B as accurate as sampler A? The statistics common/sampler_compare.py reports.

Both samplers start from the same x_T for each sample, so their right/wrong outcomes come in pairs and
only the pairs where they disagree say anything about the gap (A. Agresti and Y. Min, "Simple improved
confidence intervals for comparing matched proportions", Statistics in Medicine 24, 2005).
"""
import math
from statistics import NormalDist


def paired_gap(correct, correct_ref, z=1.96):
    """Accuracy gap in points and its paired 95% interval (lo, hi), from per-sample right/wrong of two
    samplers started at the same x_T. Only the discordant pairs carry information: `lost` (the reference
    right, this one wrong) and `gained`. The interval is Agresti & Min's (2005): a Wald interval for the
    difference of paired proportions after adding 1/2 to each of the four cells (n + 2 pairs in all),
    which keeps its width honest when few pairs disagree. Returns (gap, (lo, hi), lost + gained)."""
    n = len(correct)
    lost = (correct_ref & ~correct).sum().item()
    gained = (~correct_ref & correct).sum().item()
    p_lost, p_gained = (lost + 0.5) / (n + 2), (gained + 0.5) / (n + 2)
    centre = p_gained - p_lost
    half = z * ((p_lost + p_gained - centre ** 2) / (n + 2)) ** 0.5
    return 100 * (gained - lost) / n, (100 * (centre - half), 100 * (centre + half)), lost + gained


def bonferroni_z(m, level=0.95):
    """The two-sided normal quantile that keeps `level` for all of m intervals at once (Bonferroni:
    each one at 1 − (1 − level)/m); m = 1 gives the familiar 1.96."""
    return NormalDist().inv_cdf(1 - (1 - level) / (2 * m))


def poisson_upper(k, alpha=0.025):
    """Exact one-sided upper bound on a Poisson mean after seeing k events: the λ with P(X ≤ k; λ) = alpha."""
    lo, hi = 0.0, k + 10.0 * (k + 1) ** 0.5 + 10.0
    for _ in range(60):                                   # bisection; P(X ≤ k; λ) falls as λ grows
        lam = (lo + hi) / 2
        cdf = sum(math.exp(-lam) * lam ** i / math.factorial(i) for i in range(k + 1))
        lo, hi = (lam, hi) if cdf > alpha else (lo, lam)
    return hi


def verdict(interval, discordant, n, limit=1.0, min_discordant=10, alpha=0.025):
    """Is the gap within ±limit points? 'within', 'worse' or 'better' only when the interval says so.
    With fewer than `min_discordant` disagreeing pairs the normal approximation is not trusted for
    'within': |gap| ≤ the discordant rate, so an exact Poisson bound on that rate (one-sided, at
    `alpha`: the interval's own tail) must be ≤ limit."""
    lo, hi = interval
    if hi < -limit or lo > limit:
        return "worse" if hi < -limit else "better"
    if discordant < min_discordant:
        return "within" if 100 * poisson_upper(discordant, alpha) / n <= limit else "unresolved"
    return "within" if -limit <= lo and hi <= limit else "unresolved"
