"""The input side: DICOM reading, the manifest, windows/attention ROIs, the crop cache and the data module."""
