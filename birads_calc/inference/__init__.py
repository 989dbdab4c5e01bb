"""Inference: rate the calcifications of one study with a trained model, without the crop cache.

Stage: owns the one-study path (``study``: decode once, cut each lesion's centred window with ``data.roi``, run
``training.model.BiradsClassifier``). ``birads-calc predict`` over a whole manifest goes through the data module
instead (``cli``). May import the foundations, ``data``, ``metrics``, ``losses`` and ``training``; never
``reporting`` or ``cli``.
"""

from birads_calc.inference.study import image_windows, predict_lesions

__all__ = ["image_windows", "predict_lesions"]
