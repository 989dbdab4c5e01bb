"""The calcification regions of a study: from its own SEGs where their segments are coded as calcifications, and
from the detector (``--detect``) on the mammograms no such SEG covers; else an error naming the study.

Regions are numbered in a fixed order, whatever order the PACS answered in: by image (series, then instance
number, as ``studies.select`` sorts them), then by the SEG's segment number (or the detector's score). A reader's
segment label is kept and written into the SR group of its region.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from birads_calc.clinical.codes import is_calcification
from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.studies import Study, describe, write_instance
from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.errors import InputError


@dataclass
class Region:
    """One calcification region to rate: its image, its mask on that image and where it came from.

    Attributes:
        label: the reader's segment label (``None`` for a detector region).
        score: the detector's score in (0, 1) (``None`` for a reader's region).
    """

    image: Dataset
    mask: np.ndarray  # bool [rows, columns] of the image
    source: str  # "SEG segment 3" / "detector region 2"
    label: str | None = None
    score: float | None = None

    @property
    def detected(self) -> bool:
        return self.score is not None


def study_regions(
    study: Study, detect: bool = False, detector: Callable | None = None, pixel_spacing: float | None = None
) -> list[Region]:
    """Every region of the study, in the order of the module docstring.

    Args:
        detect: run the detector on the mammograms no calcification SEG covers.
        detector: ``detect_image(pixels, spacing)`` (``birads_calc.detection``; imported by the caller only when
            asked, it is the slowest import of the path).
        pixel_spacing: mm per pixel for a mammogram that records none (``--pixel_spacing``).

    Raises:
        ClinicalError: a SEG that does not fit its images, or a mammogram with no region source at all.
    """
    found = [region for seg in study.segs for region in seg_regions(study, seg)]
    covered = {str(r.image.SOPInstanceUID) for r in found}
    uncovered = [image for image in study.images if str(image.SOPInstanceUID) not in covered]
    if detect and uncovered:
        found += detected_regions(study, uncovered, detector, pixel_spacing)
    elif not found:
        why = "; ".join(study.notes) or "none"
        raise ClinicalError(
            f"{study.key} (study {study.uid}) has no DICOM SEG of its calcifications (objects left out: {why}): draw "
            "them in a viewer and store the SEG in the study, or pass --detect to find them with the detector"
        )
    order = {str(image.SOPInstanceUID): n for n, image in enumerate(study.images)}
    return sorted(found, key=lambda r: order[str(r.image.SOPInstanceUID)])  # stable: segment / score order kept


def seg_regions(study: Study, ds: Dataset) -> list[Region]:
    """One region per (calcification segment, rated image) of the SEG with pixels on that image."""
    try:
        seg = read_seg(ds)
        sources = seg.get_source_image_uids()
    except (AttributeError, ValueError, KeyError, TypeError) as error:
        raise ClinicalError(f"{study.key}: its SEG cannot be read as a DICOM Segmentation ({error})") from None
    wanted = [s for s in ds.SegmentSequence if is_calcification(s)]
    if len(wanted) < len(ds.SegmentSequence):
        study.notes.append(
            f"{describe(ds)}: {len(ds.SegmentSequence) - len(wanted)} of its segments are not calcifications, ignored"
        )
    numbers = [int(s.SegmentNumber) for s in wanted]
    regions = []
    for _, _, sop_uid in sources:
        image = study.image(sop_uid)
        if image is None:
            continue  # a SEG of an image not rated (e.g. a 'for processing' one)
        if (seg.Rows, seg.Columns) != (image.Rows, image.Columns):
            raise ClinicalError(
                f"{study.key}: its SEG's frames are {seg.Rows}x{seg.Columns} pixels but the mammogram they refer to "
                f"is {image.Rows}x{image.Columns}: the SEG was not drawn on this image"
            )
        try:
            pixels = seg.get_pixels_by_source_instance(
                [sop_uid], segment_numbers=numbers, combine_segments=False, ignore_spatial_locations=True,
                dtype=np.uint8,
            )[0]  # fmt: skip
        except (ValueError, KeyError, IndexError, RuntimeError) as error:
            raise ClinicalError(f"{study.key}: the frames of its SEG do not match the mammogram ({error})") from None
        for k, number in enumerate(numbers):
            if pixels[..., k].any():
                label = str(seg.get_segment_description(number).SegmentLabel)
                regions.append(Region(image, pixels[..., k] > 0, f"SEG segment {number}", label=label))
    return regions


def read_seg(ds: Dataset) -> hd.seg.Segmentation:
    """A SEG dataset as a highdicom Segmentation (a copy: the input stays as it was).

    A SEG of projection images (mammograms) has pixel spacing but no slice thickness, which the standard allows
    (Type 1C, for volumes only) and highdicom writes, yet ``Segmentation.from_dataset`` insists on it; the pixel
    measures are not needed to read the frames, so a copy without them is read instead.
    """
    ds = copy.deepcopy(ds)
    for group in [*ds.get("SharedFunctionalGroupsSequence", []), *ds.get("PerFrameFunctionalGroupsSequence", [])]:
        measures = group.get("PixelMeasuresSequence")
        if measures and "SliceThickness" not in measures[0]:
            del group.PixelMeasuresSequence
    return hd.seg.Segmentation.from_dataset(ds, copy=False)


def detected_regions(study: Study, images, detector: Callable | None, pixel_spacing: float | None) -> list[Region]:
    """The detector's regions on each of ``images`` (empty where it finds none).

    The image is decoded by the data stage's reader (modality and VOI LUT, MONOCHROME1, magnification), as the
    detector expects; its sizes are millimetres, so a mammogram without spacing needs ``--pixel_spacing``.
    """
    if detector is None:
        from birads_calc.detection import detect_image as detector
    regions = []
    with tempfile.TemporaryDirectory(prefix="birads-calc-detect-") as folder:
        for ds in images:
            name = describe(ds)
            path = write_instance(Path(folder) / "image.dcm", ds)
            try:
                image = read_image(path)
            except ImageReadError as error:
                raise ClinicalError(f"{study.key}: {name} cannot be decoded ({error})") from None
            spacing = image.pixel_spacing or ((pixel_spacing, pixel_spacing) if pixel_spacing else None)
            if spacing is None:
                raise ClinicalError(
                    f"{study.key}: {name} records no pixel spacing, which the detector needs (its sizes are mm): "
                    "give it with --pixel_spacing MM"
                )
            try:
                found = detector(image.pixels, spacing)
            except InputError as error:  # a spacing the detector refuses (outside 0.02-1 mm): this study only
                raise ClinicalError(f"{study.key}: {name}: {error}") from None
            regions += [
                Region(ds, region.mask, f"detector region {region.region_id}", score=float(region.score))
                for region in found.regions
            ]
    return regions
