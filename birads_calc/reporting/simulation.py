"""Simulated comparisons: how often ``compare``'s verdicts are wrong, and how large a run set must be to be right.

numpy only, no training: each simulated comparison draws a test set of patients and, for two methods ``a`` and
``b`` and each of ``n`` training seeds, one trained model's predictions, then computes QWK, MAQWK-M and MAQWK-B on
all patients and on patient resamples exactly as ``birads-calc compare`` does, and hands them to
:func:`birads_calc.reporting.paired_statistics.paired_estimate`.

The data follow the synthetic generator (docs/synthetic.md): the paper's Table 2 category frequencies, a share of
a patient's calcifications repeating its first category, and every calcification with a pathology drawn from its
category's BI-RADS likelihood of malignancy. A trained model predicts the category
``clip(round(y + patient + lesion + lesion_m + shift_ms + scale_ms * error_sd_m * N(0, 1)), 0, 5)``:

* ``patient`` (``patient_sd``) and ``lesion`` (``shared_sd``): how hard a patient and a calcification are for
  every model (what pairing the methods on the same patients removes), plus ``method_sd``: how hard a
  calcification is for one method's models only (the patient variation of a difference that no number of
  seeds averages away);
* ``shift_ms`` and ``log scale_ms`` (both ``N(0, seed_sd)``): how one trained model differs from another of the
  same method (the training-seed variation);
* ``error_sd_m``: the method's own error; method ``a``'s is ``error_sd * (1 - improvement)``, so
  ``improvement = 0`` is the null hypothesis (no difference between the methods).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from birads_calc.reporting.paired_statistics import PairedEstimate, paired_estimate

METRICS = ("qwk", "maqwk_m", "maqwk_b")
# The paper's Table 2: calcifications per category 2, 3, 4A, 4B, 4C, 5 (7,175 in all).
CATEGORY_COUNTS = np.array([3180, 1751, 323, 241, 778, 902], dtype=np.float64)
# Middle of each category's BI-RADS likelihood-of-malignancy range (ACR BI-RADS atlas, 5th edition).
MALIGNANCY_RATE = np.array([0.0, 0.01, 0.06, 0.30, 0.72, 0.97])
K = len(CATEGORY_COUNTS)


@dataclass(frozen=True)
class Scenario:
    """One design (test patients, seeds) and one noise setting; ``improvement`` > 0 makes method ``a`` better."""

    patients: int = 40
    seeds: int = 5
    lesions_per_patient: float = 11.0
    repeat_first: float = 0.3
    error_sd: float = 0.8
    shared_sd: float = 0.4
    patient_sd: float = 0.3
    method_sd: float = 0.3
    seed_sd: float = 0.1
    improvement: float = 0.0


@dataclass(frozen=True)
class SimulatedRuns:
    """Metric values of one simulated comparison: ``values[metric]`` is ``[2 methods (a, b), 1 + B, seeds]``,
    row 0 on all patients, rows ``1..B`` on the patient resamples (the same for every run)."""

    values: dict[str, np.ndarray]
    patients: int

    def paired(self, metric: str) -> PairedEstimate:
        """``a - b`` with compare's statistics."""
        diff = self.values[metric][0] - self.values[metric][1]
        return paired_estimate(diff[0], diff[1:], self.patients)


def kappa_weights(kind: str | None = None) -> np.ndarray:
    """``(i - j)^2`` (rows = truth); for MAQWK only under-calls (``malignant``) or over-calls (``benign``)."""
    truth, pred = np.arange(K)[:, None], np.arange(K)[None, :]
    weights = (truth - pred).astype(np.float64) ** 2
    if kind == "malignant":
        return weights * (pred < truth)
    if kind == "benign":
        return weights * (pred > truth)
    return weights


def kappa(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``1 - sum(W O) / sum(W E)`` of confusion matrices ``[..., K, K]``; ``nan`` where ``sum(W E) = 0``."""
    rows, cols = confusion.sum(-1), confusion.sum(-2)
    total = rows.sum(-1)
    # einsum's own loops rather than BLAS (whose threads spin on a busy machine); E = rows cols^T / total
    observed_cost = np.einsum("...ij,ij->...", confusion, weights, optimize=False)
    expected_cost = np.einsum("...i,ij,...j->...", rows, weights, cols, optimize=False) / np.maximum(total, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected_cost > 0, 1 - observed_cost / expected_cost, np.nan)


def draw_test_set(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(patient index, category, malignant)`` of every test calcification."""
    frequencies = CATEGORY_COUNTS / CATEGORY_COUNTS.sum()
    counts = 1 + rng.poisson(scenario.lesions_per_patient - 1, size=scenario.patients)
    patient = np.repeat(np.arange(scenario.patients), counts)
    first = rng.choice(K, size=scenario.patients, p=frequencies)[patient]
    category = np.where(
        rng.random(patient.size) < scenario.repeat_first, first, rng.choice(K, size=patient.size, p=frequencies)
    )
    is_first = np.r_[True, patient[1:] != patient[:-1]]
    category[is_first] = first[is_first]
    malignant = rng.random(patient.size) < MALIGNANCY_RATE[category]
    return patient, category, malignant


def simulate(scenario: Scenario, resamples: int, rng: np.random.Generator) -> SimulatedRuns:
    """One comparison: test set, ``2 x seeds`` trained models, metrics on all patients and on ``resamples``."""
    patient, category, malignant = draw_test_set(scenario, rng)
    n, p = scenario.seeds, scenario.patients
    difficulty = rng.normal(0, scenario.patient_sd, p)[patient] + rng.normal(0, scenario.shared_sd, patient.size)
    difficulty = difficulty + rng.normal(0, scenario.method_sd, (2, 1, patient.size))
    error_sd = np.array([scenario.error_sd * (1 - scenario.improvement), scenario.error_sd])[:, None, None]
    shift = rng.normal(0, scenario.seed_sd, (2, n, 1))
    scale = np.exp(rng.normal(0, scenario.seed_sd, (2, n, 1)))
    latent = category + difficulty + shift + scale * error_sd * rng.standard_normal((2, n, patient.size))
    pred = np.clip(np.rint(latent), 0, K - 1).astype(np.int64)
    # per run, patient and pathology: confusion counts [2 * n, P, 2, K * K] from one bincount
    run = np.arange(2 * n)[:, None]
    cell = ((run * p + patient) * 2 + malignant) * K * K + category * K + pred.reshape(2 * n, -1)
    confusion = np.bincount(cell.ravel(), minlength=2 * n * p * 2 * K * K).reshape(2 * n, p, 2 * K * K)
    draws = np.vstack([np.ones((1, p)), rng.multinomial(p, np.full(p, 1 / p), size=resamples)])
    # [1 + B, P] x [P, runs * cells]; einsum's own loop, not BLAS, whose threads spin on a busy machine (100x)
    per_patient = confusion.transpose(1, 0, 2).reshape(p, -1).astype(np.float64)
    resampled = np.einsum("bp,pc->bc", draws, per_patient, optimize=False).reshape(resamples + 1, 2, n, 2, K, K)
    by_kind = {
        "qwk": (resampled.sum(axis=3), kappa_weights()),
        "maqwk_m": (resampled[:, :, :, 1], kappa_weights("malignant")),
        "maqwk_b": (resampled[:, :, :, 0], kappa_weights("benign")),
    }
    values = {name: kappa(conf, weights).transpose(1, 0, 2) for name, (conf, weights) in by_kind.items()}
    return SimulatedRuns(values, p)


def rejection_rates(
    scenario: Scenario,
    simulations: int,
    resamples: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    p_value: Callable[[SimulatedRuns, str], float] | None = None,
) -> dict[str, dict[str, float]]:
    """Share of ``simulations`` comparisons per metric where the two-sided test at ``alpha`` says ``a better`` and
    ``b better``, with the mean standard error, degrees of freedom and true-vs-estimated spreads.

    Args:
        p_value: ``(runs, metric) -> p`` to test another procedure; default compare's (:func:`paired_estimate`).
    """
    rng = np.random.default_rng(seed)
    outcomes = {m: [] for m in METRICS}
    for _ in range(simulations):
        runs = simulate(scenario, resamples, rng)
        for metric in METRICS:
            estimate = runs.paired(metric)
            p = estimate.p_value() if p_value is None else p_value(runs, metric)
            outcomes[metric].append((estimate.estimate, p, estimate.se, estimate.df))
    rates = {}
    for metric, rows in outcomes.items():
        diff, p, se, df = (np.asarray(col, dtype=np.float64) for col in zip(*rows, strict=True))
        tested = ~np.isnan(p)
        rates[metric] = {
            "a_better": float(np.mean((p <= alpha) & (diff > 0) & tested)),
            "b_better": float(np.mean((p <= alpha) & (diff < 0) & tested)),
            "tested": float(tested.mean()),
            "mean_diff": float(np.nanmean(diff)),
            "sd_diff": float(np.nanstd(diff, ddof=1)),  # the true spread of the estimate over simulations
            "mean_se": float(np.sqrt(np.nanmean(se**2))),  # what the statistics say it is
            "median_df": float(np.nanmedian(df)),
        }
    return rates


def true_difference(scenario: Scenario, replicates: int = 400, seed: int = 1) -> dict[str, float]:
    """The expected ``a - b`` per metric at this design: the mean estimate over ``replicates`` simulated comparisons
    (QWK-type metrics are biased in small test sets, so the difference at the design's size is what a test sees)."""
    rng = np.random.default_rng(seed)
    runs = [simulate(scenario, 1, rng) for _ in range(replicates)]
    return {m: float(np.mean([np.mean(r.values[m][0, 0] - r.values[m][1, 0]) for r in runs])) for m in METRICS}
