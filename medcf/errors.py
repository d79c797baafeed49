"""Exceptions that carry a message meant for a person, not a traceback.

The command line prints ``str(error)`` on one line and exits with
``error.exit_code``; library callers can catch :class:`MedCFError` and show the
same message in a GUI. Keeping the message self-contained (what, where, what to
do) is the contract of every raise site.
"""

from __future__ import annotations


class MedCFError(Exception):
    """Base class of every error MedCF reports to a user."""

    exit_code: int = 2


class InputError(MedCFError):
    """The input cannot be used: missing, not DICOM, or not a chest radiograph."""


class UnsupportedTransferSyntaxError(InputError):
    """Pixel data is encoded with a transfer syntax no installed plugin decodes."""


class OutputError(MedCFError):
    """An output cannot be written without losing or overwriting something."""
