"""The input side: DICOM reading, the manifest, windows/attention ROIs, the crop cache and the data module.

Submodules are imported where used (``from birads_calc.data.dicom import read_image``) so that light tools such
as ``check-data`` do not pay for importing Lightning.
"""
