"""mini-MIAS -> manifest: one row per calcification circle of ``Info.txt``, mask = specks found in the circle.

``Info.txt`` lines read ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]`` after a free-text header, one line per
abnormality (an image may have several). Quirks handled:

* the coordinate origin is the bottom-left corner: pixel row = image height - Y, column = X;
* ``*NOTE 3*`` lines (calcifications spread over the whole breast) have no centre or radius: reported;
* lines of other classes (masses, distortions, asymmetries, NORM) are reported as not calcifications;
* there is no BI-RADS category: the ``birads`` column stays empty, severity B/M gives the pathology, so the
  manifest serves ``predict`` and malignancy evaluation, not ``fit``/``test``;
* the images are 200 micron per pixel (Info.txt), which sets the detector's physical scale;
* film pairs: files 2k-1 and 2k are the two breasts of one patient (Info.txt note 1), so the patient id is the
  pair number. Laterality is left empty: the film markers contradict the stated even = left rule.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from birads_calc.data.adapters import Conversion, ConversionError, find_files, manifest_path, require_dir
from birads_calc.data.adapters.calcifications import DEFAULT_DETECTOR, SpeckDetector, circle, find_calcifications
from birads_calc.data.dicom import ImageReadError, read_image
from birads_calc.data.masks import write_mask
from birads_calc.progress import track

LINE = re.compile(r"^(mdb\d{3})\s")
PATHOLOGY = {"B": "benign", "M": "malignant"}
PIXEL_SPACING_MM = 0.2  # "reduced to 200 micron pixel edge" (Info.txt)
# Film background is near black and breast tissue far brighter; a circle whose median gray is below this lies
# off the breast (mdb212 and mdb214 of the real set: an annotation error, not a detector miss).
BACKGROUND_GRAY = 0.1


def read_info(path: Path) -> list[tuple[int, list[str]]]:
    """The data lines of ``Info.txt`` as (line number, whitespace-split fields); the free-text header is skipped."""
    try:
        text = Path(path).read_text(encoding="latin-1")
    except OSError as error:
        raise ConversionError(f"cannot read {path}: {error.strerror}") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if LINE.match(line)]


def convert(
    src: Path,
    out: Path,
    info: Path | None = None,
    detector: SpeckDetector = DEFAULT_DETECTOR,
) -> Conversion:
    """Convert a mini-MIAS folder (``Info.txt`` + ``mdbNNN.pgm`` anywhere below ``src``).

    Args:
        src: the mini-MIAS folder.
        out: the manifest to write; masks go to ``<its folder>/masks/mini-mias/``.
        info: the ground-truth file (default: ``src/Info.txt``).
        detector: how calcification pixels are found inside each circle (at 0.2 mm per pixel).
    """
    src = require_dir(Path(src), "mini-MIAS folder")
    info = Path(info) if info else src / "Info.txt"
    images = {p.stem.lower(): p for p in find_files(src, [".pgm"])}
    result = Conversion()
    count: dict[str, int] = {}
    for number, fields in track(read_info(info), "convert mini-mias", unit="line"):
        ref, where = fields[0], f"{info.name} line {number}"
        count[ref] = count.get(ref, 0) + 1
        if len(fields) < 3 or fields[2] != "CALC":
            kind = fields[2] if len(fields) > 2 else "?"
            result.skip(where, f"not a calcification (class {kind})", ref)
            continue
        if len(fields) < 7 or not all(f.isdigit() for f in fields[4:7]):
            result.skip(where, "no centre/radius (*NOTE 3*: calcifications spread over the breast)", ref)
            continue
        if ref not in images:
            result.skip(where, "image not found", f"{ref}.pgm under {src}")
            continue
        try:
            image = read_image(images[ref])
        except ImageReadError as error:
            result.skip(where, "unreadable image", str(error))
            continue
        x, y, radius = (int(f) for f in fields[4:7])
        shape = image.pixels.shape
        region = circle(shape, shape[0] - y, x, radius)  # origin bottom-left
        if float(np.median(image.pixels[region])) < BACKGROUND_GRAY:
            result.skip(where, "circle lies on the film background, outside the breast", ref)
            continue
        mask = find_calcifications(image.pixels, region, PIXEL_SPACING_MM, detector)
        if not mask.any():
            result.skip(where, "no calcification found by the detector inside the circle", ref)
            continue
        lesion_id = f"{ref}_{count[ref]}"
        mask_path = write_mask(Path(out).parent / "masks" / "mini-mias" / f"{lesion_id}.png", mask)
        result.rows.append(
            {
                "patient_id": f"mias_{(int(ref[3:]) + 1) // 2:03d}",
                "image": manifest_path(images[ref], Path(out).parent),
                "mask": manifest_path(mask_path, Path(out).parent),
                "birads": "",
                "pathology": PATHOLOGY.get(fields[3], ""),
                "lesion_id": lesion_id,
                "view": "MLO",
            }
        )
    return result
