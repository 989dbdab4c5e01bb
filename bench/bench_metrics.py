"""Metrics benchmark (DESIGN §8): QWK / MAQWK update + compute on 10^6 samples against scikit-learn.

Figures:
* ``metrics.qwk_1e6``: ``QuadraticWeightedKappa`` fed in 10 batches then computed, samples/s, against
  ``sklearn.metrics.cohen_kappa_score(weights="quadratic")`` on the same samples (target ratio >= 10).
* ``metrics.maqwk_1e6``: ``MalignancyAdjustedQWK`` (malignant) the same way, against the same scikit-learn call
  (scikit-learn has no MAQWK; its kappa is the reference cost of a kappa over these samples).
* ``metrics.bootstrap_qwk``: patient-level bootstrap CI of QWK (Table 2's 7,175 lesions, ~2,000 patients, 1000
  resamples) through the confusion-matrix path, against replaying every resample's samples (no target).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from sklearn.metrics import cohen_kappa_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import best_time, figure

from birads_calc.metrics import MalignancyAdjustedQWK, QuadraticWeightedKappa, bootstrap_ci
from birads_calc.metrics.functional import quadratic_weighted_kappa


def _samples(n: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(6, (n,), generator=generator)
    preds = (target + torch.randint(-2, 3, (n,), generator=generator)).clamp(0, 5)
    malignancy = torch.tensor([0.0, 0.5, 1.0])[torch.randint(3, (n,), generator=generator)]
    return preds, target, malignancy


def _stream(metric, batches) -> float:
    metric.reset()
    for batch in batches:
        metric.update(*batch)
    return float(metric.compute())


def run(quick: bool) -> dict[str, dict]:
    """Time both sides single-threaded, like scikit-learn: on a shared 2-core machine OpenMP's 2-thread parallel
    regions stall whenever the other core is busy, which would measure the neighbours, not the metric."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> dict[str, dict]:
    n = 10**5 if quick else 10**6
    preds, target, malignancy = _samples(n)
    parts = list(zip(preds.chunk(10), target.chunk(10), malignancy.chunk(10), strict=True))
    y_true, y_pred = target.numpy(), preds.numpy()

    sklearn_s = best_time(lambda: cohen_kappa_score(y_true, y_pred, weights="quadratic"), repeat=3)
    qwk = QuadraticWeightedKappa(6)
    qwk_s = best_time(lambda: _stream(qwk, [(p, t) for p, t, _ in parts]), repeat=5)
    maqwk = MalignancyAdjustedQWK(6, "malignant")
    maqwk_s = best_time(lambda: _stream(maqwk, parts), repeat=5)
    assert (
        abs(_stream(qwk, [(p, t) for p, t, _ in parts]) - cohen_kappa_score(y_true, y_pred, weights="quadratic")) < 1e-9
    )

    lesions, patients = 7175, 2000
    b_preds, b_target, _ = _samples(lesions, seed=1)
    groups = torch.randint(patients, (lesions,), generator=torch.Generator().manual_seed(2))
    resamples = 100 if quick else 1000

    def replay():  # a wrapper hides the metric from the confusion-matrix path
        return bootstrap_ci(
            lambda *x, **k: quadratic_weighted_kappa(*x, **k),
            b_preds,
            b_target,
            groups=groups,
            num_classes=6,
            resamples=resamples,
        )

    fast_s = best_time(
        lambda: bootstrap_ci(
            quadratic_weighted_kappa, b_preds, b_target, groups=groups, num_classes=6, resamples=resamples
        ),
        repeat=3,
    )
    replay_s = best_time(replay, repeat=1, warmup=0)

    tag = "1e5" if quick else "1e6"
    return {
        f"metrics.qwk_{tag}": figure(n / qwk_s, n / sklearn_s, "samples/s", target=10),
        f"metrics.maqwk_{tag}": figure(n / maqwk_s, n / sklearn_s, "samples/s", target=10),
        "metrics.bootstrap_qwk": figure(
            fast_s, replay_s, f"s per {resamples} resamples", target=None, lower_is_better=True
        ),
    }


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
