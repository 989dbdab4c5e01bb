"""Which precision trains fastest on this CPU: the fallback for a GPU config on a machine without a GPU.

One training step (forward, MAMSE-style regression loss, backward, SGD step) of the paper's backbone (timm
``resnet18``, one output, channels-last as the paper configs run it) on a batch of attention ROIs, timed under
each precision Lightning offers on a CPU: ``32-true`` (the baseline), ``bf16-mixed`` (autocast to bfloat16, what
Lightning's ``bf16-mixed`` plugin does) and ``bf16-true`` (weights and activations in bfloat16), in turns so that
a load burst on a shared machine hits all of them alike (median of up to 7 turns). The ratio is baseline time /
time (above 1: faster than fp32). The step is ``birads_calc.training.precision.training_step``, the one the CLI
times at start; the last entry is what ``cpu_precision`` decides on this machine, and why.

Usage: ``python bench/run.py --only cpu_precision`` or ``python bench/bench_cpu_precision.py`` (``--quick``: timm
``test_resnet``, 64 px, where bf16 loses even on CPUs with AMX).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure

from birads_calc.training.precision import PRECISION_ENV, cpu_precision, measure, native_bf16_flags

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


def run(quick: bool = False) -> dict[str, dict]:
    probe = (
        {"backbone": "test_resnet", "batch": 4, "size": 64}
        if quick
        else {"backbone": "resnet18", "batch": 8, "size": 224}
    )
    probe["channels_last"] = True
    times = measure(PRECISIONS, repeat=7, budget_s=120, **probe)  # medians of turns, as the CLI's probe
    base = times["32-true"]
    out = {
        f"cpu_step_{p.replace('-', '_')}": figure(t, base, "s/step", None, lower_is_better=True)
        for p, t in times.items()
    }
    workload = f"{probe['backbone']}, batch {probe['batch']} x 3 x {probe['size']}^2, {torch.get_num_threads()} threads"
    out["cpu_fastest_precision"] = {
        "value": min(times, key=times.get),
        "baseline": "32-true",
        "ratio": None,
        "unit": workload,
        "target": None,
        "lower_is_better": False,
    }
    os.environ.pop(PRECISION_ENV, None)  # the decision the CLI takes here, not a forced one
    cpu_precision.cache_clear()
    choice = cpu_precision()
    out["cpu_fallback_precision"] = {
        "value": choice.precision,
        "baseline": "32-true",
        "ratio": choice.fp32_s / choice.bf16_s if choice.bf16_s else None,
        "unit": f"native bf16: {', '.join(native_bf16_flags()) or 'none'}; {choice.reason}",
        "target": None,
        "lower_is_better": False,
    }
    return out


if __name__ == "__main__":
    for name, entry in run(quick="--quick" in sys.argv).items():
        print(name, entry)
