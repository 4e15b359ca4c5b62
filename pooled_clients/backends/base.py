"""The extension point: subclass :class:`ClientBackend` to pool any client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import hashlib
import inspect
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from pooled_clients.masking import mask_exception, secrets_in_options

T = TypeVar("T")

__all__ = [
    "MAX_SECONDS",
    "MIN_SECONDS",
    "AsyncClientBackend",
    "CallableOptionError",
    "ClientBackend",
    "check_number",
    "describe_key_hash",
    "did_you_mean",
    "number_fault",
    "provided_at_creation",
    "show",
    "span",
    "time_left",
    "unknown_options",
    "without_callables",
]

#: The longest duration any setting or option accepts (one day): a longer wait is a
#: mistake, and thread, socket and timer APIs reject values not far beyond it.
MAX_SECONDS = 86400.0
#: The shortest duration a setting that must be positive accepts: less cannot open even
#: a connection to localhost reliably.
MIN_SECONDS = 0.1

_deadline = threading.local()
_provided_lock = threading.Lock()


def time_left(default: float) -> float:
    """Seconds left before the current acquire's deadline, at most ``default``.

    The engine sets a per-thread deadline around ``create()`` and ``check()`` so that a
    backend honouring :attr:`ClientBackend.connect_timeout` also honours the caller's
    remaining acquire budget.
    """
    deadline: float | None = getattr(_deadline, "value", None)
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))


def show(value: object, limit: int = 60) -> str:
    """A short ``repr`` of a setting's value for a message: never raises, never huge."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # str() of a huge int raises beyond sys.get_int_max_str_digits(); the size says enough.
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _format_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def span(minimum: float, maximum: float, *, integer: bool = False,
         seconds: bool = True) -> str:
    """``"a number of seconds from 0.1 to 86400"``: what a bounded number accepts."""
    noun = "an integer" if integer else "a number of seconds" if seconds else "a number"
    return f"{noun} from {_format_bound(minimum)} to {_format_bound(maximum)}"


def number_fault(value: object, minimum: float, maximum: float, *,
                 integer: bool = False) -> str | None:
    """``"type"`` when ``value`` is not a number (a bool is not one, nor a float where an
    integer is expected), ``"range"`` when it is NaN, infinite or outside
    ``[minimum, maximum]``, None when it is fine. Never raises, even for ``10**400``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "type"
    if integer and not isinstance(value, int):
        return "type"
    # NaN fails every comparison and infinity exceeds any maximum; int/float comparisons
    # are exact in Python, so a huge integer cannot overflow here.
    return None if minimum <= value <= maximum else "range"


def provided_at_creation(value: object) -> bool:
    """True for an option value that is a callable taking no arguments (not a class): it
    is called for every client creation, so only its result, not the callable, can be
    checked. A callable that needs arguments (a ``row_factory``, a requests ``AuthBase``)
    is an option value in its own right and is never called by the pool."""
    if not callable(value) or isinstance(value, type):
        return False
    try:
        inspect.signature(value).bind()
    except TypeError:
        return False  # it needs arguments
    except ValueError:
        return True  # no signature to inspect (some builtins): called like any callable
    return True


class CallableOptionError(Exception):
    """A callable in ``OPTIONS`` raised, or did not return within ``CONNECT_TIMEOUT``: the
    creation attempt fails with this error (the callable's own exception chained)."""


#: A path to a callable value inside OPTIONS: ``("password",)``, ``("headers", "Authorization")``.
OptionPath = tuple[str, ...]


def _provider_paths(options: Mapping[str, Any], never_called: Iterable[str],
                    prefix: OptionPath = (), depth: int = 0) -> list[OptionPath]:
    """Where ``options`` holds values called for each creation (top level and inside dicts)."""
    found: list[OptionPath] = []
    if depth > 8:  # a dict that contains itself
        return found
    for name, value in options.items():
        if not isinstance(name, str) or (not prefix and name in never_called):
            continue
        if provided_at_creation(value):
            found.append((*prefix, name))
        elif isinstance(value, Mapping):
            found += _provider_paths(value, never_called, (*prefix, name), depth + 1)
    return found


#: In :func:`_with_values`, a value that leaves its option out.
_LEFT_OUT = object()


def _with_values(options: Mapping[str, Any], values: dict[OptionPath, Any]) -> dict[str, Any]:
    """A copy of ``options`` with the value at each path replaced (or left out, for
    :data:`_LEFT_OUT`); the dicts on the way are copied, never changed."""
    result = dict(options)
    for path, value in values.items():
        node = result
        for name in path[:-1]:
            node[name] = dict(node[name])
            node = node[name]
        if value is _LEFT_OUT:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return result


def _without(options: Mapping[str, Any], paths: list[OptionPath]) -> dict[str, Any]:
    """A copy of ``options`` with the values at ``paths`` left out."""
    return _with_values(options, dict.fromkeys(paths, _LEFT_OUT))


def _secret_texts(value: object, depth: int = 0) -> list[str]:
    """The strings in a callable's result (itself, or inside a dict, list or tuple)."""
    if isinstance(value, str):
        return [value, *(part for part in value.split() if len(part) >= 6)] if value else []
    if isinstance(value, bytes):
        return _secret_texts(value.decode("utf-8", "replace"), depth)
    if depth < 4 and isinstance(value, Mapping):
        return [t for v in value.values() for t in _secret_texts(v, depth + 1)]
    if depth < 4 and isinstance(value, list | tuple):
        return [t for v in value for t in _secret_texts(v, depth + 1)]
    return []


def without_callables(options: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """For ``check_options``: ``options`` without the values provided at creation (top level
    or inside dicts), and the top-level names that are provided (present, so not missing)."""
    paths = _provider_paths(options, ())
    return _without(options, paths), {path[0] for path in paths}


def _label(path: OptionPath) -> str:
    return "OPTIONS" + "".join(f"[{name!r}]" for name in path)


def check_number(options: Mapping[str, Any], name: str, minimum: float, maximum: float, *,
                 integer: bool = False, seconds: bool = True,
                 allow_none: bool = False) -> list[str]:
    """One problem when ``options[name]`` is present and not a number within bounds."""
    if name not in options:
        return []
    value = options[name]
    if (value is None and allow_none) or provided_at_creation(value):
        return []
    if number_fault(value, minimum, maximum, integer=integer) is None:
        return []
    expected = span(minimum, maximum, integer=integer, seconds=seconds)
    return [f"{name!r} is {show(value)}; expected {expected}{' or None' if allow_none else ''}."]


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (a swap of two neighbours counts once)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """``" Did you mean 'base_url'?"`` for a near miss (case aside, at most two edits), or
    ``""``: a suggestion far from what was typed (``LOCATION`` -> ``OPTIONS``) misleads."""
    if not isinstance(name, str):
        return ""
    by_folded = {candidate.casefold(): candidate for candidate in candidates}
    folded = name.casefold()
    if folded in by_folded:
        return f" Did you mean {by_folded[folded]!r}?"
    for close in difflib.get_close_matches(folded, list(by_folded), n=3, cutoff=0.6):
        if _edit_distance(folded, close) <= 2:
            return f" Did you mean {by_folded[close]!r}?"
    return ""


def unknown_options(options: Mapping[str, Any], known: Iterable[str],
                    expected: str | None = None) -> list[str]:
    """One problem per option name not in ``known`` (for ``check_options``), with a
    suggestion for a near miss; ``expected`` replaces the list of names when it is long."""
    names = list(known)
    expected = expected or f"one of {', '.join(names)}"
    return [f"unknown option {show(name)}; expected {expected}.{did_you_mean(name, names)}"
            for name in options if name not in names]


def describe_key_hash(key: Any) -> str:
    """``"key#1a2b3c4d"``: a short hash of ``repr(key)``, stable across processes."""
    digest = hashlib.blake2b(repr(key).encode("utf-8", "backslashreplace"), digest_size=4)
    return f"key#{digest.hexdigest()}"


class _DeadlineScope:
    __slots__ = ("_previous", "_value")

    def __init__(self, deadline: float | None) -> None:
        self._value = deadline
        self._previous: float | None = None

    def __enter__(self) -> None:
        self._previous = getattr(_deadline, "value", None)
        _deadline.value = self._value

    def __exit__(self, *exc: object) -> None:
        _deadline.value = self._previous


def deadline_scope(deadline: float | None) -> _DeadlineScope:
    """Bound every :func:`time_left` call in this thread by ``deadline`` (monotonic)."""
    return _DeadlineScope(deadline)


class ClientBackend(Generic[T]):
    """Creates, validates, resets and closes one kind of client.

    One instance serves one pool (one per endpoint when ``ENDPOINTS`` is used) and is
    built as ``Backend(alias, options)`` where ``options`` is the pool's ``OPTIONS``.
    Methods are called from many threads; keep per-client state on the client.

    The engine never hands a backend a client inherited across ``fork()``: it abandons
    those itself, without I/O.
    """

    #: True for backends whose clients must be used from async code only.
    is_async: ClassVar[bool] = False
    #: Option names whose values are secrets (masked wherever they are shown), besides
    #: every name holding a secret word anywhere (``access_token``, ``client_secret``,
    #: ``x-api-key``; see :data:`pooled_clients.masking.SECRET_WORDS`), at any depth.
    secret_options: ClassVar[tuple[str, ...]] = ("password", "token", "secret")

    #: Options whose values may be callables used as they are (factories, hooks): never
    #: called by the pool, whatever their signature.
    never_called: ClassVar[frozenset[str]] = frozenset()
    #: Attributes a backend built for one creation shares with the pool's backend (request
    #: statistics, say) rather than starting afresh.
    shared_attributes: ClassVar[tuple[str, ...]] = ()

    #: Seconds one creation attempt may take; set by the pool from ``CONNECT_TIMEOUT``.
    _connect_timeout: float = 5.0
    #: Where OPTIONS holds callables called for each creation (see :meth:`from_options`).
    providers: tuple[OptionPath, ...] = ()
    #: OPTIONS as given, callables included (set by :meth:`from_options`).
    _given_options: dict[str, Any]

    def __init__(self, alias: str, options: Mapping[str, Any]) -> None:
        self.alias = alias
        self.options: dict[str, Any] = dict(options)

    @classmethod
    def from_options(cls, alias: str, options: Mapping[str, Any]) -> Self:
        """Build the pool's backend from OPTIONS that may hold callables.

        Each value that is a callable taking no arguments (at the top level or inside a
        dict such as ``headers``) is called for every client creation: ``__init__`` sees the
        OPTIONS without them (for :meth:`describe`, :meth:`check` and the like), and each
        creation builds a backend of the same class from the values the callables returned
        (:meth:`creation_backend`). Without callables this is ``cls(alias, options)``.
        """
        paths = _provider_paths(options, cls.never_called)
        if not paths:
            return cls(alias, options)
        backend = cls(alias, _without(options, paths))
        backend.providers = tuple(paths)
        backend._given_options = dict(options)
        return backend

    def creation_backend(self) -> Self:
        """The backend that creates the next client: this one, or, when OPTIONS holds
        callables, one built from their results. Each callable is called once, in a
        helper thread bounded by ``connect_timeout`` (the rest of it is left for the
        connection); one that raises or does not return is a :class:`CallableOptionError`.
        """
        if not self.providers:
            return self
        start = time.monotonic()
        timeout = self.connect_timeout
        try:
            values = self._resolving().result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._too_slow(timeout) from None
        return self._built_from(values, timeout - (time.monotonic() - start))

    async def acreation_backend(self) -> Self:
        """:meth:`creation_backend` for async code: the callables run in a helper thread,
        never on the event loop."""
        if not self.providers:
            return self
        start = time.monotonic()
        timeout = self._connect_timeout
        try:
            values = await asyncio.wait_for(asyncio.wrap_future(self._resolving()), timeout)
        except TimeoutError:
            raise self._too_slow(timeout) from None
        return self._built_from(values, timeout - (time.monotonic() - start))

    def _resolving(self) -> concurrent.futures.Future[dict[OptionPath, Any]]:
        """Call every callable once, in order, in a daemon thread: a callable that hangs
        holds that thread, never the pool's."""
        future: concurrent.futures.Future[dict[OptionPath, Any]] = concurrent.futures.Future()

        def run() -> None:
            values: dict[OptionPath, Any] = {}
            for path in self.providers:
                node: Any = self._given_options
                for name in path:
                    node = node[name]
                try:
                    values[path] = node()
                except BaseException as exc:
                    error = CallableOptionError(
                        f"the callable at {_label(path)} raised "
                        f"{mask_exception(exc, [*self.secrets(), *self.provided_secrets()])}")
                    error.__cause__ = exc
                    future.set_exception(error)
                    return
                self._remember(_secret_texts(values[path]))
            future.set_result(values)

        threading.Thread(target=run, daemon=True,
                         name=f"pooled_clients-options-{self.alias}").start()
        return future

    def _too_slow(self, timeout: float) -> CallableOptionError:
        names = ", ".join(_label(path) for path in self.providers)
        return CallableOptionError(f"the callable(s) at {names} did not return within "
                                   f"CONNECT_TIMEOUT ({max(0.0, timeout):.3g}s)")

    def _built_from(self, values: dict[OptionPath, Any], remaining: float) -> Self:
        backend = type(self)(self.alias, _with_values(self._given_options, values))
        backend._connect_timeout = max(0.001, remaining)
        for name in self.shared_attributes:
            setattr(backend, name, getattr(self, name))
        # What the built backend counts as secret (a password inside a conninfo that a
        # callable returned) is masked in whatever the pool renders from now on.
        self._remember(backend.secrets())
        return backend

    def _remember(self, texts: Iterable[str]) -> None:
        with _provided_lock:
            provided = self.__dict__.setdefault("_provided", deque(maxlen=64))
            for text in texts:
                if text and text not in provided:
                    provided.append(text)

    def provided(self, name: str) -> bool:
        """Whether option ``name`` is a callable called for each creation (for
        :meth:`describe`, which cannot show its value)."""
        return (name,) in self.providers

    def provided_secrets(self) -> tuple[str, ...]:
        """What the callables in OPTIONS returned lately: masked like any secret."""
        provided = self.__dict__.get("_provided")
        return tuple(provided) if provided else ()

    @property
    def connect_timeout(self) -> float:
        """Seconds the current creation attempt may take (``CONNECT_TIMEOUT``, or less
        when the caller's acquire timeout runs out first)."""
        return time_left(self._connect_timeout)

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._connect_timeout = float(value)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with ``options``, each a sentence; reported as system-check errors."""
        return []

    def create(self) -> T:
        """Open and return a new client. Must not take longer than ``connect_timeout``."""
        raise NotImplementedError(f"{type(self).__name__} must implement create()")

    def close(self, client: T) -> None:
        """Close ``client``. Must not raise for a client that is already broken."""

    def check(self, client: T) -> None:
        """Raise when ``client`` is unusable. Called on checkout per ``CHECK`` policy."""

    def reset(self, client: T) -> bool:
        """Make ``client`` ready for the next caller on release; False discards it."""
        return True

    def reset_nowait(self, client: T) -> bool:
        """Make ``client`` ready for the next caller when that takes no I/O (reading a
        status flag, clearing cookies), and say whether it is: True lets a release from
        async code put it back at once, with no worker thread to run :meth:`reset` in;
        False runs :meth:`reset` as usual. The default: True when the backend keeps the
        base :meth:`reset`, which does nothing."""
        return type(self).reset is ClientBackend.reset

    def describe(self) -> str:
        """The target people see: host, port, database, user; never a secret."""
        return type(self).__name__

    @classmethod
    def keyed_placeholders(cls) -> dict[str, Any]:
        """Stand-ins for the options a key supplies (a TCP host and port), so that the
        options of a keyed pool, which may leave them out, can be checked and a backend
        built from them to answer :meth:`key_options` and :meth:`describe_key`. Override
        with what a key of this backend supplies."""
        return {}

    def key_options(self, key: Any) -> dict[str, Any]:
        """Options for the clients of ``key`` in a keyed pool, merged over the pool's.

        Called once when a key is first used. The default raises: a backend opts into keyed
        pools by saying what a key means for it (a host, a URL path, a database name).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support KEYS: it must implement key_options(key)")

    def describe_key(self, key: Any) -> str:
        """What people see for ``key``: a short stable hash by default, since a key may be
        a secret (an API key). Override to show a key that is safe to show (a host name)."""
        return describe_key_hash(key)

    @classmethod
    def option_secrets(cls, options: Mapping[str, Any]) -> list[str]:
        """Literal secret values in ``options``, found without building a backend (the
        system checks mask their messages with them): every string, number or bytes value
        inside an option, or a nested key, whose name is secret."""
        return secrets_in_options(options, cls.secret_options)

    def secrets(self) -> list[str]:
        """Literal secret values to mask in any text the project renders, including what
        callables in OPTIONS returned (:meth:`provided_secrets`)."""
        return type(self).option_secrets(self.options) + list(self.provided_secrets())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} target={self.describe()!r}>"


class AsyncClientBackend(ClientBackend[T]):
    """Base class of backends whose clients are used from async code only.

    ``create``, ``close``, ``check`` and ``reset`` are coroutines run on the event loop
    that uses the client; the pool bounds each with ``CONNECT_TIMEOUT``.
    :meth:`close_nowait` closes a client whose loop is gone, without awaiting.
    """

    is_async: ClassVar[bool] = True

    async def create(self) -> T:  # type: ignore[override]
        """Open and return a new client on the running loop."""
        raise NotImplementedError(f"{type(self).__name__} must implement create()")

    async def close(self, client: T) -> None:  # type: ignore[override]
        """Close ``client``. Must not raise for a client that is already broken."""

    async def check(self, client: T) -> None:  # type: ignore[override]
        """Raise when ``client`` is unusable."""

    async def reset(self, client: T) -> bool:  # type: ignore[override]
        """Make ``client`` ready for the next caller; False discards it."""
        return True

    def reset_nowait(self, client: T) -> bool:
        """Make ``client`` ready for the next caller when that awaits nothing, and say
        whether it is: True lets a release put it back without awaiting :meth:`reset`;
        False awaits :meth:`reset` as usual. The default: True when the backend keeps the
        base :meth:`reset`, which does nothing."""
        return type(self).reset is AsyncClientBackend.reset

    def close_nowait(self, client: T) -> None:
        """Close ``client`` without awaiting: its event loop is closed or not running.

        The default drops the client for the garbage collector.
        """
