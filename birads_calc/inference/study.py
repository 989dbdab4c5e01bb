"""Direct inference for one study at a time: image + masks -> centred windows -> model, without the crop cache.

``birads-calc predict`` goes through the data module, which builds the crop cache first: right for a manifest of
many studies (batched, multi-process, DDP), wasted work for a single new study, whose crops are read once. This
module is the one-study path (a reading-room service, the predict benchmark): it decodes the image once, cuts
each lesion's centred window with the same functions the cache uses (``birads_calc.data.roi``; the image and masks
are loaded, and resampled when ``pixel_spacing_mm`` is set, by the cache's own loader), assembles the attention
channels with ``roi.assemble`` and runs the model. The windows are the same pixels the cache would hand out, so
both paths give the same predictions (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from birads_calc.data.cache import CacheSettings, load_image
from birads_calc.data.manifest import Lesion
from birads_calc.data.roi import assemble, bounding_box, centred_window, crop, pack_masks
from birads_calc.training.model import BiradsClassifier


def image_windows(lesions: Sequence[Lesion], settings: CacheSettings) -> tuple[np.ndarray, np.ndarray]:
    """The centred window of each lesion of one image, as the loader ships them.

    Args:
        lesions: the manifest rows of one image (all of them: ``M_all`` is the union of their masks).
        settings: window size, spacing and VOI mode (the data module's).

    Returns:
        uint16 pixels ``[K, W, W]`` and uint8 packed masks ``[K, W, W]`` (bit 0 all calcifications, bit 1 this one).
    """
    images = {x.image for x in lesions}
    if len(images) != 1:
        raise ValueError(f"image_windows takes the lesions of one image, got {len(images)} images")
    pixels, masks = load_image(lesions[0].image, lesions, settings)
    mask_all = np.logical_or.reduce(masks)
    size = settings.window
    out_pixels = np.empty((len(lesions), size, size), dtype=np.uint16)
    out_masks = np.empty((len(lesions), size, size), dtype=np.uint8)
    for k, mask in enumerate(masks):
        top, left = centred_window(bounding_box(mask), size)
        box = (top, left, top + size, left + size)
        out_pixels[k] = crop(pixels, box)
        out_masks[k] = pack_masks(crop(mask_all, box), crop(mask, box))
    return out_pixels, out_masks


@torch.inference_mode()
def predict_lesions(
    model: BiradsClassifier,
    lesions: Sequence[Lesion],
    settings: CacheSettings,
    attention: bool = True,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Risk and class of every lesion, image by image, in the shape the reports take (``index`` = position).

    Args:
        model: a trained model (put in eval mode here); inputs go to its device.
        lesions: manifest rows, any number of images.
        settings: the data module's window / spacing / VOI settings.
        attention: attention-ROI input (the config's ``data.attention``).
        batch_size: windows per forward pass.
    """
    if not lesions:
        raise ValueError("predict_lesions got no lesions")
    model.eval()
    positions: dict[object, list[int]] = {}
    for position, lesion in enumerate(lesions):
        positions.setdefault(lesion.image, []).append(position)
    index, risks, preds = [], [], []
    for members in positions.values():
        pixels, masks = image_windows([lesions[p] for p in members], settings)
        for start in range(0, len(members), batch_size):
            chunk = slice(start, start + batch_size)
            image = assemble(
                torch.from_numpy(pixels[chunk]).to(model.device),
                torch.from_numpy(masks[chunk]).to(model.device),
                attention=attention,
            )
            risk, pred = model.risk_and_class(model(image))
            risks.append(risk.float().cpu())
            preds.append(pred.cpu())
        index += members
    return {
        "index": torch.tensor(index, dtype=torch.long),
        "risk": torch.cat(risks),
        "pred": torch.cat(preds),
        "target": torch.tensor([-1 if lesions[p].label is None else lesions[p].label for p in index]),
        "malignancy": torch.tensor([lesions[p].malignancy for p in index], dtype=torch.float32),
    }
