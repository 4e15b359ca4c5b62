"""Masking of secrets, and escaping of control characters, in everything the project renders.

Everything the project renders goes through these functions: exception messages,
logs, ``repr``, stats, pages, JSON, metrics and the shared status store.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "MASK", "SECRET_WORDS", "is_secret_name", "mask_exception", "mask_text", "mask_url",
    "printable", "secret_strings", "secrets_in_options", "url_secrets",
]

MASK = "********"

#: A name containing any of these (in any case, anywhere: ``access_token``,
#: ``PGPASSWORD``, ``x-api-key``) names a secret.
SECRET_WORDS = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "apikey", "api_key",
    "api-key", "authorization", "auth", "cookie", "credential", "private_key", "access_key",
    "signature",
)
# In text, "key=value" pairs are masked too (``?key=...``), though an option merely named
# "...key..." (a keyfile path) is not a secret by name.
_TEXT_WORDS = (*SECRET_WORDS, "key")

_WORD_RE = re.compile("|".join(re.escape(word) for word in _TEXT_WORDS), re.IGNORECASE)
# "KeyError: 'x'", "TokenExpiredError: ...": an exception's type, not a secret's name.
_NOT_NAMES = ("Error", "Exception", "Warning")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# What follows a secret name in a libpq conninfo, a query string, a header, or a dict repr
# or JSON ('password': '...', "password": "..."): a separator and the value.
_VALUE_RE = re.compile(
    r"\s*[=:]\s*(?P<val>b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\""
    r"|\([^()]*\)|\[[^\[\]]*\]|\{[^{}]*\}"
    r"|(?:(?:Bearer|Basic|Token|Digest)\s+)?[^\s&;,'\")\]}]+)",
    re.IGNORECASE,
)
# user:password@ in any URL.
_URL_CRED_RE = re.compile(r"(?<![\w+.-])(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
# The query string of a URL or path ("/health?access_token=..."): it may carry a secret
# under any name.
_QUERY_RE = re.compile(r"(?<=[\w/.\]-])\?(?P<q>[^\s#'\"<>?=]*=[^\s#'\"<>]*)")
# "Bearer xyz", "Basic xyz", "Token xyz" outside of key=value form.
_SCHEME_RE = re.compile(r"\b(?P<s>Bearer|Basic|Token|Digest)\s+(?P<v>[^\s,'\"]+)", re.IGNORECASE)
# A quoted fragment of a library's message ('missing "=" after "def"'): masked when it is
# part of a secret, however short, since a parser quotes the piece it choked on.
_QUOTED_RE = re.compile(r"\"([^\"\n]+)\"|'([^'\n]+)'")
#: Literal secrets shorter than this are masked only as quoted fragments: replacing every
# "ab" in a message would mask ordinary words, not protect anything.
_MIN_LITERAL = 3
#: A query value this long is taken for a key whatever its name.
_MIN_QUERY_SECRET = 8


def is_secret_name(name: object, extra: Iterable[str] = ()) -> bool:
    """True when ``name`` contains a secret word (or one of ``extra``) anywhere."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return any(word in lowered for word in (*SECRET_WORDS, *(e.lower() for e in extra)))


def _seen_before(item: Any, seen: set[int]) -> bool:
    """Whether the container ``item`` was walked already (one that holds itself, or is
    held twice, is walked once); records it otherwise."""
    if not isinstance(item, Mapping | list | tuple | set | frozenset):
        return False
    if id(item) in seen:
        return True
    seen.add(id(item))
    return False


def secret_strings(value: Any) -> list[str]:
    """Every string inside ``value``: a string, bytes, a number, or any nesting of
    mappings (their values), sequences and sets (a dict of credentials, an auth tuple)."""
    found: list[str] = []
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if _seen_before(item, seen):
            continue
        if isinstance(item, str):
            if item:
                found.append(item)
        elif isinstance(item, bytes | bytearray):
            if item:
                found.append(bytes(item).decode("utf-8", "replace"))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            found.append(str(item))
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


def secrets_in_options(options: Mapping[str, Any], names: Iterable[str] = ()) -> list[str]:
    """Every string under a name that is secret (:func:`is_secret_name`, or containing one
    of ``names``), at any depth of nested mappings and sequences."""
    extra = tuple(names)
    found: list[str] = []
    stack: list[Any] = [options]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if _seen_before(item, seen):
            continue
        if isinstance(item, Mapping):
            for key, value in item.items():
                if is_secret_name(key, extra):
                    found += secret_strings(value)
                else:
                    stack.append(value)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


def _literal_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret as written, URL-quoted and repr-escaped, longest first (a secret that
    contains another is masked whole)."""
    forms: set[str] = set()
    for secret in secrets:
        if not isinstance(secret, str) or not secret:
            continue
        forms.update({secret, quote(secret, safe=""), quote_plus(secret, safe=""),
                      repr(secret)[1:-1]})
    return sorted(forms, key=len, reverse=True)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with credentials, URL query strings and every literal in ``secrets``
    replaced by a mask."""
    literals = _literal_forms(secrets)
    for secret in literals:
        if len(secret) >= _MIN_LITERAL:
            text = text.replace(secret, MASK)
    if literals:
        def fragment(match: re.Match[str]) -> str:
            inner = match[1] if match[1] is not None else match[2]
            if any(c.isalnum() for c in inner) and any(inner in secret for secret in literals):
                return match[0][0] + MASK + match[0][0]
            return match[0]

        text = _QUOTED_RE.sub(fragment, text)
    text = _URL_CRED_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY_RE.sub(f"?{MASK}", text)
    text = _mask_pairs(text)
    text = _SCHEME_RE.sub(lambda m: f"{m['s']} {MASK}", text)
    return text


def _mask_pairs(text: str) -> str:
    """Mask the value of every ``name=value`` / ``name: value`` pair whose name (quoted or
    not) holds a secret word anywhere. Linear in ``text``: each name is scanned once."""
    out: list[str] = []
    pos = 0
    name_end = 0
    for word in _WORD_RE.finditer(text):
        if word.start() < name_end:
            continue  # another secret word inside a name already looked at
        start, end = word.start(), word.end()
        while start > name_end and text[start - 1] in _NAME_CHARS:
            start -= 1
        while end < len(text) and text[end] in _NAME_CHARS:
            end += 1
        name_end = end
        if start > 0 and text[start - 1] in "'\"" and text[end:end + 1] == text[start - 1]:
            end += 1
        value = _VALUE_RE.match(text, end)
        if value is None or start < pos or text[start:name_end].endswith(_NOT_NAMES):
            continue
        out += [text[pos:value.start("val")], MASK]
        pos = name_end = value.end()
    out.append(text[pos:])
    return "".join(out)


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
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def url_secrets(url: object) -> list[str]:
    """The password of ``url`` and the query values that may be secrets (under a secret
    name, or long enough to be a key), as written and decoded. Every query string is
    masked in text anyway; these literals also catch a value a library shows elsewhere,
    while ``?format=json`` does not turn every "json" into a mask."""
    if not isinstance(url, str):
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote_plus(password)] if password else []
    for pair in filter(None, re.split(r"[&;]", parts.query)):
        name, _, value = pair.partition("=")
        if value and (is_secret_name(unquote_plus(name)) or len(value) >= _MIN_QUERY_SECRET):
            found += [value, unquote_plus(value)]
    return found


def mask_exception(exc: BaseException | None, secrets: Iterable[str] = ()) -> str | None:
    """``"TypeName: message"`` of a library exception, masked and on one line, or None."""
    if exc is None:
        return None
    message = str(exc).strip().splitlines()
    first = message[0] if message else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = printable(mask_text(text, secrets))
    # Masked before it is cut, so that no secret is cut in half and left showing.
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "\u2026"


#: The longest one-line message :func:`mask_exception` returns (a hostile server's error
#: text can be megabytes long).
MAX_MESSAGE = 1000

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` as one line that cannot forge another: line breaks, other control
    characters and invisible format characters (bidi overrides) are shown escaped
    (``\\n``, ``\\x1b``, ``\\u202e``)."""
    value = str(text)
    if value.isprintable():
        return value
    out = []
    for char in value:
        if char.isprintable() or unicodedata.category(char) == "Zs":  # no-break spaces too
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
