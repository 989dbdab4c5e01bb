"""BI-RADS scales, label parsing and risk <-> class mapping (DESIGN §2)."""

import math

import pytest
import torch

from birads_calc.categories import (
    FOUR_CLASS,
    SIX_CLASS,
    LabelError,
    class_to_risk,
    label_name,
    parse_label,
    parse_pathology,
    risk_to_class,
    scale,
)

SIX_SPELLINGS = {
    0: ["2", 2, 2.0, " 2 ", "BI-RADS 2", "birads 2", "BIRADS2", "BI-RADS: 2", "Bi-Rads category 2"],
    1: ["3", 3, "BI-RADS 3", "bi_rads 3"],
    2: ["4A", "4a", " 4A ", "BI-RADS 4A", "BI-RADS 4a", "birads4a", "4 a", "BI-RADS: 4A", "Category 4A"],
    3: ["4B", "4b", "BI-RADS 4B", " 4b"],
    4: ["4C", "4c", "BI-RADS 4C", "4c "],
    5: ["5", 5, 5.0, "BI-RADS 5", " 5"],
}
FOUR_SPELLINGS = {
    0: ["2", 2, "BI-RADS 2"],
    1: ["3", 3.0, " 3 "],
    2: ["4", 4, 4.0, "BI-RADS 4", "birads 4", " 4 "],
    3: ["5", 5, "BI-RADS 5"],
}


@pytest.mark.parametrize(("index", "value"), [(i, v) for i, vs in SIX_SPELLINGS.items() for v in vs])
def test_six_class_accepted_spellings(index, value):
    assert parse_label(value, 6) == index


@pytest.mark.parametrize(("index", "value"), [(i, v) for i, vs in FOUR_SPELLINGS.items() for v in vs])
def test_four_class_accepted_spellings(index, value):
    assert parse_label(value, 4) == index


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0", "incomplete"),
        (0, "incomplete"),
        ("1", "negative"),
        ("BI-RADS 1", "negative"),
        ("6", "biopsy-proven"),
        (6, "biopsy-proven"),
        ("4", "subcategory"),
        (4, "subcategory"),
        ("BI-RADS 4", "subcategory"),
        ("", "missing"),
        ("   ", "missing"),
        (None, "missing"),
        (float("nan"), "missing"),
        ("4D", "unknown"),
        ("7", "unknown"),
        ("3.5", "unknown"),
        ("benign", "unknown"),
        ("44A", "unknown"),
    ],
)
def test_six_class_refused_values_name_the_value(value, fragment):
    with pytest.raises(LabelError, match=fragment) as info:
        parse_label(value, 6)
    if value not in (None, "") and not (isinstance(value, float) and math.isnan(value)) and str(value).strip():
        assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("4A", "5th-edition"),
        ("4c", "5th-edition"),
        ("1", "negative"),
        ("0", "incomplete"),
        ("6", "biopsy"),
        ("", "missing"),
    ],
)
def test_four_class_refused_values(value, fragment):
    with pytest.raises(LabelError, match=fragment):
        parse_label(value, 4)


def test_unknown_scale_is_refused():
    with pytest.raises(LabelError, match="6 or 4"):
        scale(5)
    with pytest.raises(LabelError, match="6 or 4"):
        parse_label("2", 3)


def test_label_names_round_trip():
    for n, names in ((6, SIX_CLASS), (4, FOUR_CLASS)):
        for i, name in enumerate(names):
            assert label_name(i, n) == name
            assert parse_label(name, n) == i
    with pytest.raises(LabelError, match="out of range"):
        label_name(6, 6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("malignant", 1.0),
        ("MALIGNANT", 1.0),
        (" Benign ", 0.0),
        ("benign", 0.0),
        ("", 0.5),
        (None, 0.5),
        (float("nan"), 0.5),
        ("  ", 0.5),
    ],
)
def test_pathology_encoding(value, expected):
    assert parse_pathology(value) == expected


@pytest.mark.parametrize("value", ["BENIGN_WITHOUT_CALLBACK", "M", "unknown?", "1"])
def test_pathology_refused(value):
    with pytest.raises(LabelError, match=repr(value).strip("'")):
        parse_pathology(value)


@pytest.mark.parametrize("n", [6, 4])
def test_class_centres_match_paper(n):
    # §2.3: the n-th class (1-based) has centre (2n-1)/2N.
    expected = [(2 * k - 1) / (2 * n) for k in range(1, n + 1)]
    assert class_to_risk(torch.arange(n), n).tolist() == pytest.approx(expected)
    # each centre maps back to its own class
    assert risk_to_class(class_to_risk(torch.arange(n), n), n).tolist() == list(range(n))


def test_risk_to_class_boundaries_six():
    # [(n-1)/N, n/N] belongs to class n; the top edge 1.0 stays in the last class; out-of-range risks clamp.
    risks = torch.tensor([-0.1, 0.0, 0.1666, 1 / 6 + 1e-6, 0.49, 0.5, 0.8333, 5 / 6 + 1e-6, 0.999, 1.0, 1.3])
    assert risk_to_class(risks, 6).tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 5, 5, 5]


def test_risk_to_class_four():
    assert risk_to_class([0.0, 0.24, 0.25, 0.5, 0.74, 0.75, 1.0], 4).tolist() == [0, 0, 1, 2, 2, 3, 3]
