"""Paired comparison of two methods trained with several seeds and tested on the same patients.

A method's figure on a test set varies for two reasons: **which patients** are in the test set (patient
sampling) and **which training run** produced the model (the training seed: initialisation, sampling order).
For two methods ``a`` and ``b`` trained with seeds ``1..n`` and tested on the same ``P`` patients, the per-seed
difference on the whole test set is

    d_s = delta + e_P + e_Ps + u_s

with ``delta`` the difference of the methods, ``e_P`` the part of the patient-sampling error shared by every
seed (variance ``tau^2``), ``e_Ps`` the part specific to seed ``s`` (``omega^2``) and ``u_s`` the training
variation of the difference (``sigma^2``). The estimate is the mean ``d = mean_s d_s``; its variance is
``tau^2 + (omega^2 + sigma^2) / n``. Neither classical interval covers it alone: a t interval over seeds sees
only ``omega^2 + sigma^2`` (the shared ``e_P`` cancels within one test set), a patient bootstrap only
``tau^2 + omega^2 / n``, and a bootstrap that also resamples a handful of seeds underestimates the seed part
(docs/compare.md). Here both are estimated and added:

* ``V_patients``: the variance of ``d`` over ``B`` patient resamples (the same resampled patients for both
  methods and every seed: the pairing), times ``P / (P - 1)`` (the bootstrap's small-sample bias for a mean);
* ``V_seeds = S^2 / n`` with ``S`` the standard deviation of the ``d_s`` over seeds (``n - 1`` degrees of freedom);
* ``SE = sqrt(V_patients + V_seeds)``, referred to a t distribution with Satterthwaite's degrees of freedom
  ``SE^4 / (V_seeds^2 / (n - 1) + V_patients^2 / (P - 1))``.

``V_seeds`` also holds ``omega^2 / n``, which the patient part already counts: the interval errs on the wide side
by at most that term. With one seed ``sigma^2`` cannot be estimated: the figures describe one pair of trained
models, not two methods, and no verdict is given; nor with two seeds (:data:`MIN_SEEDS`).

Verdicts (:func:`verdict`): **better** when the two-sided test of ``delta = 0`` rejects, **equivalent** when the
two one-sided tests (TOST) reject ``|delta| >= margin``, otherwise **inconclusive**; the p-values are adjusted for
multiplicity by the caller (:mod:`birads_calc.reporting.multiplicity`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95
POWER = 0.8
# With 2 seeds the seed variance has 1 degree of freedom and Satterthwaite's approximation fails: simulated
# two-sided error rates of 7-10% at a nominal 5% (docs/compare.md). From 3 seeds on they hold (about 5%).
MIN_SEEDS = 3
A_BETTER, B_BETTER, EQUIVALENT, INCONCLUSIVE = "a better", "b better", "equivalent", "inconclusive"


@dataclass(frozen=True)
class PairedEstimate:
    """A difference between methods (or one method's figure) with its standard error over patients and seeds."""

    estimate: float  # mean over seeds of the figure on all test patients
    se: float  # sqrt(V_patients + V_seeds)
    df: float  # Satterthwaite's degrees of freedom of the t reference distribution
    patient_se: float  # sqrt(V_patients)
    seed_sd: float | None  # SD of the per-seed figures (None with one seed)
    n_seeds: int
    n_patients: int
    undefined_resamples: int  # resamples where the figure was undefined for a seed (left out)

    @property
    def testable(self) -> bool:
        """Whether a verdict can hold its level: at least :data:`MIN_SEEDS` seeds and a finite error."""
        return self.n_seeds >= MIN_SEEDS and math.isfinite(self.se)

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The two-sided t interval ``estimate +- t(df) * se``."""
        if not math.isfinite(self.se):
            return (math.nan, math.nan)
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return (self.estimate - half, self.estimate + half)

    def p_value(self) -> float:
        """Two-sided p-value of ``delta = 0``."""
        if not (math.isfinite(self.se) and math.isfinite(self.estimate)):
            return math.nan
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def p_equivalence(self, margin: float) -> float:
        """TOST p-value of ``|delta| >= margin`` (Schuirmann 1987): the larger of the two one-sided p-values."""
        if not (math.isfinite(self.se) and math.isfinite(self.estimate)):
            return math.nan
        if self.se == 0:
            return 0.0 if abs(self.estimate) < margin else 1.0
        lower = stats.t.sf((self.estimate + margin) / self.se, self.df)  # H0: delta <= -margin
        upper = stats.t.cdf((self.estimate - margin) / self.se, self.df)  # H0: delta >= +margin
        return float(max(lower, upper))

    def minimum_detectable(self, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
        """The smallest true difference the two-sided test at ``alpha`` detects with probability ``power``."""
        return minimum_detectable_difference(self.se, self.df, alpha, power)


def paired_estimate(point: np.ndarray, resampled: np.ndarray, n_patients: int) -> PairedEstimate:
    """Combine the seed variation and the patient variation shared by the seeds (module docstring).

    Args:
        point: ``[n]`` the figure (a difference ``a - b``, or one method's metric) of each seed on all test patients.
        resampled: ``[B, n]`` the figure of each seed on each of ``B`` patient resamples, the same resampled
            patients for every seed (and both methods). ``nan`` where undefined; such resamples are left out.
        n_patients: number of test patients ``P`` (the resampled unit).

    Example:
        >>> est = paired_estimate(np.array([0.10, 0.14]), np.array([[0.1, 0.1], [0.2, 0.2], [0.0, 0.2]]), 20)
        >>> round(est.estimate, 3), est.n_seeds
        (0.12, 2)
    """
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    resampled = np.asarray(resampled, dtype=np.float64).reshape(-1, point.size)
    n = point.size
    defined = resampled[~np.isnan(resampled).any(axis=1)]
    undefined = int(resampled.shape[0] - defined.shape[0])
    if n == 0 or np.isnan(point).any() or defined.shape[0] < 2 or n_patients < 2:
        return PairedEstimate(math.nan, math.nan, math.nan, math.nan, None, n, n_patients, undefined)
    # the bootstrap's (co)variances of a mean of P units are (P - 1) / P of the true ones
    covariance = np.atleast_2d(np.cov(defined, rowvar=False)) * n_patients / (n_patients - 1)
    if n == 1:  # one pair of trained models: patient sampling only, training variation unmeasured
        var_patients, seed_sd, var_seeds = float(covariance[0, 0]), None, 0.0
    else:  # the patient variance the seeds share: the mean covariance between different seeds (tau^2)
        shared = (covariance.sum() - np.trace(covariance)) / (n * (n - 1))
        var_patients, seed_sd = max(float(shared), 0.0), float(point.std(ddof=1))
        var_seeds = seed_sd**2 / n
    df = satterthwaite([(var_patients, n_patients - 1), (var_seeds, n - 1)])
    return PairedEstimate(
        float(point.mean()),
        math.sqrt(var_patients + var_seeds),
        df,
        math.sqrt(var_patients),
        seed_sd,
        n,
        n_patients,
        undefined,
    )


def satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of independent variance estimates ``(variance, df)`` (Satterthwaite 1946)."""
    total = sum(v for v, _ in parts)
    denominator = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    if total <= 0 or denominator <= 0:
        return math.inf
    return total * total / denominator


def power_of_test(delta: float, se: float, df: float, alpha: float = 1 - LEVEL) -> float:
    """Probability that the two-sided t test at ``alpha`` rejects when the true difference is ``delta``.

    The statistic ``estimate / se`` follows a noncentral t with ``df`` degrees of freedom and noncentrality
    ``delta / se``; ``df = inf`` is the normal limit.
    """
    if not (se > 0 and math.isfinite(se)):
        return math.nan
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    shift = abs(delta) / se
    if df > 1e6:
        return float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
    # the wrong-side tail is negligible where scipy's noncentral t returns nan for it (far in the tail)
    wrong_side = float(np.nan_to_num(stats.nct.cdf(-critical, df, shift)))
    return float(stats.nct.sf(critical, df, shift)) + wrong_side


def minimum_detectable_difference(se: float, df: float, alpha: float = 1 - LEVEL, power: float = POWER) -> float:
    """The true difference the two-sided t test at ``alpha`` detects with probability ``power`` (the minimum
    detectable effect of Bloom 1995, computed with the noncentral t rather than its ``t + t`` approximation)."""
    if not (se > 0 and math.isfinite(se)) or not df > 0:
        return math.nan
    upper = 10.0
    while power_of_test(upper * se, se, df, alpha) < power:
        upper *= 2
    return float(optimize.brentq(lambda k: power_of_test(k * se, se, df, alpha) - power, 0.0, upper)) * se


def verdict(diff: float, p: float | None, p_equivalence: float | None, alpha: float = 1 - LEVEL) -> str:
    """``a better`` / ``b better`` when ``p <= alpha`` (by the sign of ``diff``), else ``equivalent`` when the TOST
    ``p_equivalence <= alpha``, else ``inconclusive``. ``p`` values are the multiplicity-adjusted ones; ``None``
    (no test possible, e.g. one seed) is inconclusive."""
    if p is not None and math.isfinite(p) and p <= alpha and diff != 0:
        return A_BETTER if diff > 0 else B_BETTER
    if p_equivalence is not None and math.isfinite(p_equivalence) and p_equivalence <= alpha:
        return EQUIVALENT
    return INCONCLUSIVE
