"""The results of a study as DICOM objects built with highdicom: a SEG per rated image and a TID 1500 SR.

* **SEG**: one per source mammogram (a mammogram has no Frame of Reference, so highdicom builds a SEG over one
  image; any number of images per series works). One segment per rated region: label = the reader's segment label
  or ``region-K`` (``lesion_id`` in predictions.csv); category "Morphologically abnormal structure", type
  "Calcification cluster"; anatomic region "Breast" with the image's laterality; a display colour per BI-RADS
  category; Tracking ID/UID shared with the region's SR group; Pixel Measures from the image's spacing at the breast
  (PixelSpacing, else ImagerPixelSpacing corrected for magnification). All SEGs of one run form one series.
* **SR** (Comprehensive 3D SR, TID 1500 "Imaging Measurement Report", with an Image Library of the mammograms):
  per region a TID 1410 planar ROI group: Tracking Identifier (the label) and Tracking UID (the SEG segment's),
  finding "Calcification cluster", finding site = the breast, the region as **Image Region** = a closed SCOORD
  POLYLINE rectangle around it on the source image, the risk score (NUM, private code) inferred from that rectangle
  and from a SCOORD POINT at the region's centre, the detector's score as "Certainty of Finding" (percent; detected
  regions only), the BI-RADS category as "Assessment Category", and a "Comment" text ``region-1: BI-RADS 4A (risk
  0.49)`` that viewers show as the mark's label. Per breast its highest category, in the report's "Qualitative
  Evaluations" container (:func:`breast_evaluations`).
* **Why a rectangle**: OHIF's SR reader (``@cornerstonejs/adapters``) turns a POLYLINE into a measurement without
  viewer-specific tracking identifiers only when it has 4 or 5 points (a rectangle; a CAD workstation marks a
  calcification cluster the same way); the exact outline is the SEG segment.
* **What made it**: algorithm "birads-calc <run> (NOT FOR CLINICAL USE ...)", its version, the checkpoint's run
  name and SHA-256 (never a path of this machine); ``ContentQualification`` RESEARCH and the series descriptions
  say it is not for clinical use.
* **Repeated runs** add results: new series numbers above every number the study uses, and the SR names the last
  birads-calc SR of the study in Predecessor Documents (the earlier results stay on the PACS; a reader sees the
  history).

Both copy the patient and study modules from the source images (so they file into the same study) and nothing
identifying leaves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import birads_calc
from birads_calc.clinical import codes
from birads_calc.clinical.regions import Region
from birads_calc.clinical.studies import OUR_MANUFACTURER, Study
from birads_calc.data.dicom import dicom_spacing

NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE (research software)"
FIRST_SERIES_NUMBER = 9101  # results go above the acquisition series, and above every number the study uses


@dataclass(frozen=True)
class ModelInfo:
    """What made the ratings: the run (``proposed/version_1 best.ckpt``) and the checkpoint's SHA-256; with
    ``--detect``, the SHA-256 of the detector's ranker file (the shipped one or ``--detect_weights``)."""

    run: str
    sha256: str
    detector_sha256: str = ""

    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=f"birads-calc {self.run} ({NOT_FOR_CLINICAL_USE})",  # TEXT items: no length limit
            version=birads_calc.__version__,
            parameters=[f"checkpoint sha256 {self.sha256}"],
        )


@dataclass(frozen=True)
class RatedRegion:
    """A region, its name (``region-K`` or the reader's label) and its rating (a predictions.csv row)."""

    region: Region
    row: Mapping
    tracking_uid: str

    @property
    def label(self) -> str:
        return self.region.label or str(self.row["lesion_id"])

    @property
    def category(self) -> str:
        return str(self.row["birads_pred"])


@dataclass
class StudyResults:
    """The result objects of one study, in the order they must be stored (the SR last: it points at the SEGs)."""

    segs: list[hd.seg.Segmentation]
    sr: hd.sr.Comprehensive3DSR
    cad_sr: Dataset | None = None

    def files(self) -> dict[str, Dataset]:
        """File name -> object, as written into ``dicom/study-N/``."""
        files: dict[str, Dataset] = {f"seg-{k}.dcm": seg for k, seg in enumerate(self.segs, 1)}
        files["sr.dcm"] = self.sr
        if self.cad_sr is not None:
            files["cad-sr.dcm"] = self.cad_sr
        return files


def rated_regions(regions: Sequence[Region], rows: Sequence[Mapping]) -> list[RatedRegion]:
    """Pair each region with its predictions.csv row (same order) and a new tracking UID."""
    return [RatedRegion(region, row, generate_uid()) for region, row in zip(regions, rows, strict=True)]


def series_numbers(study: Study) -> tuple[int, int, int]:
    """Series numbers for this run's SEGs, SR and CAD SR: above every number the study already uses."""
    first = max([FIRST_SERIES_NUMBER - 1, *study.series_numbers]) + 1
    return first, first + 1, first + 2


def study_results(study: Study, rated: Sequence[RatedRegion], breasts: Sequence[Mapping], model: ModelInfo):
    """The SEGs (one per rated image) and the SR of one study."""
    seg_number, sr_number, _ = series_numbers(study)
    series_uid = generate_uid()
    by_image: dict[str, list[RatedRegion]] = {}
    for item in rated:
        by_image.setdefault(str(item.region.image.SOPInstanceUID), []).append(item)
    segs = [
        build_seg(members, model, series_uid, seg_number, instance)
        for instance, members in enumerate(by_image.values(), 1)
    ]
    return StudyResults(segs, build_sr(study, rated, breasts, model, sr_number))


def build_seg(rated: Sequence[RatedRegion], model: ModelInfo, series_uid: str, series_number: int, instance: int):
    """The SEG of one image, a segment per rated region (see the module docstring)."""
    return segmentation(
        rated[0].region.image,
        [(item.region.mask, item.label, item.category, item.tracking_uid, item.region.detected) for item in rated],
        manufacturer=OUR_MANUFACTURER,
        model_name=model.run,
        series_uid=series_uid,
        series_number=series_number,
        instance=instance,
        series_text=f"BI-RADS calcification regions, {NOT_FOR_CLINICAL_USE}",
        detector_parameters={"ranker sha256": model.detector_sha256} if model.detector_sha256 else None,
    )


def segmentation(
    image: Dataset,
    segments: Sequence[tuple[np.ndarray, str, str | None, str, bool]],
    manufacturer: str,
    model_name: str,
    series_uid: str | None = None,
    series_number: int = FIRST_SERIES_NUMBER,
    instance: int = 1,
    series_text: str = "Calcification regions",
    detector_parameters: dict[str, str] | None = None,
) -> hd.seg.Segmentation:
    """A BINARY SEG of one mammogram with a segment per ``(mask, label, category, tracking UID, detected)``.

    ``detected``: the region came from the detector (algorithm type AUTOMATIC, family from CID 7162) rather than a
    reader (MANUAL); ``category``: the BI-RADS category that sets the display colour (``None``: not rated).
    ``detector_parameters``: the detector's Algorithm Parameters (which ranker file found the regions).
    """
    rows, columns = int(image.Rows), int(image.Columns)
    pixels = np.zeros((1, rows, columns, len(segments)), dtype=bool)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="birads-calc detector",
        version=birads_calc.__version__,
        family=codes.DETECTOR_FAMILY,
        parameters=detector_parameters,
    )
    laterality = str(image.get("ImageLaterality", "") or image.get("Laterality", ""))
    descriptions = []
    for k, (mask, label, category, tracking_uid, detected) in enumerate(segments):
        pixels[0, :, :, k] = mask
        description = hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=label[:64],
            segmented_property_category=codes.ABNORMAL_STRUCTURE,
            segmented_property_type=codes.CLUSTER,
            algorithm_type="AUTOMATIC" if detected else "MANUAL",
            algorithm_identification=algorithm if detected else None,
            tracking_uid=tracking_uid,
            tracking_id=label[:64],
            anatomic_regions=[codes.BREAST],
            display_color=codes.colour(category),
        )
        if laterality in codes.LATERALITY:
            modifier = hd.sr.CodedConcept.from_code(codes.LATERALITY[laterality])
            description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [modifier]
        descriptions.append(description)
    spacing = dicom_spacing(image)
    seg = hd.seg.Segmentation(
        source_images=[image],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance,
        manufacturer=manufacturer,
        manufacturer_model_name=model_name[:64],
        software_versions=birads_calc.__version__,
        device_serial_number="0",
        series_description=series_text[:64],
        content_label="CALCIFICATIONS",
        content_description=series_text[:64],
        content_creator_name="birads-calc^",
        content_qualification="RESEARCH",
        pixel_measures=hd.PixelMeasuresSequence(spacing, None) if spacing else None,
        omit_empty_frames=False,  # a segment's frame stays even where a mask is tiny: frame k = segment k
    )
    # General Image module: Patient Orientation is required (Type 2C) for an image without a patient-based frame
    # of reference, as a mammogram's SEG is; highdicom leaves it out, so it is taken from the source image.
    seg.PatientOrientation = image.get("PatientOrientation", "")
    return seg


def build_sr(study: Study, rated: Sequence[RatedRegion], breasts: Sequence[Mapping], model: ModelInfo, number: int):
    """The TID 1500 report of the study (see the module docstring)."""
    algorithm = model.algorithm()
    groups: list = [_region_group(item, algorithm) for item in rated]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["birads-calc", model.run, model.sha256]),
        name="birads-calc",
        manufacturer_name=OUR_MANUFACTURER,
        model_name=model.run[:64],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DEVICE, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.MAMMOGRAPHY,
        imaging_measurements=groups,
        referenced_images=library_images(study.images) or None,
    )
    report[0].ContentSequence.append(breast_evaluations(breasts))
    return hd.sr.Comprehensive3DSR(
        evidence=study.images,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=OUR_MANUFACTURER,
        manufacturer_model_name=model.run[:64],
        is_complete=True,
        series_description=f"BI-RADS calcification report, {NOT_FOR_CLINICAL_USE}"[:64],
        coding_schemes=codes.CODING_SCHEMES,
        content_qualification="RESEARCH",
        previous_versions=study.earlier[-1:] or None,  # Predecessor Documents: the last birads-calc SR, if any
    )


def library_images(images: Sequence[Dataset]) -> list[Dataset]:
    """The mammograms of the Image Library (viewers find each mark's image, view and spacing there).

    Its projection-radiography descriptors (TID 1603) need Patient Orientation and Imager Pixel Spacing, both Type 1
    in the mammography IOD; an image lacking them (a converted film, a bare export) is left out of the library
    rather than described with invented values.
    """
    return [x for x in images if len(x.get("PatientOrientation") or []) == 2 and x.get("ImagerPixelSpacing")]


def outline(mask: np.ndarray) -> np.ndarray:
    """The closed rectangle around a mask, one pixel outside it, as SCOORD (column, row) points."""
    rows, columns = np.nonzero(mask)
    top, bottom = rows.min() - 0.5, rows.max() + 1.5
    left, right = columns.min() - 0.5, columns.max() + 1.5
    top, left = max(top, 0.0), max(left, 0.0)
    bottom, right = min(bottom, mask.shape[0]), min(right, mask.shape[1])
    return np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=np.float32)


def centre(mask: np.ndarray) -> np.ndarray:
    """The centre of a mask's pixels as one SCOORD (column, row) point (pixel centres at .5)."""
    rows, columns = np.nonzero(mask)
    return np.array([[columns.mean() + 0.5, rows.mean() + 0.5]], dtype=np.float32)


def label_text(item: RatedRegion) -> str:
    """What a viewer shows beside the mark: ``region-3: BI-RADS 4A (risk 0.49)``, with a reader's label first."""
    name = str(item.row["lesion_id"])
    if item.region.label and item.region.label != name:
        name = f"{item.region.label} ({name})"
    return f"{name}: BI-RADS {item.category} (risk {float(item.row['risk']):.2f})"


def _region_group(item: RatedRegion, algorithm) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    image = item.region.image
    source = hd.sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID))
    box = outline(item.region.mask)
    measurements = [  # the group's algorithm identification covers its measurements
        hd.sr.Measurement(name=codes.RISK_SCORE, value=round(float(item.row["risk"]), 6), unit=codes.NO_UNITS)
    ]
    if item.region.score is not None:
        measurements.append(
            hd.sr.Measurement(name=codes.CERTAINTY, value=round(100 * item.region.score, 2), unit=codes.PERCENT)
        )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=item.tracking_uid, identifier=item.label),
        referenced_region=hd.sr.ImageRegion("POLYLINE", box, source),
        finding_type=codes.CLUSTER,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(str(item.row["laterality"])),
        measurements=measurements,
        qualitative_evaluations=[_assessment(item.category)],
    )
    # TID 300 lets a measurement name the coordinates it was inferred from; highdicom's planar ROI group does not
    # take them, so they are added here: the rectangle and the centre, first among the measurement's children,
    # where viewers' SR readers (OHIF's, @cornerstonejs/adapters) look for them
    for content in group[0].ContentSequence:
        if content.ValueType == "NUM":
            content.ContentSequence = [
                hd.sr.CoordinatesForMeasurement("POLYLINE", box, source),
                hd.sr.CoordinatesForMeasurement("POINT", centre(item.region.mask), source, purpose=codes.CENTER),
                *content.get("ContentSequence", []),
            ]
    comment = hd.sr.TextContentItem(name=codes.COMMENT, value=label_text(item), relationship_type="CONTAINS")
    group[0].ContentSequence.append(comment)
    return group


def _finding_sites(laterality: str) -> list[hd.sr.FindingSite]:
    return [hd.sr.FindingSite(codes.BREASTS[laterality])] if laterality in codes.BREASTS else []


def _assessment(category: str) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[category])


def breast_evaluations(breasts: Sequence[Mapping]) -> hd.sr.ContainerContentItem:
    """TID 1500's "Qualitative Evaluations": per breast its highest category, the finding site as modifier.

    Not measurement groups: a group without coordinates is a "non-geometric measurement" that OHIF lists but, in
    3.13, stops on when it opens the SR in a viewport (it reads the first coordinate of every group).
    """
    items = []
    for breast in breasts:
        evaluation = hd.sr.CodeContentItem(
            codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[str(breast["birads_max"])], relationship_type="CONTAINS"
        )
        site = str(breast["laterality"])
        if site in codes.BREASTS:
            evaluation.ContentSequence = [
                hd.sr.CodeContentItem(codes.FINDING_SITE, codes.BREASTS[site], relationship_type="HAS CONCEPT MOD")
            ]
        items.append(evaluation)
    container = hd.sr.ContainerContentItem(codes.QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = items
    return container
