"""``BiradsClassifier``: timm backbone -> risk score (regression) or N logits (MC baseline). Paper §2.3, §3.2.

The regression methods (MSE, MAMSE) put one sigmoid output on the backbone: the risk ``r`` in [0, 1], mapped to a
class by ``categories.risk_to_class``. The multi-class baseline (``loss: ce``) has N logits; its predicted class is
the argmax and its "risk" (used for AUROC and written to predictions.csv) is the expected segment centre
``sum_k p_k (2k+1)/(2N)``, i.e. the probability-weighted position on the same [0, 1] scale.

Backbones: any name ``timm.create_model`` takes: a timm model (``resnet18``), with a pretrained tag
(``resnet18.tv_in1k``; a tag timm does not know is refused with the tags it does), a Hugging Face Hub model
(``hf-hub:timm/resnet18.a1_in1k``, whose config and weights come from the hub) or a folder saved by timm
(``local-dir:/models/resnet18``, config.json and model.safetensors).

ImageNet weights: ``timm.create_model(name, pretrained=True)`` retries an unreachable hub for about a minute.
Hospital workstations and cluster nodes are often offline or behind a proxy, so :func:`create_backbone` decides up
front where the weights come from (a local file, the local Hugging Face cache, or the hub when it answers within
seconds, through the proxy that ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` select, as every HTTP client does) and
otherwise stops at once, naming the proxy it tried and the ways out.
"""

from __future__ import annotations

import difflib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import timm
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from timm.models import parse_model_name, split_model_name_tag
from torch import nn
from torchmetrics import MetricCollection

from birads_calc.categories import class_to_risk, risk_to_class, scale
from birads_calc.errors import InputError
from birads_calc.losses import LossName, MamseAlpha, build_loss
from birads_calc.metrics import MalignancyAdjustedQWK, QuadraticWeightedKappa
from birads_calc.training.guards import check_finite_loss

HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the Hugging Face Hub
HUB_CONFIG = "config.json"  # an hf-hub: or local-dir: model's architecture and preprocessing
HUB_MODEL_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")  # org/name[@revision]
PROBE_TIMEOUT_S = 3.0
PREDICTION_DTYPES = {
    "index": torch.long,
    "risk": torch.float32,
    "pred": torch.long,
    "target": torch.long,
    "malignancy": torch.float32,
}
PREDICTION_KEYS = tuple(PREDICTION_DTYPES)


class BackboneError(InputError, ValueError):
    """A backbone name that timm does not know (or a pretrained tag, hub id or local folder it cannot use)."""


class PretrainedWeightsError(InputError, RuntimeError):
    """What the backbone needs from the hub (ImageNet weights; for ``hf-hub:`` names also the model's config) can be
    had neither from the network nor from a local file or cache."""


def paper_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """The paper's optimizer (§3.2): SGD, lr 0.001, momentum 0.99."""
    return torch.optim.SGD(params, lr=1e-3, momentum=0.99)


def paper_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's schedule (§3.2): learning rate times 0.3 every 10 epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.3)


class BiradsClassifier(L.LightningModule):
    """Per-calcification BI-RADS model: attention ROI ``[B, 3, W, W]`` in [0, 1] -> risk (or class logits).

    Args:
        backbone: any timm model name (``timm.list_models()``); the paper uses ``resnet18``.
        num_classes: 6 (BI-RADS 5th edition) or 4; linked from the data module by the CLI.
        loss: ``"mamse"`` (Eq. 4, proposed), ``"mse"`` (Eq. 1) or ``"ce"`` (multi-class baseline, N logits).
        alpha: MAMSE weighting coefficient in (0, 1] (paper default 0.2); ignored by the other losses.
        pretrained: start from ImageNet weights (hub, local Hugging Face cache, or ``weights_path``).
        weights_path: local ``.safetensors`` / PyTorch state-dict file with the backbone's ImageNet weights.
        channels_last: keep the backbone and its input in channels-last memory format (faster convolutions on
            GPUs with tensor cores under mixed precision).
        optimizer: optimizer factory, injected by the CLI; ``None`` = the paper's SGD (lr 0.001, momentum 0.99).
        lr_scheduler: scheduler factory stepped once per epoch; ``None`` = the paper's StepLR(10, 0.3).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 6,
        loss: LossName = "mamse",
        alpha: MamseAlpha = 0.2,
        pretrained: bool = True,
        weights_path: str | None = None,
        channels_last: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        scale(num_classes)  # refuses anything but 6 or 4 with a clear message
        self.optimizer_factory: Callable = optimizer or paper_optimizer
        self.scheduler_factory: Callable = lr_scheduler or paper_scheduler
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        self._test_outputs: list[dict[str, torch.Tensor]] = []
        self.test_predictions: dict[str, torch.Tensor] | None = None
        self._predict_outputs: list[dict[str, torch.Tensor]] = []
        self.predictions: dict[str, torch.Tensor] | None = None  # after predict: every process's, each lesion once

    # --- template -------------------------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build the backbone and register its normalisation constants as buffers (they follow the device)."""
        hp = self.hparams
        outputs = hp.num_classes if hp.loss == "ce" else 1
        self.backbone = create_backbone(hp.backbone, outputs, pretrained=hp.pretrained, weights_path=hp.weights_path)
        cfg = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, -1, 1, 1), False)
        if hp.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)

    def configure_losses(self) -> None:
        """The loss the config names (``losses.build_loss``); it validates alpha."""
        self.criterion = build_loss(self.hparams.loss, num_classes=self.hparams.num_classes, alpha=self.hparams.alpha)

    def configure_metrics(self) -> None:
        """QWK, MAQWK-M and MAQWK-B per stage; confusion-matrix states summed across DDP processes."""
        n = self.hparams.num_classes
        # compute_groups=False: the three metrics have equally shaped states that can coincide on a first batch
        # (e.g. all malignant), and torchmetrics would then wrongly merge them for the rest of the epoch.
        metrics = MetricCollection(
            {
                "qwk": QuadraticWeightedKappa(n),
                "maqwk_m": MalignancyAdjustedQWK(n, "malignant"),
                "maqwk_b": MalignancyAdjustedQWK(n, "benign"),
            },
            compute_groups=False,
        )
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the physical scale of the training images beside the weights (``checkpoints.training_spacing``)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "training_spacing"):
            checkpoint.setdefault("birads_calc", {})["spacing"] = datamodule.training_spacing()

    # --- forward --------------------------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Raw head output: ``[B]`` risk logit (regression) or ``[B, N]`` class logits (``loss: ce``)."""
        x = (image - self.mean) / self.std
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.backbone(x)
        return out if self.hparams.loss == "ce" else out.squeeze(1)

    def risk_and_class(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Risk in [0, 1] and predicted class index from the head output (see the module docstring for MC)."""
        n = self.hparams.num_classes
        if self.hparams.loss == "ce":
            probs = output.float().softmax(dim=1)
            centres = class_to_risk(torch.arange(n, device=output.device), n)
            return probs @ centres, probs.argmax(dim=1)
        risk = output.float().sigmoid()
        return risk, risk_to_class(risk, n).to(output.device)

    def _shared_step(self, batch: dict[str, torch.Tensor], metrics: MetricCollection, stage: str) -> dict:
        output = self(batch["image"])
        risk, pred = self.risk_and_class(output)
        loss_input = output if self.hparams.loss == "ce" else risk
        loss = self.criterion(loss_input, batch["target"], batch["malignancy"])
        if stage == "train":  # before the metrics, which would refuse NaN predictions without saying why
            check_finite_loss(loss, batch, self._trainer)
        # Metric states live on the device; logging the collection defers compute and DDP sync to epoch end.
        metrics.update(pred, batch["target"], malignancy=batch["malignancy"])
        batch_size = batch["target"].shape[0]
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size)
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=batch_size)
        return {"loss": loss, "risk": risk.detach(), "pred": pred}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; train loss and metrics are logged per epoch."""
        return self._shared_step(batch, self.train_metrics, "train")["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate val loss, QWK, MAQWK-M/-B (``val_qwk`` is what checkpointing monitors)."""
        self._shared_step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate test metrics and keep each lesion's prediction for the reports."""
        out = self._shared_step(batch, self.test_metrics, "test")
        self._test_outputs.append(
            {
                "index": batch["index"],
                "risk": out["risk"].float(),
                "pred": out["pred"],
                "target": batch["target"],
                "malignancy": batch["malignancy"].float(),
            }
        )

    def on_test_epoch_start(self) -> None:
        self._test_outputs, self.test_predictions = [], None

    def on_test_epoch_end(self) -> None:
        """Gather every process's predictions; keep each lesion once (DDP samplers pad with repeats)."""
        outputs, self._test_outputs = self._test_outputs, []
        self.test_predictions = self._gather_outputs(outputs)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Risk and predicted class per lesion, with the lesion's ``index``, its label (-1: none) and malignancy."""
        risk, pred = self.risk_and_class(self(batch["image"]))
        out = {
            "index": batch["index"],
            "risk": risk.float(),
            "pred": pred,
            "target": batch["target"],
            "malignancy": batch["malignancy"].float(),
        }
        self._predict_outputs.append(out)
        return out

    def on_predict_epoch_start(self) -> None:
        self._predict_outputs, self.predictions = [], None

    def on_predict_epoch_end(self) -> None:
        """Gather every process's predictions into ``self.predictions``, each lesion once, sorted by ``index``."""
        outputs, self._predict_outputs = self._predict_outputs, []
        self.predictions = self._gather_outputs(outputs)

    def _gather_outputs(self, outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if outputs:
            local = {k: torch.cat([o[k] for o in outputs]) for k in PREDICTION_KEYS}
        else:  # a process without batches still takes part in the collective gather
            local = {k: torch.empty(0, dtype=PREDICTION_DTYPES[k], device=self.device) for k in PREDICTION_KEYS}
        return gather_predictions(local, self.all_gather, self.trainer.world_size)

    def configure_optimizers(self) -> dict[str, Any]:
        """The injected optimizer and scheduler: stepped once per epoch (paper: StepLR every 10 epochs), or after
        every optimizer step for a schedule that says so (``interval = "step"``, e.g. ``CosineToZero``, which is
        then told the run's number of steps)."""
        optimizer = self.optimizer_factory(self.parameters())
        scheduler = self.scheduler_factory(optimizer)
        interval = getattr(scheduler, "interval", "epoch")
        if hasattr(scheduler, "set_total_steps") and self._trainer is not None:
            scheduler.set_total_steps(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def gather_predictions(
    local: dict[str, torch.Tensor], all_gather: Callable[[torch.Tensor], torch.Tensor], world_size: int
) -> dict[str, torch.Tensor]:
    """Concatenate per-process prediction tensors on every process, each lesion ``index`` once, sorted by index.

    Processes may hold different numbers of rows, so each pads to the longest with ``index = -1`` before the
    fixed-shape ``all_gather``. Rows of the same index are identical (same weights, eval mode), so the first is kept.
    """
    if world_size > 1:
        count = torch.tensor([local["index"].numel()], device=local["index"].device)
        longest = int(all_gather(count).max())
        padded = {}
        for key, value in local.items():
            pad = torch.full((longest - value.numel(),), -1 if key == "index" else 0, dtype=value.dtype)
            padded[key] = all_gather(torch.cat([value, pad.to(value.device)])).reshape(-1)
        local = padded
    local = {k: v.detach().cpu() for k, v in local.items()}
    keep = local["index"] >= 0
    index = local["index"][keep]
    unique, first = _first_occurrence(index)
    return {k: v[keep][first] for k, v in local.items()} | {"index": unique}


def _first_occurrence(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values and, for each, the position of its first occurrence in ``values``."""
    unique, inverse = torch.unique(values, sorted=True, return_inverse=True)
    positions = torch.arange(values.numel())
    first = torch.full((unique.numel(),), values.numel(), dtype=torch.long).scatter_reduce(
        0, inverse, positions, reduce="amin"
    )
    return unique, first


# --- backbones ------------------------------------------------------------------------------------------------------
def create_backbone(
    name: str, num_outputs: int, pretrained: bool = False, weights_path: str | os.PathLike | None = None
) -> nn.Module:
    """A timm model with a fresh ``num_outputs`` head, ImageNet weights loaded when asked for.

    Args:
        name: any name timm takes: ``"resnet18"``, ``"resnet18.tv_in1k"``, ``"hf-hub:timm/resnet18.a1_in1k"``,
            ``"local-dir:/path/to/folder"``.
        num_outputs: size of the new head (1 risk logit, or N class logits).
        pretrained: load ImageNet weights: from ``weights_path`` if given, else the local Hugging Face cache
            (``$HF_HOME``), else the hub, but only when it answers within a few seconds.
        weights_path: a local ``.safetensors`` or PyTorch state-dict file of the same architecture (loaded with
            ``weights_only``; timm drops the old classifier head).

    Raises:
        BackboneError: ``name`` is not a model timm knows, has a pretrained tag timm does not know (the message
            lists the known ones), is a malformed hub id or a folder without ``config.json``.
        PretrainedWeightsError: weights asked for (or an ``hf-hub:`` model's config needed), none found locally and
            the hub unreachable, directly or through the configured proxy; or ``weights_path`` does not exist.
    """
    check_backbone_name(name)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"backbone weights file not found: {path} (model.weights_path)")
        _require_hub_config(name)
        return _timm_from_file(name, num_outputs, path)
    source, model_id = parse_model_name(name)
    if source == "local-dir":
        return _timm_from_folder(name, Path(model_id).expanduser(), num_outputs, pretrained)
    if source == "hf-hub":
        if not _hub_files_cached(model_id, pretrained):
            _require_network(name, hub_endpoint_host(), "its config and weights" if pretrained else "its config")
        return timm.create_model(name, pretrained=pretrained, num_classes=num_outputs)
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_outputs)
    cached = cached_hub_weights(name)
    if cached is not None:
        return _timm_from_file(name, num_outputs, cached)
    _require_network(name, _weights_host(name), "ImageNet weights")
    return timm.create_model(name, pretrained=True, num_classes=num_outputs)


def check_backbone_name(name: str) -> None:
    """Refuse, before anything is built, a name ``timm.create_model`` would fail on (offline: no hub is asked).

    Raises:
        BackboneError: naming the option and what to give instead (the known tags, or close model names).
    """
    try:
        source, model_id = parse_model_name(name)
    except ValueError as error:  # "hf-hub:" with nothing after it
        raise BackboneError(
            f"--model.backbone {name}: {error} Write hf-hub:<org>/<name> or local-dir:<folder>"
        ) from None
    if source == "hf-hub":
        if not HUB_MODEL_ID.fullmatch(model_id):
            raise BackboneError(
                f"--model.backbone {name}: not a Hugging Face Hub model id; write hf-hub:<org>/<name>[@revision], "
                "e.g. hf-hub:timm/resnet18.a1_in1k"
            )
        return
    if source == "local-dir":
        folder = Path(model_id).expanduser()
        if not (folder / HUB_CONFIG).is_file():
            raise BackboneError(
                f"--model.backbone {name}: {folder} has no {HUB_CONFIG}; local-dir: names a folder with a timm model "
                "(timm.models.save_for_hf(model, folder), or a hub download: config.json + model.safetensors)"
            )
        return
    arch, tag = split_model_name_tag(model_id)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for the names"
        raise BackboneError(f"--model.backbone: unknown timm backbone {name!r}{hint}")
    try:
        timm.models.get_pretrained_cfg(model_id)  # timm's own check of the tag
    except RuntimeError:
        tags = pretrained_tags(arch)
        known = f"its tags are {', '.join(tags)}" if tags else "it has no pretrained weights in timm"
        raise BackboneError(
            f"--model.backbone {name}: timm knows no pretrained tag {tag!r} for {arch}; {known} "
            f"(write {arch}.<tag>, or {arch} alone for its default weights)"
        ) from None


def pretrained_tags(arch: str) -> list[str]:
    """The pretrained tags timm has for architecture ``arch`` (``resnet18`` -> ``a1_in1k``, ..., ``tv_in1k``)."""
    return [full.split(".", 1)[1] for full in timm.list_pretrained(f"{arch}.*")]


def _timm_from_file(name: str, num_outputs: int, path: Path) -> nn.Module:
    return timm.create_model(name, pretrained=True, num_classes=num_outputs, pretrained_cfg_overlay={"file": str(path)})


def _timm_from_folder(name: str, folder: Path, num_outputs: int, pretrained: bool) -> nn.Module:
    """A ``local-dir:`` model; its weights must lie in the folder when asked for (timm reads them from there)."""
    if pretrained and not any((folder / f).is_file() for f in HUB_FILES):
        raise PretrainedWeightsError(
            f"--model.backbone {name}: pretrained weights were asked for but {folder} holds none of "
            f"{', '.join(HUB_FILES)}; add them, or set --model.pretrained false"
        )
    return timm.create_model(name, pretrained=pretrained, num_classes=num_outputs)


def _require_hub_config(name: str) -> None:
    """An ``hf-hub:`` model needs its config from the hub (or the cache) even when its weights come from a file."""
    source, model_id = parse_model_name(name)
    if source == "hf-hub" and not _hub_files_cached(model_id, pretrained=False):
        _require_network(name, hub_endpoint_host(), "its config")


def _hub_files_cached(model_id: str, pretrained: bool) -> bool:
    """Whether the local Hugging Face cache holds an ``hf-hub:`` model's config (and weights when asked for)."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = model_id.partition("@")

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo, filename, revision=revision or None), str)

    return cached(HUB_CONFIG) and (not pretrained or any(cached(f) for f in HUB_FILES))


def cached_hub_weights(name: str) -> Path | None:
    """The weights file of ``name`` in the local Hugging Face cache (``$HF_HOME``), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    hub_id = _pretrained_cfg(name).get("hf_hub_id")
    for filename in HUB_FILES if hub_id else ():
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _pretrained_cfg(name: str) -> dict:
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def hub_endpoint_host() -> str:
    """The Hugging Face Hub's host (``huggingface.co``, or the mirror ``HF_ENDPOINT`` names)."""
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _weights_host(name: str) -> str:
    cfg = _pretrained_cfg(name)
    if cfg.get("hf_hub_id"):
        return hub_endpoint_host()
    return urlparse(cfg.get("url") or "https://huggingface.co").hostname or "huggingface.co"


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(proxy URL, the variable that set it)`` an HTTP client routes ``url`` through, or ``None`` (direct).

    The standard variables, read as urllib, requests, httpx and huggingface_hub read them: ``HTTPS_PROXY`` /
    ``HTTP_PROXY`` by the URL's scheme, else ``ALL_PROXY`` (lower case first, then upper case), unless
    ``NO_PROXY`` exempts the host.
    """
    env = os.environ if environ is None else environ

    def variable(key: str) -> tuple[str, str] | None:
        return next(((env[v], v) for v in (key, key.upper()) if env.get(v)), None)

    parsed = urlparse(url)
    no_proxy = variable("no_proxy")
    if no_proxy and _bypassed(parsed.hostname or "", no_proxy[0]):
        return None
    return variable(f"{parsed.scheme}_proxy") or variable("all_proxy")


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated hosts, domain suffixes, ``*``) exempts ``host``."""
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host.lower() == entry or host.lower().endswith("." + entry))):
            return True
    return False


def unreachable_reason(host: str) -> str | None:
    """Why ``https://host`` cannot be reached within a few seconds (``None``: it answered).

    Asked the way an HTTP client asks: through the proxy that the standard variables select (``proxy_for``); any
    HTTP answer, even an error status, counts as reached. ``HF_HUB_OFFLINE=1`` means unreachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    url = f"https://{host}/"
    proxy = proxy_for(url)
    handler = urllib.request.ProxyHandler({"https": proxy[0]} if proxy else {})
    try:
        urllib.request.build_opener(handler).open(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError:
        return None  # the server (or the proxy) answered
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error)) or type(error).__name__
    return None


def _require_network(name: str, host: str, what: str) -> None:
    """Stop at once unless ``host`` answers, naming the proxy tried and the ways out."""
    reason = unreachable_reason(host)
    if reason is not None:
        raise PretrainedWeightsError(_offline_message(name, host, what, reason))


def _offline_message(name: str, host: str, what: str, reason: str) -> str:
    source, model_id = parse_model_name(name)
    hub_id = model_id if source == "hf-hub" else _pretrained_cfg(name).get("hf_hub_id", name)
    proxy = proxy_for(f"https://{host}/")
    route = (
        f"through the proxy {proxy[0]} (set by {proxy[1]}; NO_PROXY={host} would go direct)"
        if proxy
        else "directly (no HTTPS_PROXY or HTTP_PROXY is set; behind a proxy, set HTTPS_PROXY)"
    )
    why = " (model.pretrained: true)" if what == "ImageNet weights" else ""
    local = (
        f"  2. use a folder holding the model (config.json + model.safetensors, downloaded on a connected machine "
        f"from https://{host}/{model_id.partition('@')[0]}): --model.backbone local-dir:/path/to/folder."
        if source == "hf-hub"
        else f"  2. give a local weights file: --model.weights_path /path/to/{model_id}.safetensors (safetensors or "
        "a PyTorch state dict), or a saved folder: --model.backbone local-dir:/path/to/folder."
    )
    scratch = "\nTo train from scratch instead, set --model.pretrained false." if what != "its config" else ""
    return (
        f"backbone {name!r} needs {what} from the hub{why}, but {host} cannot be reached {route} ({reason}), "
        f"and the local Hugging Face cache has none. Either:\n"
        f"  1. connect to the internet, or pre-download on a connected machine with\n"
        f"       HF_HOME=/path/to/hf python -c \"import timm; timm.create_model('{name}', pretrained=True)\"\n"
        f"     and set HF_HOME=/path/to/hf here (the cache then holds {hub_id}); or\n"
        f"{local}{scratch}"
    )
