"""Shared test setup: W&B never touches the network; real data is found through BIRADS_SHARED_DATA."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# W&B copies the console into its runs by wrapping sys.stdout/stderr once per process; under pytest those are the
# capture streams of whichever test came first, closed afterwards, and every later in-process run loses its files
os.environ.setdefault("WANDB_CONSOLE", "off")
# A GPU config on the CPU would time bf16 against fp32 on CPUs with native bf16 (training/precision.py): the tests'
# tiny models train fastest, and identically on every machine, in fp32. tests/test_precision.py tests the choice.
os.environ.setdefault("BIRADS_CALC_CPU_PRECISION", "32-true")
# Tests use tiny models: on a shared 2-core machine a second intra-op thread only adds contention (10x slower steps).
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("BIRADS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def isolated_process_state():
    """Undo what an in-process Lightning run leaves behind: launcher variables (LOCAL_RANK, MASTER_PORT, ...) in
    os.environ and an initialised process group; a later test or subprocess would otherwise inherit them."""
    saved = dict(os.environ)
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$BIRADS_SHARED_DATA``); tests that need it skip with a reason where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real public data not found at {SHARED_DATA} (set BIRADS_SHARED_DATA)")
    return SHARED_DATA
