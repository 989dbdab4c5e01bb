"""``BiradsClassifier``: timm backbone -> risk score (regression) or N logits (MC baseline). Paper §2.3, §3.2."""

from __future__ import annotations

import lightning as L


class BiradsClassifier(L.LightningModule):
    """Placeholder until the model issue lands: holds the public signature only.

    Args:
        backbone: any timm model name.
        num_classes: 6 or 4 (linked from the data module).
        loss: ``"mamse"``, ``"mse"`` or ``"ce"`` (multi-class baseline).
        alpha: MAMSE weighting coefficient (paper default 0.2).
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 6, loss: str = "mamse", alpha: float = 0.2):
        super().__init__()
        self.save_hyperparameters()
