"""Which precision trains fastest on the CPU: the fallback for a GPU config on a machine without a GPU.

One training step (forward, MAMSE-style regression loss, backward, SGD step) of the paper's backbone (timm
``resnet18``, one output) on a batch of attention ROIs, timed under each precision Lightning offers on a CPU:
``32-true`` (the baseline), ``bf16-mixed`` (autocast to bfloat16, what Lightning's ``bf16-mixed`` plugin does) and
``bf16-true`` (weights and activations in bfloat16). The ratio is baseline time / time (above 1: faster than fp32).
``birads_calc.cli.trainer.cpu_fallback`` turns a GPU config's 16-bit precision into the fastest one measured here.

Usage: ``python bench/run.py --only cpu_precision`` (``--quick``: timm ``test_resnet``, 64 px).
"""

from __future__ import annotations

import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_time, figure

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


def training_step(precision: str, backbone: str, batch: int, size: int):
    """A closure running one optimisation step of ``backbone`` under ``precision`` (fixed data, seeded)."""
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=1)
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    model = model.to(dtype)
    images = torch.rand(batch, 3, size, size, dtype=dtype)
    target = torch.rand(batch, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            risk = torch.sigmoid(model(images))
        loss = ((risk.float() - target) ** 2).mean()
        loss.backward()
        optimizer.step()

    return step


def run(quick: bool = False) -> dict[str, dict]:
    backbone, batch, size = ("test_resnet", 4, 64) if quick else ("resnet18", 8, 224)
    times = {p: best_time(training_step(p, backbone, batch, size), repeat=3, warmup=1) for p in PRECISIONS}
    base = times["32-true"]
    out = {
        f"cpu_step_{p.replace('-', '_')}": figure(t, base, "s/step", None, lower_is_better=True)
        for p, t in times.items()
    }
    out["cpu_fastest_precision"] = {
        "value": min(times, key=times.get),
        "baseline": "32-true",
        "ratio": None,
        "unit": f"{backbone}, batch {batch} x 3 x {size}^2, {torch.get_num_threads()} threads",
        "target": None,
        "lower_is_better": False,
    }
    return out


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
