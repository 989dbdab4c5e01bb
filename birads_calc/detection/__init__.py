"""Finding calcifications on mammograms nobody has outlined: breast, specks, regions (DESIGN §10; issue 14).

Stage: detection, level 2. It owns the detector (``breast``: where the breast is, or a crop; ``specks``:
candidate calcifications; ``features``: what is measured of each; ``ranking``: the learned second stage that
says how likely each candidate is a calcification, shipped as ``ranker.pt``; ``regions``: likely specks grouped
by the BI-RADS distribution terms, with a score; ``detect``: the stages in order), the ``detect`` tool
(``tool``), ``detect-train`` (``train``: the ranker's training recipe), the ``predict --detect`` helpers
(``predict``) and the FROC matching used by the benchmark and the tests (``evaluate``). It may import the
foundations (``categories``, ``errors``, ``io``, ``runs``) and ``data``, ``metrics`` and ``losses``; the command
line calls into it.

Public API (``birads_calc.clinical`` relies on it)::

    from birads_calc.detection import detect_image, ImageDetection, Region
    result = detect_image(pixels, pixel_spacing)  # float32 [H, W] (MONOCHROME2), (row_mm, col_mm)
    result.regions  # list[Region], best score first; empty when none found (region.mask: bool [H, W])
    result.reason   # why nothing was found ("breast not found", "no calcification found"), else None
"""

from birads_calc.detection.detect import ImageDetection, Region, detect_image

__all__ = ["ImageDetection", "Region", "detect_image"]
