"""The Mammography CAD SR (TID 4000 "Mammography CAD Document Root"): the marks a mammography workstation shows.

Written only with ``--cad_sr``: a workstation presents the CAD marks of a study to the radiologist, and a research
model's marks there are easily mistaken for an approved CAD product's; the TID 1500 SR is what a research viewer
reads. Each rated region becomes a single image finding "Calcification Cluster" (TID 4006, CID 6014) with its
outline (SCOORD POLYLINE rectangle, as in the TID 1500 SR) and centre (SCOORD POINT) on the mammogram of the Image
Library, the detector's score as "Certainty of Finding" (percent, detected regions only), and the BI-RADS category
as the "Assessment Category" of its Individual Impression/Recommendation (TID 4003), whose Rendering Intent is
"Presentation Optional" (a workstation may show it, need not). The algorithm (TID 4019) is named ``birads-calc ...
(NOT FOR CLINICAL USE ...)``, as are the series description and the Content Qualification (RESEARCH).
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm
from pydicom.uid import generate_uid

import birads_calc
from birads_calc.clinical import codes
from birads_calc.clinical.results import (
    NOT_FOR_CLINICAL_USE,
    ModelInfo,
    RatedRegion,
    StudyResults,
    centre,
    outline,
    series_numbers,
)
from birads_calc.clinical.studies import OUR_MANUFACTURER, Study

MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
REPORT = hd.sr.CodedConcept("111036", "DCM", "Mammography CAD Report")
FINDINGS_SUMMARY = hd.sr.CodedConcept("111017", "DCM", "CAD Processing and Findings Summary")
ALL_SUCCEEDED_WITH_FINDINGS = hd.sr.CodedConcept("111242", "DCM", "All algorithms succeeded; with findings")
IMAGE_LIBRARY = hd.sr.CodedConcept("111028", "DCM", "Image Library")
INDIVIDUAL = hd.sr.CodedConcept("111034", "DCM", "Individual Impression/Recommendation")
SINGLE_IMAGE_FINDING = hd.sr.CodedConcept("111059", "DCM", "Single Image Finding")
RENDERING_INTENT = hd.sr.CodedConcept("111056", "DCM", "Rendering Intent")
PRESENTATION_OPTIONAL = hd.sr.CodedConcept("111151", "DCM", "Presentation Optional: Rendering device may present")
CENTER = hd.sr.CodedConcept("111010", "DCM", "Center")
OUTLINE = hd.sr.CodedConcept("111041", "DCM", "Outline")
DETECTIONS = hd.sr.CodedConcept("111064", "DCM", "Summary of Detections")
ANALYSES = hd.sr.CodedConcept("111065", "DCM", "Summary of Analyses")
SUCCEEDED = hd.sr.CodedConcept("111222", "DCM", "Succeeded")
NOT_ATTEMPTED = hd.sr.CodedConcept("111225", "DCM", "Not Attempted")
DETECTION_PERFORMED = hd.sr.CodedConcept("111063", "DCM", "Successful Detections")
CALCIFICATION_DETECTION = hd.sr.CodedConcept("111087", "DCM", "Calcification Detection")
ALGORITHM_NAME = hd.sr.CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = hd.sr.CodedConcept("111003", "DCM", "Algorithm Version")
R = hd.sr.RelationshipTypeValues


def cad_report(study: Study, results: StudyResults, model: ModelInfo, rated: list[RatedRegion]) -> Dataset:
    """The Mammography CAD SR of a study's rated regions (see the module docstring)."""
    name = f"birads-calc {model.run} ({NOT_FOR_CLINICAL_USE})"
    algorithm = [
        hd.sr.TextContentItem(ALGORITHM_NAME, name, relationship_type=R.HAS_PROPERTIES),
        hd.sr.TextContentItem(ALGORITHM_VERSION, birads_calc.__version__, relationship_type=R.HAS_PROPERTIES),
    ]
    library = _plain(
        hd.sr.ContainerContentItem(IMAGE_LIBRARY, relationship_type=R.CONTAINS),
        [_image(x, R.CONTAINS) for x in study.images],
    )
    summary = _plain(
        hd.sr.CodeContentItem(FINDINGS_SUMMARY, ALL_SUCCEEDED_WITH_FINDINGS, relationship_type=R.CONTAINS),
        [_individual(item) for item in rated],
    )
    performed = _plain(
        hd.sr.CodeContentItem(CALCIFICATION_DETECTION, SUCCEEDED, relationship_type=R.INFERRED_FROM), algorithm
    )
    detections = _plain(hd.sr.CodeContentItem(DETECTIONS, SUCCEEDED, relationship_type=R.CONTAINS), [performed])
    analyses = hd.sr.CodeContentItem(ANALYSES, NOT_ATTEMPTED, relationship_type=R.CONTAINS)
    root = _plain(hd.sr.ContainerContentItem(REPORT, template_id="4000"), [summary, library, detections, analyses])
    _, _, number = series_numbers(study)
    report = hd.sr.ComprehensiveSR(
        evidence=study.images,
        content=root,
        series_instance_uid=generate_uid(),
        series_number=number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=OUR_MANUFACTURER,
        is_complete=True,
        series_description=f"BI-RADS CAD marks, {NOT_FOR_CLINICAL_USE}"[:64],
        content_qualification="RESEARCH",
    )
    _unname_images(report.ContentSequence)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = MAMMOGRAPHY_CAD_SR
    return report


def _image(ds: Dataset, relationship) -> hd.sr.ImageContentItem:
    """An IMAGE item; its concept name is removed once the document is built (``_unname_images``)."""
    return hd.sr.ImageContentItem(
        dcm.DCM.SourceImage, str(ds.SOPClassUID), str(ds.SOPInstanceUID), relationship_type=relationship
    )


def _unname_images(items) -> None:
    """TID 4020 (library entry) and TID 320 (selected from) have IMAGE items without a concept name; highdicom's
    content items always carry one (and its evidence search needs it), so it is taken off the finished tree."""
    for item in items:
        if item.get("ValueType") == "IMAGE" and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence
        _unname_images(item.get("ContentSequence", []))


def _plain(item: Dataset, children=None) -> Dataset:
    """A content item with ``children`` as its content."""
    if children is not None:
        item.ContentSequence = list(children)
    return item


def _individual(item: RatedRegion) -> Dataset:
    """TID 4003: the region's single image finding and its BI-RADS assessment."""
    reference = _image(item.region.image, R.SELECTED_FROM)
    properties = []
    for name, graphic_type, data in ((CENTER, "POINT", centre), (OUTLINE, "POLYLINE", outline)):
        scoord = hd.sr.ScoordContentItem(name, graphic_type, data(item.region.mask), relationship_type=R.HAS_PROPERTIES)
        properties.append(_plain(scoord, [reference]))
    if item.region.score is not None:
        certainty = round(100 * item.region.score, 2)
        properties.append(
            hd.sr.NumContentItem(codes.CERTAINTY, certainty, codes.PERCENT, relationship_type=R.HAS_PROPERTIES)
        )
    finding = _plain(
        hd.sr.CodeContentItem(SINGLE_IMAGE_FINDING, codes.CLUSTER, relationship_type=R.CONTAINS),
        [
            hd.sr.CodeContentItem(RENDERING_INTENT, PRESENTATION_OPTIONAL, relationship_type=R.HAS_CONCEPT_MOD),
            *properties,
        ],
    )
    intent = hd.sr.CodeContentItem(RENDERING_INTENT, PRESENTATION_OPTIONAL, relationship_type=R.HAS_CONCEPT_MOD)
    assessment = hd.sr.CodeContentItem(
        codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[item.category], relationship_type=R.CONTAINS
    )
    return _plain(hd.sr.ContainerContentItem(INDIVIDUAL, relationship_type=R.CONTAINS), [intent, finding, assessment])
