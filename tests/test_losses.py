"""MAMSE (Eq. 2-4), MSE (Eq. 1) and the MC cross-entropy against direct transcriptions of the paper."""

import math

import pytest
import torch
from torch.nn import functional as F

from birads_calc.losses import ClassCrossEntropyLoss, MAMSELoss, RiskMSELoss, build_loss


def eq4(risk: float, cls: int, m: float, alpha: float, eps: float = 1e-6, n: int = 6) -> float:
    """Eq. 4 for one sample, written out from the paper with Python floats."""
    b_gt = (2 * (cls + 1) - 1) / (2 * n)  # centre of the n-th (1-based) segment
    c = -(b_gt - risk) * (m - 0.5)  # Eq. 2
    w = alpha ** (c / (abs(c) + eps))  # Eq. 3
    return w * (b_gt - risk) ** 2


def eq4_grad(risk: float, cls: int, m: float, alpha: float, eps: float = 1e-6, n: int = 6) -> float:
    """d Eq.4 / d b_pred, derived by hand: W ln(a) eps/(|C|+eps)^2 (m - 1/2) e^2 - 2 e W, with e = b_gt - b_pred."""
    e = (2 * (cls + 1) - 1) / (2 * n) - risk
    c = -e * (m - 0.5)
    w = alpha ** (c / (abs(c) + eps))
    return w * math.log(alpha) * eps / (abs(c) + eps) ** 2 * (m - 0.5) * e**2 - 2 * e * w


def random_batch(n: int = 64, num_classes: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    risk = torch.rand(n, generator=g, dtype=torch.float64).float()
    target = torch.randint(0, num_classes, (n,), generator=g)
    malignancy = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (n,), generator=g)]
    return risk, target, malignancy


@pytest.mark.parametrize("alpha", [0.05, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("num_classes", [6, 4])
def test_mamse_equals_eq4_value_and_gradient(alpha, num_classes):
    risk, target, malignancy = random_batch(num_classes=num_classes, seed=int(alpha * 100) + num_classes)
    risk.requires_grad_(True)
    loss = MAMSELoss(alpha=alpha, num_classes=num_classes)(risk, target, malignancy)
    (grad,) = torch.autograd.grad(loss, risk)
    samples = list(zip(risk.tolist(), target.tolist(), malignancy.tolist(), strict=True))
    expected = sum(eq4(r, c, m, alpha, n=num_classes) for r, c, m in samples) / len(samples)
    expected_grad = [eq4_grad(r, c, m, alpha, n=num_classes) / len(samples) for r, c, m in samples]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert grad.tolist() == pytest.approx(expected_grad, rel=1e-4, abs=1e-9)


def test_mamse_gradient_matches_finite_differences():
    """Independent of the hand derivation: central differences of the float64 transcription."""
    risk, target, malignancy = random_batch(n=16, seed=3)
    risk.requires_grad_(True)
    (grad,) = torch.autograd.grad(MAMSELoss(alpha=0.2)(risk, target, malignancy), risk)
    h = 1e-4
    for i, (r, c, m) in enumerate(zip(risk.tolist(), target.tolist(), malignancy.tolist(), strict=True)):
        numeric = (eq4(r + h, c, m, 0.2) - eq4(r - h, c, m, 0.2)) / (2 * h) / len(risk)
        assert grad[i].item() == pytest.approx(numeric, rel=1e-3, abs=1e-7)


def test_mamse_penalises_the_direction_the_biopsy_contradicts():
    """Risk 0.25 for a 4B lesion (centre 7/12): too low; 1/alpha x MSE when malignant, alpha x MSE when benign."""
    loss = MAMSELoss(alpha=0.2, eps=1e-6)
    risk, target = torch.tensor([0.25]), torch.tensor([3])
    mse = (7 / 12 - 0.25) ** 2
    c = (7 / 12 - 0.25) * 0.5
    assert loss(risk, target, torch.tensor([1.0])).item() == pytest.approx(0.2 ** (-c / (c + 1e-6)) * mse, rel=1e-6)
    assert loss(risk, target, torch.tensor([1.0])).item() == pytest.approx(5 * mse, rel=1e-4)
    assert loss(risk, target, torch.tensor([0.0])).item() == pytest.approx(0.2 * mse, rel=1e-4)
    assert loss(risk, target, torch.tensor([0.5])).item() == pytest.approx(mse, rel=1e-6)


def test_alpha_one_and_unknown_malignancy_reduce_to_mse():
    risk, target, malignancy = random_batch(seed=7)
    centres = (2 * target.double() + 1) / 12
    mse = F.mse_loss(risk.double(), centres).item()
    assert MAMSELoss(alpha=1.0)(risk, target, malignancy).item() == pytest.approx(mse, rel=1e-6)
    unknown = torch.full_like(malignancy, 0.5)
    assert MAMSELoss(alpha=0.2)(risk, target, unknown).item() == pytest.approx(mse, rel=1e-6)
    assert RiskMSELoss()(risk, target, malignancy).item() == pytest.approx(mse, rel=1e-6)


def test_losses_compute_in_float32_under_autocast():
    risk, target, malignancy = random_batch(seed=11)
    half = risk.to(torch.bfloat16)
    reference = MAMSELoss()(half.float(), target, malignancy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = MAMSELoss()(half, target, malignancy)
        mse = RiskMSELoss()(half, target)
        ce = ClassCrossEntropyLoss()(torch.randn(len(target), 6).to(torch.bfloat16), target)
    assert loss.dtype == mse.dtype == ce.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-7)


def test_cross_entropy_is_torch_cross_entropy():
    logits, target = torch.randn(10, 6, generator=torch.Generator().manual_seed(0)), torch.arange(10) % 6
    assert build_loss("ce")(logits, target, torch.zeros(10)).item() == pytest.approx(
        F.cross_entropy(logits, target).item()
    )


@pytest.mark.parametrize("alpha", [0.0, -0.2, 1.5])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\]"):
        MAMSELoss(alpha=alpha)


def test_build_loss_picks_by_name():
    assert isinstance(build_loss("mamse", alpha=0.3), MAMSELoss) and build_loss("mamse", alpha=0.3).alpha == 0.3
    assert isinstance(build_loss("mse"), RiskMSELoss)
    assert isinstance(build_loss("ce"), ClassCrossEntropyLoss)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        build_loss("focal")
