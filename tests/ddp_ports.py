"""Rendezvous ports for the multi-process tests.

A port taken from the kernel's ephemeral range (``bind(("", 0))``) can be handed out again, moments later, as the
source port of some outgoing connection (gloo's own rank-to-rank sockets, for one), and the rendezvous then fails
with EADDRINUSE. Ports below the ephemeral range are never handed out that way, so pick a free one there.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux default


def free_port() -> int:
    """A port that is free now and below the ephemeral range."""
    top = min(_ephemeral_start(), 32768)
    for port in random.sample(range(20000, top), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


# What a launcher (Lightning, torchrun, SLURM) leaves in the environment of the process it configured. An in-process
# Lightning run with strategy=ddp sets some of these in the pytest process itself; a subprocess inheriting them would
# believe it was launched externally (LOCAL_RANK) or reuse a port still held (MASTER_PORT), and hang or fail.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE",
                      "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")  # fmt: skip


def ddp_subprocess_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without launcher variables, with a fresh ``MASTER_PORT`` and one intra-op thread per rank."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    env.pop("BIRADS_RUN_DIR", None)
    return {**env, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port()), **extra}
