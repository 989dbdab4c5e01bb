"""Clinical DICOM in and out: studies from a PACS (DICOMweb) or a folder, results back as DICOM SEG + SR.

Stage (level 4): owns ``birads-calc predict --dicomweb/--dicom_dir`` (``predict``), reading studies (``studies``,
``pacs``), their calcification regions (``regions``: a DICOM SEG of the study, else the detector), the result
objects built with highdicom (``results``, coded with ``codes``) and its one error type (``errors``). May import
every stage below it: the foundations, ``data``, ``metrics``, ``losses``, ``training``, ``detection``,
``inference`` and ``reporting``; never ``cli``, which routes ``predict --dicomweb/--dicom_dir`` here.
"""

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.predict import configure_parser, main

__all__ = ["ClinicalError", "configure_parser", "main"]
