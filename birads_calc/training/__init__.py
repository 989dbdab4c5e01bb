"""Training: the LightningModule and what keeps a training run sound.

Stage: owns ``BiradsClassifier`` (timm backbone -> risk or logits, paper §2.3/§3.2, in ``model``), the per-epoch
``last.ckpt`` and W&B image callbacks (``callbacks``) and the non-finite-loss guard (``guards``). It may import the
foundations (``categories``, ``io``, ``runs``), ``data``, ``metrics`` and ``losses``; never ``inference``,
``reporting``, ``cli`` or a sibling stage at its own level.
"""
