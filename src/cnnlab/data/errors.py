"""The error of data that does not hold what its format or layout promises."""

from __future__ import annotations

from cnnlab.util.errors import UserError


class DataFormatError(UserError, ValueError):
    """A file does not hold what its format promises, or a folder is not laid out as a data set."""
