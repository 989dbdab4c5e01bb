"""``BiradsDataModule``: manifest -> attention-ROI batches (paper §2.2, §3.1)."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class BiradsDataModule(L.LightningDataModule):
    """Placeholder until the data issue lands: holds the public signature only.

    Args:
        manifest: the manifest CSV (DESIGN §3).
        num_classes: 6 (BI-RADS 5th edition) or 4 (older standard).
    """

    def __init__(self, manifest: Path | None = None, num_classes: int = 6):
        super().__init__()
        self.save_hyperparameters()
