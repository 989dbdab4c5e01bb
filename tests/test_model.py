"""BiradsClassifier: heads, risk -> class, normalisation, weights loading, offline failure, learning, gathering."""

import time

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset
from training_helpers import single_torch_thread  # noqa: F401 (autouse fixture)

from birads_calc.categories import risk_to_class
from birads_calc.training import model as model_module
from birads_calc.training.model import BiradsClassifier, PretrainedWeightsError, gather_predictions

TINY = "test_resnet"  # timm's test network: ~0.4 M parameters, runs in milliseconds on a CPU


def tiny(**kwargs) -> BiradsClassifier:
    torch.manual_seed(0)
    return BiradsClassifier(backbone=TINY, pretrained=False, **kwargs)


def test_regression_head_gives_risk_in_unit_interval_and_class_by_segment():
    model = tiny(loss="mamse").eval()
    out = model(torch.rand(5, 3, 32, 32))
    assert out.shape == (5,)
    risk, pred = model.risk_and_class(out)
    assert torch.equal(risk, out.sigmoid()) and ((risk >= 0) & (risk <= 1)).all()
    assert torch.equal(pred, risk_to_class(risk, 6))
    # the segments of DESIGN §2 at their boundaries, through the model's own mapping
    risk, pred = model.risk_and_class(
        torch.logit(torch.tensor([0.01, 1 / 6 + 1e-4, 0.5 + 1e-4, 0.99], dtype=torch.float64))
    )
    assert pred.tolist() == [0, 1, 3, 5]


def test_mc_head_argmax_class_and_expected_position_risk():
    model = tiny(loss="ce", num_classes=4).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    risk, pred = model.risk_and_class(logits)
    centres = [1 / 8, 3 / 8, 5 / 8, 7 / 8]
    assert pred.tolist() == [3, 0]
    assert risk.tolist() == pytest.approx(
        [sum(p * c for p, c in zip(row, centres, strict=True)) for row in [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]]
    )


def test_forward_normalises_with_the_backbone_mean_and_std():
    model = tiny().eval()
    cfg = timm.create_model(TINY).pretrained_cfg
    image = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    assert torch.allclose(model(image), model.backbone((image - mean) / std).squeeze(1))


def test_channels_last_gives_the_same_output():
    image = torch.rand(2, 3, 32, 32)
    plain, fast = tiny().eval(), tiny(channels_last=True).eval()
    assert fast.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain(image), fast(image), atol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_path_loads_a_local_file(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model(TINY)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    model = BiradsClassifier(backbone=TINY, pretrained=True, weights_path=str(path))
    loaded, original = model.backbone.state_dict(), source.state_dict()
    head = {"fc.weight", "fc.bias", "head.fc.weight", "head.fc.bias"}
    body = [k for k in original if k not in head and "num_batches_tracked" not in k]
    assert body and all(torch.equal(loaded[k], original[k]) for k in body)
    assert loaded[next(k for k in loaded if k.endswith("fc.weight"))].shape[0] == 1  # new one-output head


def test_missing_weights_file_is_named():
    with pytest.raises(PretrainedWeightsError, match="weights file not found: /nowhere.safetensors"):
        BiradsClassifier(backbone=TINY, weights_path="/nowhere.safetensors")


def test_pretrained_offline_fails_at_once_naming_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    monkeypatch.setattr(model_module, "_weights_host", lambda name: "weights.invalid")  # never resolves
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as info:
        BiradsClassifier(backbone="resnet18", pretrained=True)
    assert time.perf_counter() - start < 10  # timm's own path retries for about a minute
    message = str(info.value)
    assert "weights.invalid cannot be reached" in message
    assert "HF_HOME" in message and "connect" in message  # way out 1: network / pre-downloaded hub cache
    assert "--model.weights_path" in message  # way out 2: a local file


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown timm backbone 'resnet_nonexistent'"):
        BiradsClassifier(backbone="resnet_nonexistent", pretrained=False)
    with pytest.raises(ValueError, match="alpha"):
        tiny(alpha=0.0)
    with pytest.raises(ValueError, match="num_classes must be 6 or 4"):
        tiny(num_classes=5)


def test_paper_optimizer_and_per_epoch_scheduler_by_default():
    config = tiny().configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["momentum"] == 0.99
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert (scheduler.step_size, scheduler.gamma, config["lr_scheduler"]["interval"]) == (10, 0.3, "epoch")


class LearnableSet(Dataset):
    """Patches whose brightness grows with the class: a model can learn the ordering in a few steps."""

    def __init__(self, n: int = 48, num_classes: int = 6, size: int = 32):
        g = torch.Generator().manual_seed(0)
        self.target = torch.arange(n) % num_classes
        level = (self.target.float() + 0.5) / num_classes
        self.image = (level.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
        self.malignancy = torch.where(self.target >= num_classes - 2, 1.0, torch.where(self.target == 0, 0.0, 0.5))

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image[i], "target": self.target[i], "malignancy": self.malignancy[i], "index": i}


class LossHistory(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("loss", ["mamse", "mse", "ce"])
def test_loss_drops_on_a_learnable_set(loss):
    L.seed_everything(0)
    model = BiradsClassifier(
        backbone=TINY, pretrained=False, loss=loss, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3)
    )
    history = LossHistory()
    trainer = L.Trainer(
        max_steps=36,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )
    trainer.fit(model, DataLoader(LearnableSet(), batch_size=16, shuffle=True))
    first, last = sum(history.losses[:3]) / 3, sum(history.losses[-3:]) / 3
    assert len(history.losses) == 36
    assert last < 0.5 * first, f"{loss}: loss went from {first:.4f} to {last:.4f}"


def test_gather_predictions_keeps_each_lesion_once_sorted():
    local = {
        "index": torch.tensor([5, 2, 5, 7]),  # 5 repeated, as a padding DDP sampler does
        "risk": torch.tensor([0.9, 0.1, 0.9, 0.4]),
        "pred": torch.tensor([5, 0, 5, 2]),
        "target": torch.tensor([5, 1, 5, 2]),
        "malignancy": torch.tensor([1.0, 0.0, 1.0, 0.5]),
    }
    out = gather_predictions(local, all_gather=None, world_size=1)
    assert out["index"].tolist() == [2, 5, 7]
    assert out["risk"].tolist() == pytest.approx([0.1, 0.9, 0.4])
    assert out["target"].tolist() == [1, 5, 2] and out["malignancy"].tolist() == [0.0, 1.0, 0.5]


def test_gather_predictions_pads_unequal_processes():
    """Rank 0 holds 3 rows, rank 1 one row: both pad to 3 for the fixed-shape all_gather; padding is dropped."""
    rank0 = {
        "index": torch.tensor([0, 2, 4]),
        "risk": torch.tensor([0.1, 0.3, 0.5]),
        "pred": torch.tensor([0, 1, 3]),
        "target": torch.tensor([0, 1, 3]),
        "malignancy": torch.tensor([0.0, 0.5, 1.0]),
    }
    rank1 = {
        "index": torch.tensor([1]),
        "risk": torch.tensor([0.2]),
        "pred": torch.tensor([1]),
        "target": torch.tensor([1]),
        "malignancy": torch.tensor([0.5]),
    }
    sent_by_rank1 = iter(
        [torch.tensor([1])]
        + [  # what rank 1 sends: its count, then each column padded to 3
            torch.cat([rank1[k], torch.full((2,), -1 if k == "index" else 0, dtype=rank1[k].dtype)]) for k in rank0
        ]
    )

    def all_gather(t):
        other = next(sent_by_rank1)
        assert other.shape == t.shape, "every process must send the same shape"
        return torch.stack([t, other])

    out = gather_predictions(rank0, all_gather, world_size=2)
    assert out["index"].tolist() == [0, 1, 2, 4]
    assert out["risk"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.5])
    assert out["pred"].tolist() == [0, 1, 1, 3] and out["malignancy"].tolist() == [0.0, 0.5, 0.5, 1.0]
