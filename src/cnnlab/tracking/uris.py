"""Credentials in URIs: found, and hidden before anything is printed or logged.

A tracking or backend-store URI may carry a password (`postgresql://user:password@host/db`, `?password=`);
printed as it is, it would land in terminals, CI logs and shell history."""

from __future__ import annotations

import re
import urllib.parse

HIDDEN = "***"
# scheme://user:password@: the password runs to the last `@` before the path (a raw `@` in it stays hidden)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s/]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<head>[?&]password=)[^&\s]*")


def redact(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***; everything else as it was."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}", text)


def has_password(uri: str) -> bool:
    """Whether `uri` carries a password, in its user part or as a `password=` query parameter."""
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qs(parts.query)
    return parts.password is not None or any(key.lower() == "password" for key in query)
