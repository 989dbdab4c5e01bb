"""Training losses (paper §2.3, Eq. 1-4): MAMSE, plain MSE on the risk, and cross-entropy for the MC baseline.

Stage: the paper's formulas, beside :mod:`birads_calc.metrics`. Pure tensor code: imports torch,
:mod:`birads_calc.categories` and jsonargparse's number types only, never Lightning, the data pipeline or a
stage above. The public path ``birads_calc.losses.MAMSELoss`` (DESIGN §5) is this package.
"""

from birads_calc.losses.mamse import ClassCrossEntropyLoss, LossName, MamseAlpha, MAMSELoss, RiskMSELoss, build_loss

__all__ = ["ClassCrossEntropyLoss", "LossName", "MAMSELoss", "MamseAlpha", "RiskMSELoss", "build_loss"]
