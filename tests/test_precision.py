"""The CPU precision of a GPU config without a GPU: bf16-mixed only where the CPU runs bf16 natively and measured
faster, else 32-true, with the reason printed at start (training/precision.py, cli/trainer.py cpu_fallback)."""

from __future__ import annotations

import pytest
from jsonargparse import Namespace
from lightning.pytorch import Trainer

from birads_calc.cli.trainer import cpu_fallback
from birads_calc.errors import InputError
from birads_calc.training import precision
from birads_calc.training.precision import CpuPrecision, choose, cpu_precision, measure, native_bf16_flags

# /proc/cpuinfo lines of three real CPUs (trimmed): Sapphire Rapids (AMX), Haswell (AVX2 only), Neoverse V1 (Arm)
SAPPHIRE_RAPIDS = "flags\t\t: fpu vme avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16\n"
HASWELL = "processor\t: 0\nflags\t\t: fpu vme sse4_2 avx avx2 fma\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm sve\n"


@pytest.fixture(autouse=True)
def fresh_decision(monkeypatch):
    """Each test decides anew (the decision is cached per process) and undoes its environment."""
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    cpu_precision.cache_clear()
    yield
    cpu_precision.cache_clear()


def test_native_bf16_is_read_from_the_cpu_flags():
    assert native_bf16_flags(SAPPHIRE_RAPIDS) == ["amx_bf16", "avx512_bf16"]
    assert native_bf16_flags(HASWELL) == []
    assert native_bf16_flags(NEOVERSE_V1) == ["bf16"]
    assert native_bf16_flags("") == []


def test_no_native_bf16_keeps_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: [])
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("nothing to measure without native bf16"))
    choice = cpu_precision()
    assert choice.precision == "32-true" and "no native bfloat16" in choice.reason
    assert (choice.fp32_s, choice.bf16_s) == (None, None)


@pytest.mark.parametrize(
    ("fp32", "bf16", "expected"),
    [(0.42, 0.22, "bf16-mixed"), (0.10, 0.20, "32-true"), (0.30, 0.29, "32-true")],  # faster, slower, a tie
)
def test_native_bf16_is_taken_only_when_it_measured_clearly_faster(monkeypatch, fp32, bf16, expected):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: ["amx_bf16"])
    monkeypatch.setattr(precision, "measure", lambda *a, **k: {"32-true": fp32, "bf16-mixed": bf16})
    choice = cpu_precision()
    assert choice == CpuPrecision(expected, choice.reason, fp32, bf16)
    assert "amx_bf16" in choice.reason and f"{fp32 / bf16:.2f}x" in choice.reason  # why: the flag and the ratio
    assert choice.as_record() == {"precision": expected, "reason": choice.reason, "fp32_s": fp32, "bf16_s": bf16}


def test_the_environment_decides_instead(monkeypatch):
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("a forced choice is not measured"))
    monkeypatch.setenv(precision.PRECISION_ENV, "bf16-mixed")
    assert cpu_precision() == CpuPrecision("bf16-mixed", "set by BIRADS_CALC_CPU_PRECISION")
    cpu_precision.cache_clear()
    monkeypatch.setenv(precision.PRECISION_ENV, "fp8")
    with pytest.raises(InputError, match="BIRADS_CALC_CPU_PRECISION=fp8: use one of 32-true, bf16-mixed or auto"):
        cpu_precision()


def test_the_measurement_runs_both_precisions_here():
    times = measure(repeat=1, backbone="test_resnet", batch=2, size=32)
    assert set(times) == {"32-true", "bf16-mixed"} and all(0 < t < 60 for t in times.values())
    assert choose([], times).precision == "32-true"


def test_cpu_fallback_prints_the_choice_and_lightning_accepts_it(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(precision, "measure", lambda *a, **k: {"32-true": 0.4, "bf16-mixed": 0.2})
    trainer = Namespace(accelerator="gpu", devices=2, strategy="ddp", precision="16-mixed", num_nodes=1,
                        accumulate_grad_batches=1)  # fmt: skip
    changes = cpu_fallback(trainer, cuda_available=False)
    assert trainer.precision == "bf16-mixed"
    assert changes[-1].startswith("trainer.precision 16-mixed -> bf16-mixed (this CPU runs bfloat16 natively")
    assert "2.00x" in changes[-1]
    explicit = Namespace(accelerator="cpu", devices=1, strategy="auto", precision="32-true", num_nodes=1,
                         accumulate_grad_batches=1)  # fmt: skip
    assert cpu_fallback(explicit, cuda_available=False) == [] and explicit.precision == "32-true"  # asked for: kept
    built = Trainer(accelerator="cpu", devices=1, precision=trainer.precision, logger=False, enable_progress_bar=False)
    assert built.precision == "bf16-mixed"
