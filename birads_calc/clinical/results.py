"""The results of a study as DICOM objects built with highdicom: SEG(s) of the rated regions and a TID 1500 SR.

* SEG: one segment per rated region (label ``region-N``, as ``lesion_id`` in predictions.csv). highdicom builds a
  SEG over the images of one series, so a study whose views are separate series gets one SEG per series.
* SR: a Comprehensive 3D SR holding a TID 1500 Measurement Report with, per region, a TID 1411 planar ROI group
  (tracking identifier ``region-N``, the SEG segment and its source image, finding site = the breast, the BI-RADS
  category as a coded "Assessment Category", the risk score as a numeric measurement) and, per breast, a TID 1501
  group with its highest category. The algorithm identification names the model (config) and the checkpoint
  (path and SHA-256); the series description, the algorithm name and ``ContentQualification`` RESEARCH state that
  the results are not for clinical use.

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

NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE (research software)"
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 9101, 9102


@dataclass(frozen=True)
class ModelInfo:
    """What made the ratings: the config name, the checkpoint (as given) and its SHA-256."""

    config: str
    checkpoint: str
    sha256: str

    def algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=f"birads-calc {self.config} ({NOT_FOR_CLINICAL_USE})",  # TEXT items: no length limit
            version=birads_calc.__version__,
            parameters=[f"checkpoint {self.checkpoint}", f"sha256 {self.sha256}"],
        )


@dataclass(frozen=True)
class RatedRegion:
    """A region and its rating (a predictions.csv row: ``lesion_id``, ``birads_pred``, ``risk``)."""

    region: Region
    row: Mapping


def study_results(study: Study, rated: Sequence[RatedRegion], breasts: Sequence[Mapping], model: ModelInfo):
    """The SEG(s) and the SR of one study, as ``(segs, sr)``."""
    by_series: dict[str, list[RatedRegion]] = {}
    for item in rated:
        by_series.setdefault(str(item.region.image.SeriesInstanceUID), []).append(item)
    segs = [build_seg(study, members, model, number) for number, members in enumerate(by_series.values(), 1)]
    return segs, build_sr(study, by_series, segs, breasts, model)


def build_seg(study: Study, rated: Sequence[RatedRegion], model: ModelInfo, instance: int) -> hd.seg.Segmentation:
    """One BINARY SEG over the images of one series, a segment per rated region (label = its ``lesion_id``)."""
    series = rated[0].region.image.SeriesInstanceUID
    return segmentation(
        [x for x in study.images if x.SeriesInstanceUID == series],
        [(item.region.image, item.region.mask, str(item.row["lesion_id"])) for item in rated],
        manufacturer=OUR_MANUFACTURER,
        model_name=model.config,
        instance=instance,
        description=f"BI-RADS calcification regions, {NOT_FOR_CLINICAL_USE}",
        detected=not rated[0].region.source.startswith("SEG"),
    )


def segmentation(
    images: Sequence[Dataset],
    segments: Sequence[tuple[Dataset, np.ndarray, str]],
    manufacturer: str,
    model_name: str,
    instance: int = 1,
    description: str = "Calcification regions",
    detected: bool = False,
) -> hd.seg.Segmentation:
    """A BINARY SEG over ``images`` (one series) with a segment per ``(image, bool mask, label)``.

    ``detected``: the regions came from the detector (algorithm type AUTOMATIC) rather than a reader (MANUAL).
    """
    rows, columns = int(images[0].Rows), int(images[0].Columns)
    pixels = np.zeros((len(images), rows, columns, len(segments)), dtype=bool)
    position = {x.SOPInstanceUID: i for i, x in enumerate(images)}
    algorithm = hd.AlgorithmIdentificationSequence(
        name="birads-calc detector", version=birads_calc.__version__, family=codes.ARTIFICIAL_INTELLIGENCE
    )
    descriptions = []
    for k, (image, mask, label) in enumerate(segments):
        pixels[position[image.SOPInstanceUID], :, :, k] = mask
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=k + 1,
                segment_label=label,
                segmented_property_category=codes.ABNORMAL_STRUCTURE,
                segmented_property_type=codes.CALCIFICATION,
                algorithm_type="AUTOMATIC" if detected else "MANUAL",
                algorithm_identification=algorithm if detected else None,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance,
        manufacturer=manufacturer,
        manufacturer_model_name=model_name[:64],
        software_versions=birads_calc.__version__,
        device_serial_number="0",
        series_description=description[:64],
        content_label="CALCIFICATIONS",
        content_description=description[:64],
        content_creator_name="birads-calc^",
        content_qualification="RESEARCH",
    )
    # General Image module: Patient Orientation is required (Type 2C) for an image without a patient-based frame
    # of reference, as a mammogram's SEG is; highdicom leaves it out, so it is taken from the source image.
    seg.PatientOrientation = images[0].get("PatientOrientation", "")
    return seg


def build_sr(
    study: Study,
    by_series: Mapping[str, Sequence[RatedRegion]],
    segs: Sequence[hd.seg.Segmentation],
    breasts: Sequence[Mapping],
    model: ModelInfo,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of the study (see the module docstring)."""
    algorithm = model.algorithm()
    groups: list = []
    for members, seg in zip(by_series.values(), segs, strict=True):
        for number, item in enumerate(members, 1):
            groups.append(_region_group(item, seg, number, algorithm))
    groups += [_breast_group(breast, algorithm) for breast in breasts]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["birads-calc", model.config, model.sha256]),
        name="birads-calc",
        manufacturer_name=OUR_MANUFACTURER,
        model_name=model.config[:64],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DEVICE, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.MAMMOGRAPHY,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*study.images, *segs],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=OUR_MANUFACTURER,
        is_complete=True,
        series_description=f"BI-RADS calcification report, {NOT_FOR_CLINICAL_USE}"[:64],
        coding_schemes=codes.CODING_SCHEMES,
        content_qualification="RESEARCH",
    )


def _finding_sites(laterality: str) -> list[hd.sr.FindingSite]:
    return [hd.sr.FindingSite(codes.BREASTS[laterality])] if laterality in codes.BREASTS else []


def _assessment(category: str) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(codes.ASSESSMENT_CATEGORY, codes.BIRADS_CODES[category])


def _region_group(item: RatedRegion, seg: hd.seg.Segmentation, segment: int, algorithm):
    row = item.row
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=str(row["lesion_id"])),
        referenced_segment=_segment_reference(seg, segment, item.region.image),
        finding_type=codes.CALCIFICATION,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(str(row["laterality"])),
        measurements=[
            hd.sr.Measurement(
                name=codes.RISK_SCORE, value=float(row["risk"]), unit=codes.NO_UNITS, algorithm_id=algorithm
            )
        ],
        qualitative_evaluations=[_assessment(str(row["birads_pred"]))],
    )


def _segment_reference(seg: hd.seg.Segmentation, segment: int, image: Dataset) -> hd.sr.ReferencedSegmentationFrame:
    """The SEG frame of a segment and its source image, as PS3.3 C.18.4 wants the references.

    Built with the constructor, not ``from_segmentation``, which fails on a SEG of a single frame (its segment
    identification then sits in the shared functional groups). highdicom writes both the frame and the segment
    number into the reference to the SEG; the standard allows a segment number only where no frame number is
    given (dciodvfy reports it), so the segment number is removed: the frame identifies the segment.
    """
    reference = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=frame_of_segment(seg, segment),
        segment_number=segment,
        source_image=hd.sr.SourceImageForSegmentation(image.SOPClassUID, image.SOPInstanceUID),
    )
    del reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
    return reference


def frame_of_segment(seg: Dataset, segment: int) -> int:
    """The (1-based) frame of a segment in a SEG whose segments each cover one image."""
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, 1):
        identification = item.get("SegmentIdentificationSequence") or shared
        if int(identification[0].ReferencedSegmentNumber) == segment:
            return number
    raise ValueError(f"segment {segment} has no frame in the SEG")


def segment_of_frame(seg: Dataset, frame: int) -> int:
    """The segment number a SEG frame belongs to."""
    item = seg.PerFrameFunctionalGroupsSequence[frame - 1]
    identification = item.get("SegmentIdentificationSequence") or seg.SharedFunctionalGroupsSequence[0].get(
        "SegmentIdentificationSequence"
    )
    return int(identification[0].ReferencedSegmentNumber)


def _breast_group(breast: Mapping, algorithm) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    laterality = str(breast["laterality"])
    name = {"L": "left breast", "R": "right breast"}.get(laterality, f"image {breast['image']}")
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{name}: highest category"),
        finding_type=codes.BREAST,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(laterality),
        qualitative_evaluations=[_assessment(str(breast["birads_max"]))],
    )
