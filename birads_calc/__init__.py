"""birads-calc: a BI-RADS category for every calcification on a mammogram.

Implements Zhang et al., "BI-RADS Classification of Calcification on Mammograms": attention ROI patches, a timm
backbone regressing a risk score, the malignancy-adjusted MSE loss and the MAQWK metrics.
"""

__version__ = "0.1.0"
