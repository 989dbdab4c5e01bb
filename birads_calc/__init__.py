"""birads-calc: a BI-RADS category for every calcification on a mammogram.

Implements Zhang et al., "BI-RADS Classification of Calcification on Mammograms": attention ROI patches, a timm
backbone regressing a risk score, the malignancy-adjusted MSE loss and the MAQWK metrics.

The package is laid out by pipeline stage; a module imports only from stages below its own (tested by
``tests/test_layout.py``, drawn in ``docs/architecture.md``):

0. foundations ``categories`` (BI-RADS scales), ``errors``, ``io`` (atomic writes), ``runs`` (run folders),
   ``progress`` (progress and logging), ``packaged_configs`` (the paper configs in ``configs/``, package data)
1. ``data`` (manifest, DICOM, windows/ROIs, cache, data module, synthetic data, dataset converters),
   ``metrics`` (QWK, MAQWK, Eq. 5-7), ``losses`` (MAMSE, Eq. 2-4)
2. ``training`` (the LightningModule, callbacks, guards)
3. ``inference`` (one study without the cache), ``reporting`` (predictions, reports, overlays, compare)
4. ``cli`` (the ``birads-calc`` program)
"""

# The one place the version is written: pyproject.toml reads it (setuptools dynamic version), `--version` prints it.
__version__ = "0.1.0"
