"""Training losses (paper §2.3): MAMSE (Eq. 2-4), plain MSE (Eq. 1) and cross-entropy for the MC baseline.

The regression losses compare a predicted risk ``b_pred`` in [0, 1] with the centre ``b_gt = (2n-1)/(2N)`` of the
true class's segment (``categories.class_to_risk``). MAMSE weights each squared error by

    W = alpha ** (C / (|C| + eps)),   C = -(b_gt - b_pred) * (m_gt - m_mid),   m_mid = 0.5

so an error in the direction the biopsy contradicts (a malignant lesion rated too low, a benign one rated too high)
costs up to ``1 / alpha`` times the squared error, and one in the direction the biopsy supports only ``alpha``
times. ``alpha = 1`` or an unknown biopsy (``m_gt = 0.5``, hence ``C = 0``, ``W = 1``) gives Eq. 1.

All three losses are computed in float32 with autocast disabled: the weights ``alpha ** (+-1)`` and the squared
errors of risks near a class centre are small numbers that half precision would round away.
"""

from __future__ import annotations

from typing import Literal

import torch
from jsonargparse.typing import restricted_number_type
from torch import nn
from torch.nn import functional as F

from birads_calc.categories import UNKNOWN, class_to_risk

LossName = Literal["mamse", "mse", "ce"]
# MAMSE's alpha lies in (0, 1] (Eq. 3); as a type hint, the command line refuses any other value when it is parsed
MamseAlpha = restricted_number_type("MamseAlpha", float, [(">", 0), ("<=", 1)])


def _float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(torch.float32) for t in tensors)


class MAMSELoss(nn.Module):
    """Malignancy-adjusted MSE, the batch mean of Eq. 4.

    Args:
        alpha: weighting coefficient in (0, 1]; the paper's default is 0.2, ``1`` is plain MSE.
        eps: the small constant of Eq. 3 that keeps the weight continuous where ``C`` crosses 0.
        num_classes: 6 or 4; sets the class-centre targets ``(2n-1)/(2N)``.

    Example:
        >>> loss = MAMSELoss(alpha=0.2)
        >>> risk = torch.tensor([0.25, 0.25])  # both predicted below the centre of class 4B (index 3, 7/12)
        >>> loss(risk, torch.tensor([3, 3]), torch.tensor([1.0, 0.0])) > loss(risk, torch.tensor([3, 3]),
        ...     torch.tensor([0.0, 0.0]))  # too low is worse when malignant
        tensor(True)
    """

    def __init__(self, alpha: float = 0.2, eps: float = 1e-6, num_classes: int = 6) -> None:
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"MAMSE alpha must lie in (0, 1] (paper Eq. 3), got {alpha}")
        if eps <= 0:
            raise ValueError(f"MAMSE eps must be positive, got {eps}")
        self.alpha, self.eps, self.num_classes = float(alpha), float(eps), num_classes

    def forward(self, risk: torch.Tensor, target: torch.Tensor, malignancy: torch.Tensor) -> torch.Tensor:
        """Batch mean of Eq. 4.

        Args:
            risk: predicted risk, float ``[B]`` in [0, 1].
            target: true class index, long ``[B]``.
            malignancy: 1 malignant, 0 benign, 0.5 unknown, float ``[B]``.
        """
        with torch.autocast(device_type=risk.device.type, enabled=False):
            (b_pred, m_gt) = _float32(risk, malignancy)
            b_gt = class_to_risk(target, self.num_classes).to(b_pred.device)
            error = b_gt - b_pred
            consistency = -error * (m_gt - UNKNOWN)  # Eq. 2
            weight = self.alpha ** (consistency / (consistency.abs() + self.eps))  # Eq. 3
            return (weight * error.square()).mean()  # Eq. 4, averaged over the batch

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, eps={self.eps}, num_classes={self.num_classes}"


class RiskMSELoss(nn.Module):
    """Plain MSE between the risk and the class centre (Eq. 1); ``malignancy`` is accepted and ignored.

    Args:
        num_classes: 6 or 4; sets the class-centre targets ``(2n-1)/(2N)``.
    """

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, risk: torch.Tensor, target: torch.Tensor, malignancy: torch.Tensor | None = None) -> torch.Tensor:
        """Batch mean of Eq. 1 (``risk`` float ``[B]``, ``target`` long ``[B]``)."""
        with torch.autocast(device_type=risk.device.type, enabled=False):
            (b_pred,) = _float32(risk)
            b_gt = class_to_risk(target, self.num_classes).to(b_pred.device)
            return F.mse_loss(b_pred, b_gt)


class ClassCrossEntropyLoss(nn.Module):
    """Cross-entropy over the N BI-RADS classes (the paper's MC baseline); ``malignancy`` is ignored."""

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, malignancy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Batch mean cross-entropy (``logits`` float ``[B, N]``, ``target`` long ``[B]``)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return F.cross_entropy(logits.to(torch.float32), target)


def build_loss(name: LossName, num_classes: int = 6, alpha: float = 0.2) -> nn.Module:
    """The loss a config names: ``"mamse"`` (Eq. 4), ``"mse"`` (Eq. 1) or ``"ce"`` (multi-class baseline)."""
    if name == "mamse":
        return MAMSELoss(alpha=alpha, num_classes=num_classes)
    if name == "mse":
        return RiskMSELoss(num_classes=num_classes)
    if name == "ce":
        return ClassCrossEntropyLoss()
    raise ValueError(f"unknown loss {name!r}; expected 'mamse', 'mse' or 'ce'")
