"""The errors birads-calc reports as one message instead of a traceback (docs/reliability.md).

Every error of the project that the user can act on derives from :class:`BiradsError`; the program's one error
boundary (``birads_calc.cli.main``) prints its message and exits with its ``exit_code``. :class:`InputError`
marks bad input (a manifest, image, mask, label, option, checkpoint or run folder the user gave): exit code 2, as
for a bad command line. Anything else (a bug) keeps its traceback.
"""

from __future__ import annotations


class BiradsError(Exception):
    """An error the user can act on; the message says what is wrong, where, and what to do. Exit code 1."""

    exit_code = 1


class InputError(BiradsError):
    """Bad input the user gave (file, row, option, checkpoint, run folder). Exit code 2, like a bad option."""

    exit_code = 2
