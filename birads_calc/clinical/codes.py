"""Coded concepts of the results (DICOM PS3.16) and the names birads-calc gives them.

* **BI-RADS assessment** (the answer to DCM 111005 "Assessment Category", as in the Mammography CAD SR): CID 6027
  "Assessment from BI-RADS" with its own code meanings: SNOMED CT for the whole categories 2, 3, 4 and 5, the ACR
  BI-RADS lexicon (coding scheme ``BI``, version 4.0) for the 4A/4B/4C subdivisions.
* **Risk score**: an ordinal suspicion in [0, 1], not a calibrated probability of cancer, so a private code
  (``99BIRADSCALC``) rather than DCM 111047 "Probability of cancer". It is the one private code.
* **SEG segment**: category SCT 49755003 "Morphologically abnormal structure" (CID 7150) with type SCT 129769006
  "Calcification cluster" (the CID 6014 finding a reader draws around; CID 7151 is extensible), anatomic region
  "Breast" with its laterality as modifier, a display colour per BI-RADS category (:data:`CATEGORY_COLOURS`).
* **Who found the region**: the classical detector's algorithm family from CID 7162 (DCM 123104 "Morphological
  Operations": thresholds, morphology and distance grouping, no learning), never "Artificial Intelligence".
* **Which segments are calcifications** (:func:`is_calcification`): a study's own SEG is used as the regions to
  rate only where its segments are coded with one of :data:`CALCIFICATION_TYPES`.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

ASSESSMENT_CATEGORY = codes.DCM.AssessmentCategory
# CID 6027 "Assessment from BI-RADS" (PS3.16), code meanings exactly as the CID gives them: the BI-RADS 5th edition
# wording, which left the management advice out of the category (the CID shortens only category 0, to fit 64 chars)
BIRADS_CODES: dict[str, hd.sr.CodedConcept] = {
    "2": hd.sr.CodedConcept("397141009", "SCT", "2 - Benign"),
    "3": hd.sr.CodedConcept("397143007", "SCT", "3 - Probably Benign"),
    "4": hd.sr.CodedConcept("397144001", "SCT", "4 - Suspicious"),
    "4A": hd.sr.CodedConcept("MA.II.A.5.4A", "BI", "4A - Low suspicion", "4.0"),
    "4B": hd.sr.CodedConcept("MA.II.A.5.4B", "BI", "4B - Intermediate suspicion", "4.0"),
    "4C": hd.sr.CodedConcept("MA.II.A.5.4C", "BI", "4C - Moderate suspicion", "4.0"),
    "5": hd.sr.CodedConcept("397145000", "SCT", "5 - Highly suggestive of malignancy"),
}
PRIVATE_SCHEME = "99BIRADSCALC"
RISK_SCORE = hd.sr.CodedConcept("risk", PRIVATE_SCHEME, "BI-RADS risk score (ordinal, 0-1)")
CERTAINTY = codes.DCM.CertaintyOfFinding  # the detector's score, in percent (as the CAD SR records it)
PERCENT = codes.UCUM.Percent
NO_UNITS = codes.UCUM.NoUnits
FINDING_SITE = codes.SCT.FindingSite
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12
CENTER = codes.DCM.Center
COMMENT = codes.DCM.Comment  # the label viewers show beside a mark (OHIF reads it)
CALCIFICATION_FINDING = codes.SCT.CalcificationOfBreast  # the SR finding (a clinical finding)
CLUSTER = codes.SCT.CalcificationCluster  # SEG segment type / CAD SR single image finding (CID 6014)
ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure  # SEG segment category (CID 7150)
MAMMOGRAPHY = codes.SCT.Mammography
BREASTS = {"L": codes.SCT.LeftBreast, "R": codes.SCT.RightBreast}
LATERALITY = {"L": codes.SCT.Left, "R": codes.SCT.Right}
BREAST = codes.SCT.Breast
DEVICE = codes.DCM.Device
# CID 7162: the classical detector (breast mask by thresholds, specks by morphology, grouped by distance)
DETECTOR_FAMILY = codes.DCM.MorphologicalOperations
MODEL_FAMILY = codes.DCM.ArtificialIntelligence  # the rating model: a trained network
# segment types that mean "calcifications" in a study's own SEG (a reader's or another program's)
CALCIFICATION_TYPES = {
    (CLUSTER.value, "SCT"),
    (codes.SCT.IndividualCalcification.value, "SCT"),
    (CALCIFICATION_FINDING.value, "SCT"),  # what birads-calc wrote before 0.2 and some tools write
    ("18115005", "SCT"),  # Pathologic calcification
    (codes.DCM.CalcificationCluster.value, "DCM"),
    (codes.DCM.IndividualCalcification.value, "DCM"),
}
# display colour per category (CIELab via sRGB): benign green .. highly suggestive red
CATEGORY_COLOURS = {
    "2": (0, 170, 0),
    "3": (150, 200, 0),
    "4": (255, 160, 0),
    "4A": (255, 200, 0),
    "4B": (255, 140, 0),
    "4C": (255, 80, 0),
    "5": (220, 0, 0),
}
UNRATED_COLOUR = (0, 160, 255)  # a region of a reader's SEG as drawn (annotate): not rated yet
CODING_SCHEMES = [
    hd.coding_schemes.CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME, name="birads-calc private codes", responsible_organization="birads-calc"
    ),
    hd.coding_schemes.CodingSchemeIdentificationItem(
        designator="BI", name="ACR BI-RADS Atlas", responsible_organization="American College of Radiology"
    ),
]


def category_from_code(code: hd.sr.CodedConcept) -> str:
    """The birads-calc label (``"4B"``) of a coded assessment, for reading an SR back."""
    for label, known in BIRADS_CODES.items():
        if (known.value, known.scheme_designator) == (code.value, code.scheme_designator):
            return label
    raise KeyError(f"not a BI-RADS assessment code: {code.value} ({code.scheme_designator})")


def is_calcification(segment) -> bool:
    """Whether a SEG segment (an item of SegmentSequence) is coded as calcifications."""
    types = segment.get("SegmentedPropertyTypeCodeSequence") or []
    return any((str(x.CodeValue), str(x.CodingSchemeDesignator)) in CALCIFICATION_TYPES for x in types)


def colour(category: str | None) -> hd.color.CIELabColor:
    return hd.color.CIELabColor.from_rgb(*CATEGORY_COLOURS.get(category or "", UNRATED_COLOUR))
