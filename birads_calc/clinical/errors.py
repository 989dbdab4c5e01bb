"""The one error type of the clinical path: a message for the user, never a traceback."""

from __future__ import annotations


class ClinicalError(RuntimeError):
    """A study, PACS or DICOM object that cannot be used; the message names the study / URL / file and the fix.

    ``exit_code`` is 2 for input the user can fix (a study not found, a SEG that does not fit its image) and 1 for
    a failure after the results were written (a store the PACS rejected: the local DICOM files are kept).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
