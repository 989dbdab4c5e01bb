"""The calcification regions of a study: from a DICOM SEG in it (one segment per calcification), else the
detector when asked (``--detect``), else an error naming the study.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.studies import Study, write_instance
from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.detection import detect_image


@dataclass
class Region:
    """One calcification region to rate: its image, its mask on that image and where it came from."""

    image: Dataset
    mask: np.ndarray  # bool [rows, columns] of the image
    source: str  # "SEG segment 3" / "detector"


def study_regions(study: Study, detect: bool = False) -> list[Region]:
    """The regions of every image of the study, SEG first (see the module docstring).

    Raises:
        ClinicalError: a SEG that does not fit its images, or no region source at all.
    """
    if study.segs:
        regions = [region for seg in study.segs for region in seg_regions(study, seg)]
        if not regions:
            raise ClinicalError(f"{study.key} (study {study.uid}): its SEG has no segment on a mammogram of the study")
        return regions
    if detect:
        return detected_regions(study)
    raise ClinicalError(
        f"{study.key} (study {study.uid}) has no DICOM SEG of its calcifications: draw them in a viewer and store "
        "the SEG in the study, or pass --detect to find them with the detector"
    )


def seg_regions(study: Study, ds: Dataset) -> list[Region]:
    """One region per (segment, image) of the SEG that has pixels on one of the study's mammograms."""
    try:
        seg = read_seg(ds)
        sources = seg.get_source_image_uids()
    except (AttributeError, ValueError, KeyError, TypeError) as error:
        raise ClinicalError(f"{study.key}: its SEG cannot be read as a DICOM Segmentation ({error})") from None
    regions = []
    for _, _, sop_uid in sources:
        image = study.image(sop_uid)
        if image is None:
            continue  # a SEG of another image (e.g. a 'for processing' one): not what birads-calc rates
        if (seg.Rows, seg.Columns) != (image.Rows, image.Columns):
            raise ClinicalError(
                f"{study.key}: its SEG's frames are {seg.Rows}x{seg.Columns} pixels but the mammogram they refer to "
                f"is {image.Rows}x{image.Columns}: the SEG was not drawn on this image"
            )
        try:
            pixels = seg.get_pixels_by_source_instance(
                [sop_uid], combine_segments=False, ignore_spatial_locations=True, dtype=np.uint8
            )[0]
        except (ValueError, KeyError, IndexError, RuntimeError) as error:
            raise ClinicalError(f"{study.key}: the frames of its SEG do not match the mammogram ({error})") from None
        for k, number in enumerate(seg.segment_numbers):
            if pixels[..., k].any():
                regions.append(Region(image, pixels[..., k] > 0, f"SEG segment {number}"))
    return regions


def read_seg(ds: Dataset) -> hd.seg.Segmentation:
    """A SEG dataset as a highdicom Segmentation (a copy: the input stays as it was).

    A SEG of projection images (mammograms) has pixel spacing but no slice thickness, which the standard allows
    (Type 1C, for volumes only) and highdicom writes, yet ``Segmentation.from_dataset`` insists on it; the pixel
    measures are not needed to read the frames, so a copy without them is read instead.
    """
    ds = copy.deepcopy(ds)
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        measures = group.get("PixelMeasuresSequence")
        if measures and "SliceThickness" not in measures[0]:
            del group.PixelMeasuresSequence
    return hd.seg.Segmentation.from_dataset(ds, copy=False)


def detected_regions(study: Study) -> list[Region]:
    """The detector's regions on each mammogram (``birads_calc.detection``); empty when it finds none anywhere.

    The image is decoded by the data stage's reader (modality and VOI LUT, MONOCHROME1), as the detector expects.
    """
    regions = []
    with tempfile.TemporaryDirectory(prefix="birads-calc-detect-") as folder:
        for n, ds in enumerate(study.images, 1):
            path = write_instance(Path(folder) / f"image-{n}.dcm", ds)
            try:
                image = read_image(path)
            except ImageReadError as error:
                raise ClinicalError(f"{study.key}: mammogram {n} cannot be decoded ({error})") from None
            if image.pixel_spacing is None:
                raise ClinicalError(
                    f"{study.key}: mammogram {n} records no pixel spacing, which the detector needs (its sizes are mm)"
                )
            found = detect_image(image.pixels, image.pixel_spacing)
            regions += [Region(ds, region.mask, f"detector region {region.region_id}") for region in found.regions]
    return regions
