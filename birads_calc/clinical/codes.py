"""Coded concepts of the results (DICOM PS3.16) and the names birads-calc gives them.

The BI-RADS assessment values are those of CID 6027 "Assessment from BI-RADS" (included in CID 6026
"Mammography Assessment"): SNOMED CT for the whole categories 2, 3, 4 and 5 and the ACR BI-RADS lexicon (coding
scheme ``BI``, version 4.0) for the 4A/4B/4C subdivisions. The concept they answer is DCM 111005 "Assessment
Category", as in the Mammography CAD SR. The model's risk score is an ordinal suspicion in [0, 1], not a
calibrated probability of cancer, so it gets a private code (``99BIRADSCALC``) rather than DCM 111047.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

ASSESSMENT_CATEGORY = codes.DCM.AssessmentCategory
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
NO_UNITS = codes.UCUM.NoUnits
CALCIFICATION = codes.SCT.CalcificationOfBreast
ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
MAMMOGRAPHY = codes.SCT.Mammography
BREASTS = {"L": codes.SCT.LeftBreast, "R": codes.SCT.RightBreast}
BREAST = codes.SCT.Breast
DEVICE = codes.DCM.Device
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
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
