"""The base class of the errors a user can fix: bad params, missing or corrupt data, unusable model files.

Stages and the `cnnlab` commands print them as one line, without a traceback, and exit with status 2. Each
subclass also derives from the built-in error it refines (ValueError, RuntimeError, FileNotFoundError), so
callers that catch those still do.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message names the problem and how to fix it."""
