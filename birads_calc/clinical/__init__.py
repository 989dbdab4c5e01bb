"""Clinical DICOM in and out: studies from a PACS (DICOMweb) or a folder, results back as DICOM SEG + SR.

Stage (level 4): owns ``birads-calc predict --dicomweb/--dicom_dir`` (``predict``) and ``birads-calc store``
(``store``: confirmed stores, re-sending kept results), reading studies (``studies``: what is rated or skipped;
``pacs``: DICOMweb with login and TLS), their calcification regions (``regions``: the study's calcification SEGs,
the detector on the images they leave uncovered), the result objects built with highdicom (``results``: SEGs and
the TID 1500 SR; ``cad_sr``: the Mammography CAD SR; coded with ``codes``) and its one error type (``errors``).
May import every stage below it: the foundations, ``data``, ``metrics``, ``losses``, ``training``, ``detection``,
``inference`` and ``reporting``; never ``cli``, which routes ``predict --dicomweb/--dicom_dir`` here.
"""

from birads_calc.clinical.errors import ClinicalError
from birads_calc.clinical.predict import configure_parser, main

__all__ = ["ClinicalError", "configure_parser", "main"]
