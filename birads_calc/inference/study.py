"""Direct inference for one study at a time: image + masks -> centred windows -> model, without the crop cache.

``birads-calc predict`` goes through the data module, which builds the crop cache first: right for a manifest of
many studies (batched, multi-process, DDP), wasted work for a single new study, whose crops are read once. This
module is the one-study path (a reading-room service, the predict benchmark): it decodes the image once, cuts
each lesion's centred window with the same functions the cache uses (``birads_calc.data.roi``; the image and masks
are loaded, and resampled when ``pixel_spacing_mm`` is set, by the cache's own loader), assembles the attention
channels with ``roi.assemble`` and runs the model. The windows are the same pixels the cache would hand out, so
both paths give the same predictions (tested).

:func:`load_rater` reads a checkpoint into a :class:`Rater`: the trained network with the data settings it was
trained with (window, spacing, VOI, attention) and its training spacing record, without Lightning. Importing
Lightning and torchmetrics takes seconds of a command that rates one study in about one; the Rater is
``BiradsClassifier``'s inference (normalise, backbone, risk and class) on the same weights, tested to give the
same outputs, and ``predict_lesions`` takes either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from birads_calc.categories import class_to_risk, risk_to_class
from birads_calc.data.cache import CacheSettings, load_image
from birads_calc.data.manifest import Lesion
from birads_calc.data.roi import assemble, bounding_box, centred_window, crop, pack_masks
from birads_calc.errors import InputError

DATA_SETTINGS = ("window", "stride", "pixel_spacing_mm", "voi")


class CheckpointLoadError(InputError):
    """A checkpoint that cannot be rated with (unreadable, truncated, unsafe, or not a birads-calc model)."""


class Rater(torch.nn.Module):
    """A trained birads-calc network ready to rate: ``forward`` and ``risk_and_class`` as ``BiradsClassifier``'s.

    Attributes:
        settings: the data module's window / stride / spacing / VOI settings and the number of classes.
        attention: attention-ROI input (``data.attention``).
        spacing: the checkpoint's training spacing record (``checkpoint["birads_calc"]["spacing"]``, read as
            ``training.checkpoints.training_spacing`` reads it), ``None`` for a checkpoint without one.
    """

    def __init__(self, backbone: torch.nn.Module, loss: str, num_classes: int, settings: CacheSettings,
                 attention: bool, spacing: dict | None):  # fmt: skip
        super().__init__()
        self.backbone, self.loss, self.num_classes = backbone, loss, num_classes
        cfg = getattr(backbone, "pretrained_cfg", {}) or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, -1, 1, 1), False)
        self.settings, self.attention, self.spacing = settings, attention, spacing
        self.channels_last = False

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.backbone(x)
        return out if self.loss == "ce" else out.squeeze(1)

    def risk_and_class(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loss == "ce":
            probs = output.float().softmax(dim=1)
            return probs @ class_to_risk(torch.arange(self.num_classes, device=output.device), self.num_classes), (
                probs.argmax(dim=1)
            )
        risk = output.float().sigmoid()
        return risk, risk_to_class(risk, self.num_classes).to(output.device)


def load_rater(checkpoint) -> Rater:
    """The network of a ``birads-calc fit`` checkpoint (weights only: nothing but tensors and plain values).

    Raises:
        CheckpointLoadError: naming the file and the reason.
    """
    import timm  # the backbone library: imported here, with the model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        hp = saved["hyper_parameters"]
        outputs = int(hp["num_classes"]) if hp.get("loss") == "ce" else 1
        backbone = timm.create_model(hp["backbone"], pretrained=False, num_classes=outputs)
        weights = {k.removeprefix("backbone."): v for k, v in saved["state_dict"].items() if k.startswith("backbone.")}
        backbone.load_state_dict(weights)
    except Exception as error:  # unreadable, truncated, unsafe or foreign: the checkpoint cannot be used
        reason = f"{type(error).__name__}: {error}"
        raise CheckpointLoadError(f"checkpoint {checkpoint} cannot be loaded: {reason}") from None
    data = saved.get("datamodule_hyper_parameters") or {}
    settings = CacheSettings(**{k: data[k] for k in DATA_SETTINGS if k in data}, num_classes=int(hp["num_classes"]))
    spacing = (saved.get("birads_calc") or {}).get("spacing")
    rater = Rater(backbone, str(hp.get("loss", "mamse")), int(hp["num_classes"]), settings,
                  bool(data.get("attention", True)), spacing)  # fmt: skip
    if hp.get("channels_last"):  # as the model ran in training (and as BiradsClassifier runs): same numbers
        rater.channels_last = True
        rater.backbone = rater.backbone.to(memory_format=torch.channels_last)
    return rater.to(device).eval()


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
    model,
    lesions: Sequence[Lesion],
    settings: CacheSettings,
    attention: bool | None = None,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Risk and class of every lesion, image by image, in the shape the reports take (``index`` = position).

    Args:
        model: a :class:`Rater` or a ``BiradsClassifier`` (put in eval mode here); inputs go to its device.
        lesions: manifest rows, any number of images.
        settings: the data module's window / spacing / VOI settings.
        attention: attention-ROI input (the config's ``data.attention``); default: the Rater's, else True.
        batch_size: windows per forward pass.
    """
    if not lesions:
        raise ValueError("predict_lesions got no lesions")
    model.eval()
    attention = getattr(model, "attention", True) if attention is None else attention
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
