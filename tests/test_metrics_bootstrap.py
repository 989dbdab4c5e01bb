"""Patient-level bootstrap intervals: contain the estimate, deterministic per seed, resample whole patients."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from birads_calc.metrics import BootstrapCI, bootstrap_ci
from birads_calc.metrics.functional import malignancy_adjusted_qwk, malignancy_auroc, quadratic_weighted_kappa


def grouped_case(seed: int = 0, patients: int = 40):
    """1-6 lesions per patient, predictions near the truth, pathology per patient (as biopsies are)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 7, (patients,), generator=generator)
    groups = [f"P{p:03d}" for p, size in enumerate(sizes.tolist()) for _ in range(size)]
    n = len(groups)
    target = torch.randint(6, (n,), generator=generator)
    preds = (target + torch.randint(-1, 2, (n,), generator=generator)).clamp(0, 5)
    malignancy = torch.tensor([0.0, 0.5, 1.0])[torch.randint(3, (patients,), generator=generator)].repeat_interleave(
        sizes
    )
    risk = (target.float() + torch.rand(n, generator=generator)) / 6
    return preds, target, malignancy, risk, groups


CASES = {
    "qwk": (quadratic_weighted_kappa, lambda c: (c[0], c[1]), {"num_classes": 6}),
    "maqwk_m": (malignancy_adjusted_qwk, lambda c: (c[0], c[1], c[2]), {"num_classes": 6, "kind": "malignant"}),
    "maqwk_b": (malignancy_adjusted_qwk, lambda c: (c[0], c[1], c[2]), {"num_classes": 6, "kind": "benign"}),
    "auroc": (malignancy_auroc, lambda c: (c[3], c[2]), {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_interval_contains_estimate_and_is_deterministic(name):
    metric_fn, pick, kwargs = CASES[name]
    case = grouped_case()
    inputs = pick(case)
    ci = bootstrap_ci(metric_fn, *inputs, groups=case[4], resamples=300, seed=1, **kwargs)
    assert ci.value == pytest.approx(float(metric_fn(*inputs, **kwargs)), abs=0)
    assert ci.low < ci.value < ci.high
    assert ci.high - ci.low < 0.6  # 40 patients: informative, not the whole range
    assert (ci.resamples, ci.groups, ci.level) == (300, 40, 0.95)
    assert bootstrap_ci(metric_fn, *inputs, groups=case[4], resamples=300, seed=1, **kwargs) == ci
    assert bootstrap_ci(metric_fn, *inputs, groups=case[4], resamples=300, seed=2, **kwargs) != ci
    narrower = bootstrap_ci(metric_fn, *inputs, groups=case[4], resamples=300, seed=1, level=0.5, **kwargs)
    assert ci.low <= narrower.low <= narrower.high <= ci.high


def test_n_counts_the_samples_each_metric_uses():
    preds, target, malignancy, risk, groups = grouped_case()
    kw = {"groups": groups, "resamples": 10}
    assert bootstrap_ci(quadratic_weighted_kappa, preds, target, num_classes=6, **kw).n == len(groups)
    assert bootstrap_ci(
        malignancy_adjusted_qwk, preds, target, malignancy, num_classes=6, kind="malignant", **kw
    ).n == int((malignancy == 1).sum())
    assert bootstrap_ci(malignancy_auroc, risk, malignancy, **kw).n == int((malignancy != 0.5).sum())


@pytest.mark.parametrize("name", ["qwk", "maqwk_m", "maqwk_b"])
def test_confusion_matrix_path_equals_replaying_the_resamples(name):
    """The fast path (sum of per-patient confusion matrices) gives the very same interval as re-scanning the samples
    of each resample, which a wrapper around the metric forces."""
    metric_fn, pick, kwargs = CASES[name]
    case = grouped_case(seed=5)
    fast = bootstrap_ci(metric_fn, *pick(case), groups=case[4], resamples=200, seed=3, **kwargs)
    slow = bootstrap_ci(
        lambda *x, **k: metric_fn(*x, **k), *pick(case), groups=case[4], resamples=200, seed=3, **kwargs
    )
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)
    assert (fast.undefined, fast.value) == (slow.undefined, slow.value)


def test_resamples_are_whole_patients_drawn_with_replacement():
    groups = ["a"] * 3 + ["b"] * 1 + ["c"] * 2 + ["d"] * 4
    sample_ids = torch.arange(len(groups))
    seen = []

    def record(ids):
        seen.append(Counter(ids.tolist()))
        return torch.tensor(0.5)

    bootstrap_ci(record, sample_ids, groups=groups, resamples=50, seed=0)
    draws = seen[1:]  # the first call is the point estimate on all samples
    assert len(draws) == 50
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in "abcd"}
    distinct = set()
    for counts in draws:
        times = {g: counts.get(ids[0], 0) for g, ids in members.items()}
        for g, ids in members.items():  # every lesion of a patient comes as often as the patient
            assert all(counts.get(i, 0) == times[g] for i in ids)
        assert sum(times.values()) == 4  # 4 patients drawn with replacement
        distinct.add(tuple(times.values()))
    assert len(distinct) > 5  # really random, not the same resample


def test_two_patients_hand_built():
    """With two patients a resample is AA, AB, BA or BB, so the interval ends are metric values of those sets."""
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    preds = torch.tensor([0, 1, 2, 3, 1, 3, 2, 0])  # patient A perfect, patient B poor
    groups = ["A"] * 4 + ["B"] * 4
    ci = bootstrap_ci(quadratic_weighted_kappa, preds, target, num_classes=4, groups=groups, resamples=2000)
    only_b = float(quadratic_weighted_kappa(preds[4:], target[4:], 4))
    both = float(quadratic_weighted_kappa(preds, target, 4))
    assert ci.value == pytest.approx(both)
    assert ci.low == pytest.approx(only_b, abs=1e-12)  # BB: drawn about a quarter of the time
    assert ci.high == pytest.approx(1.0)  # AA: perfect


def test_undefined_resamples_are_counted_not_hidden():
    # patient A: all malignant lesions correct in class 5 -> MAQWK-M alone undefined; B defines it
    target = torch.tensor([5, 5, 3, 2])
    preds = torch.tensor([5, 5, 1, 2])
    ci = bootstrap_ci(
        malignancy_adjusted_qwk,
        preds,
        target,
        torch.ones(4),
        num_classes=6,
        kind="malignant",
        groups=["A", "A", "B", "B"],
        resamples=400,
    )
    assert 50 < ci.undefined < 150  # AA about a quarter of the time
    assert not math.isnan(ci.low)


def test_as_dict_matches_metrics_json_and_nan_becomes_null():
    ci = BootstrapCI(value=0.8, low=0.7, high=math.nan, n=12, groups=5, resamples=10, level=0.95, undefined=10)
    assert ci.as_dict() == {"value": 0.8, "ci_low": 0.7, "ci_high": None, "n": 12}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": ["a", "b"]}, "groups has 2"),
        ({"groups": ["a", "b", "c"], "resamples": 0}, "resamples must be a positive integer"),
        ({"groups": ["a", "b", "c"], "level": 95}, "level must lie strictly between 0 and 1"),
        ({"groups": ["a", "b", "c"], "num_classes": 2}, r"preds\[2\] = 2"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(quadratic_weighted_kappa, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]), **kwargs)


def test_fixed_options_must_be_keywords():
    preds, target, malignancy, _, groups = grouped_case()
    with pytest.raises(ValueError, match="fixed options as keywords"):
        bootstrap_ci(malignancy_adjusted_qwk, preds, target, malignancy, 6, "malignant", groups=groups)
