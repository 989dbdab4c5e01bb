"""Which precision trains fastest on this CPU: the fallback for a GPU config's 16-bit precision without a GPU.

bfloat16 is only fast where the processor computes in it natively: Intel AMX (``amx_bf16``, Sapphire Rapids and
later), AVX512-BF16 (``avx512_bf16``: Cooper Lake, Zen 4) or the Arm BF16 extension (``bf16``). Elsewhere it is
emulated, and a training step under ``bf16-mixed`` was measured ~10x slower than fp32 (docs/training.md). Even with
native support the gain depends on the work: ResNet-18 steps ran ~1.9x faster under bf16-mixed on an AMX CPU,
timm's tiny ``test_resnet`` ran slower (conversions outweigh the cheaper arithmetic). So :func:`cpu_precision`

1. takes ``BIRADS_CALC_CPU_PRECISION`` when it is set (``32-true`` or ``bf16-mixed``);
2. chooses ``32-true`` on a CPU without native bfloat16, without measuring;
3. otherwise times a few ResNet-18 training steps (the paper's backbone, channels-last as the paper configs run it)
   under both precisions in turns, once per process (a few seconds; at most ~15 s plus the first steps on a
   loaded machine), and takes ``bf16-mixed`` only when its median step is at least :data:`MIN_SPEEDUP` times
   faster. The measurement is taken under the machine's present load, which the training will share.

The answer carries its reason, which ``birads_calc.cli.trainer.cpu_fallback`` prints at start, and the measured
times (:meth:`CpuPrecision.as_record`, for the run's recipe). ``bench/bench_cpu_precision.py`` measures the same
step at the paper's sizes and reports what this module decides on the machine it runs on.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from birads_calc.errors import InputError

PRECISION_ENV = "BIRADS_CALC_CPU_PRECISION"  # 32-true | bf16-mixed | auto (the default: decide here)
CHOICES = ("32-true", "bf16-mixed")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 "flags" / Arm "Features" in /proc/cpuinfo
MIN_SPEEDUP = 1.1  # bf16-mixed must beat fp32 clearly: a tie keeps full precision
PROBE = {"backbone": "resnet18", "batch": 4, "size": 128, "channels_last": True}  # ~0.3 s per fp32 step, 2 cores


@dataclass(frozen=True)
class CpuPrecision:
    """The CPU precision chosen, why, and the step times it was chosen on (``None`` when nothing was timed)."""

    precision: str
    reason: str
    fp32_s: float | None = None
    bf16_s: float | None = None

    def as_record(self) -> dict:
        """A plain dict for a run's recipe (``precision``, ``reason``, ``fp32_s``, ``bf16_s``)."""
        return asdict(self)


def native_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The native-bfloat16 features of this CPU (``amx_bf16``, ``avx512_bf16``, Arm ``bf16``); empty if none.

    Read from ``/proc/cpuinfo`` (or the text given); where that file does not exist (macOS, Windows), from
    torch's own CPU feature checks.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return _torch_bf16_flags()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return [flag for flag in NATIVE_BF16_FLAGS if flag in present]
    return []


def _torch_bf16_flags() -> list[str]:
    checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    return [flag for flag, check in checks.items() if getattr(torch.cpu, check, lambda: False)()]


def training_step(
    precision: str, backbone: str = "resnet18", batch: int = 4, size: int = 128, channels_last: bool = False
) -> Callable[[], None]:
    """A closure running one optimisation step (forward, risk MSE, backward, SGD) under ``precision``.

    ``32-true``, ``bf16-mixed`` (autocast to bfloat16, as Lightning's plugin does) or ``bf16-true`` (weights and
    activations in bfloat16); fixed, seeded data. Shared by :func:`measure` and ``bench/bench_cpu_precision.py``.
    """
    import timm

    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=1)
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dtype=dtype, memory_format=memory_format)
    images = torch.rand(batch, 3, size, size, dtype=dtype).contiguous(memory_format=memory_format)
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


def measure(precisions: Iterable[str] = CHOICES, repeat: int = 5, budget_s: float = 15.0, **probe) -> dict[str, float]:
    """Median seconds per training step under each precision, the precisions timed in turns.

    Timing in turns means a burst of other load on a shared machine slows every precision alike, and the median
    ignores a turn that a burst hit hardest. At most ``repeat`` turns, and no new turn once ``budget_s`` seconds
    have passed (at least two turns). ``probe``: :func:`training_step`'s workload (default :data:`PROBE`). Each
    precision runs one untimed step first (oneDNN builds its kernels on first use).
    """
    steps = {p: training_step(p, **(probe or PROBE)) for p in precisions}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {p: [] for p in steps}
    start = time.perf_counter()
    for turn in range(repeat):
        if turn >= 2 and time.perf_counter() - start > budget_s:
            break
        for precision, step in steps.items():
            began = time.perf_counter()
            step()
            times[precision].append(time.perf_counter() - began)
    return {p: statistics.median(t) for p, t in times.items()}


def choose(flags: list[str], times: dict[str, float] | None) -> CpuPrecision:
    """The decision of :func:`cpu_precision` from the CPU's native-bf16 flags and the measured step times."""
    if not flags:
        return CpuPrecision(
            "32-true",
            "this CPU has no native bfloat16 (no AMX-BF16, AVX512-BF16 or Arm BF16): bf16 would be emulated, "
            "~10x slower than fp32",
        )
    fp32, bf16 = times["32-true"], times["bf16-mixed"]
    measured = (
        f"a {PROBE['backbone']} training step took {bf16:.2f} s under bf16-mixed vs {fp32:.2f} s in fp32 "
        f"({fp32 / bf16:.2f}x)"
    )
    if fp32 / bf16 >= MIN_SPEEDUP:
        reason = f"this CPU runs bfloat16 natively ({', '.join(flags)}) and {measured}"
        return CpuPrecision("bf16-mixed", reason, fp32, bf16)
    reason = f"this CPU runs bfloat16 natively ({', '.join(flags)}) but {measured}, not {MIN_SPEEDUP}x faster"
    return CpuPrecision("32-true", reason, fp32, bf16)


@functools.cache
def cpu_precision() -> CpuPrecision:
    """The precision a GPU config's 16-bit training runs in on this CPU, and why (module docstring).

    Measured at most once per process. ``BIRADS_CALC_CPU_PRECISION=32-true|bf16-mixed`` decides instead.

    Raises:
        InputError: ``BIRADS_CALC_CPU_PRECISION`` holds something else than ``32-true``, ``bf16-mixed``, ``auto``.
    """
    forced = os.environ.get(PRECISION_ENV, "auto").strip()
    if forced in CHOICES:
        return CpuPrecision(forced, f"set by {PRECISION_ENV}")
    if forced != "auto":
        raise InputError(f"{PRECISION_ENV}={forced}: use one of {', '.join(CHOICES)} or auto")
    flags = native_bf16_flags()
    return choose(flags, measure() if flags else None)
