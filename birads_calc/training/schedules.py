"""Learning-rate schedules that end annealed at any epoch budget (DESIGN §7: the model after the last epoch is a
stable one).

The paper's StepLR(10, 0.3) over 50 epochs ends at 0.3^4 of the starting rate for its last 10 epochs. A shortened
run (the CPU overlay's 10 epochs) keeps the rate at its start throughout with that schedule, so the last-epoch
model is wherever the last noisy steps left it. :class:`CosineToZero` decays the rate along a half cosine over
*the run's own length*, stepped after every optimizer step, so it ends near zero whatever ``max_epochs`` is
(Loshchilov & Hutter, "SGDR", ICLR 2017; the cosine-to-zero schedule of timm's and torchvision's recipes).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class CosineToZero(LambdaLR):
    """Linear warmup, then a half cosine from the starting rate down to ``final_fraction`` of it, per optimizer step.

    The total number of steps is the trainer's (``Trainer.estimated_stepping_batches``); the model sets it through
    :meth:`set_total_steps` before training starts, so the config never has to know the data size.

    Args:
        optimizer: the optimizer whose rates it scales.
        warmup_fraction: share of the steps spent rising linearly from 0 to the starting rate.
        final_fraction: the rate the cosine ends at, as a fraction of the starting rate (the last step's rate
            is just above it).
        total_steps: optimizer steps of the whole run (``None``: set later by the model).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = CosineToZero(opt, total_steps=100)
        >>> for _ in range(99):
        ...     opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 4)
        0.0002
    """

    interval = "step"  # the model registers it with Lightning as a per-step scheduler

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_fraction: float = 0.0,
        final_fraction: float = 0.0,
        total_steps: int | None = None,
    ) -> None:
        if not 0.0 <= warmup_fraction < 1.0 or not 0.0 <= final_fraction <= 1.0:
            raise ValueError(
                f"warmup_fraction must be in [0, 1) and final_fraction in [0, 1], got {warmup_fraction}, "
                f"{final_fraction}"
            )
        self.warmup_fraction, self.final_fraction = warmup_fraction, final_fraction
        self.total_steps = total_steps
        super().__init__(optimizer, self.factor)

    def set_total_steps(self, total_steps: int) -> None:
        """The run's optimizer steps; rescales the current rate to match."""
        self.total_steps = max(int(total_steps), 1)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the starting rate at optimizer step ``step`` (0-based)."""
        total = self.total_steps or 1
        warmup = math.floor(self.warmup_fraction * total)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)  # the last step: just above final
        return self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
