"""Masking of secrets in targets, URLs and library error messages.

Everything the project renders goes through these functions: exception messages,
logs, ``repr``, stats, pages, JSON and metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "********"

_SECRET_WORDS = (
    "password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "sslpassword",
    "authorization", "auth", "cookie", "key", "credential",
)

# key=value pairs of a libpq conninfo string or a query string.
_KV_RE = re.compile(
    r"(?P<key>\b(?:" + "|".join(_SECRET_WORDS) + r")\w*)(?P<sep>\s*[=:]\s*)"
    r"(?P<val>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
    r"|(?:(?:Bearer|Basic|Token|Digest)\s+)?[^\s&;,]+)",
    re.IGNORECASE,
)
# user:password@ in any URL.
_URL_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
# "Bearer xyz", "Basic xyz", "Token xyz" outside of key=value form.
_SCHEME_RE = re.compile(r"\b(?P<s>Bearer|Basic|Token|Digest)\s+(?P<v>[^\s,'\"]+)", re.IGNORECASE)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with credentials and every literal in ``secrets`` replaced by a mask."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    text = _URL_CRED_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KV_RE.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    text = _SCHEME_RE.sub(lambda m: f"{m['s']} {MASK}", text)
    return text


def mask_url(url: str) -> str:
    """A URL without password, query or fragment (``https://user@host:443/v1/``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def mask_exception(exc: BaseException | None, secrets: Iterable[str] = ()) -> str | None:
    """``"TypeName: message"`` of a library exception, masked, or None."""
    if exc is None:
        return None
    message = str(exc).strip().splitlines()
    first = message[0] if message else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return mask_text(text, secrets)
