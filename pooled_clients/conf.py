"""The one schema of ``settings.POOLED_CLIENTS``: defaults, parsing and validation.

System checks, pool construction and the documentation's reference table are all
produced from :data:`POOL_KEYS` and :data:`PROCESS_SETTINGS`, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from pooled_clients import access
from pooled_clients.backends.base import (
    MAX_SECONDS,
    MIN_SECONDS,
    ClientBackend,
    did_you_mean,
    number_fault,
    show,
    span,
)
from pooled_clients.core import PoolSettings
from pooled_clients.masking import mask_text, printable

__all__ = [
    "ERROR_IDS",
    "POOL_KEYS",
    "PROCESS_SETTINGS",
    "PoolDefinition",
    "Problem",
    "get_process_setting",
    "parse_definition",
    "pool_definitions",
    "reference_table",
    "validate_all",
]


@dataclass(frozen=True)
class Problem:
    """One configuration problem: a stable id and a sentence naming alias, key and expectation."""

    id: str
    message: str

    @property
    def is_error(self) -> bool:
        """True for an error (``pooled_clients.E...``); False for a warning (``W...``)."""
        return not self.id.startswith("pooled_clients.W")


#: Every system-check id this project reports, with what triggers it. Stable once released.
ERROR_IDS: dict[str, str] = {
    "pooled_clients.E001": "POOLED_CLIENTS is not a dict of alias -> pool definition.",
    "pooled_clients.E002": "An alias is not a non-empty string, or its definition is not a dict.",
    "pooled_clients.E003": "A pool definition has an unknown (misspelled) key.",
    "pooled_clients.E004": "A pool definition has no BACKEND.",
    "pooled_clients.E005": "BACKEND cannot be imported (its module is missing or raises on "
                           "import).",
    "pooled_clients.E006": "BACKEND is not a ClientBackend subclass.",
    "pooled_clients.E007": "A key has a value of the wrong type (a bool is not a number).",
    "pooled_clients.E008": "A number is out of its allowed range, NaN or infinite.",
    "pooled_clients.E009": "A key's value is not one of its allowed choices.",
    "pooled_clients.E010": "MIN_SIZE is greater than MAX_SIZE.",
    "pooled_clients.E011": "The backend rejects the pool's OPTIONS (each bad option is "
                           "reported).",
    "pooled_clients.E012": "HEALTH has an unknown key or a bad value.",
    "pooled_clients.E013": "ENDPOINTS is malformed (not a non-empty dict of name -> definition).",
    "pooled_clients.E014": "An endpoint definition has an unknown key.",
    "pooled_clients.E015": "TOTAL_MAX_SIZE is set on a pool without ENDPOINTS or KEYS, or "
                           "ROUTING on a pool without ENDPOINTS.",
    "pooled_clients.E016": "ENDPOINTS is set on a pool whose BACKEND is async.",
    "pooled_clients.E017": "KEYS is malformed (an unknown key or a bad value), or set together "
                           "with ENDPOINTS or ROUTING.",
    "pooled_clients.E020": "A process-wide POOLED_CLIENTS_* setting is unknown or has a bad value.",
    "pooled_clients.E021": "POOLED_CLIENTS_SHARED_STATUS names a cache alias that is not in "
                           "CACHES.",
    "pooled_clients.E022": "POOLED_CLIENTS_SHARED_STATUS_MAX_AGE is not longer than "
                           "POOLED_CLIENTS_SHARED_STATUS_INTERVAL: workers would drop off the "
                           "page between two publications.",
    "pooled_clients.E023": "POOLED_CLIENTS_OPENTELEMETRY is True but opentelemetry-api is not "
                           "installed (the `otel` extra).",
    "pooled_clients.W001": "A password or token is written inside a URL or connection string "
                           "in POOLED_CLIENTS, where Django's debug page shows it.",
    "pooled_clients.W002": "POOLED_CLIENTS_SHARED_STATUS uses a cache that is not shared "
                           "between processes (LocMemCache, DummyCache).",
    "pooled_clients.W003": "pooled_clients.health is used but \"health_check\" is not in "
                           "INSTALLED_APPS: the health page's HTML format fails.",
}

#: The most clients or waiters a setting may count, and the most creation retries.
MAX_COUNT = 10_000
MAX_CONNECT_RETRIES = 100


@dataclass(frozen=True)
class Key:
    """One upper-case key of a pool definition."""

    name: str
    default: Any
    kind: str  # "int", "float", "choice", "bool", "str", "dict", "health", "endpoints", "keys"
    doc: str
    minimum: float = 0
    maximum: float = 0
    allow_none: bool = False
    choices: tuple[str, ...] = ()
    default_doc: str | None = None

    def expectation(self) -> str:
        """Human text of what the key accepts."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("int", "float"):
            text = span(self.minimum, self.maximum, integer=self.kind == "int")
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "str":
            text = "a dotted path string"
        else:
            text = "a dict"
        return f"{text} or None" if self.allow_none else text


def _seconds(name: str, default: Any, doc: str, *, positive: bool = True,
             allow_none: bool = False, default_doc: str | None = None) -> Key:
    """A duration: finite, at most MAX_SECONDS, and at least MIN_SECONDS when it must be
    positive (0 is allowed otherwise)."""
    return Key(name, default, "float", doc, minimum=MIN_SECONDS if positive else 0,
               maximum=MAX_SECONDS, allow_none=allow_none, default_doc=default_doc)


_HEALTH_KEYS: dict[str, Key] = {
    "CRITICAL": Key("CRITICAL", True, "bool", "Include the pool in `pool_checks()`."),
    "TIMEOUT": _seconds("TIMEOUT", 2.0, "Seconds the health check may take."),
}

_KEYS_KEYS: dict[str, Key] = {
    "MAX": Key("MAX", 1000, "int", "Most live keys.", minimum=1, maximum=10 * MAX_COUNT),
    "IDLE_TIMEOUT": _seconds("IDLE_TIMEOUT", 600.0, "Close a key with no client in use for "
                             "this long; None: never.", allow_none=True),
}

POOL_KEYS: tuple[Key, ...] = (
    Key("BACKEND", None, "str", "Dotted path of the `ClientBackend` subclass. Required.",
        default_doc="required"),
    Key("OPTIONS", {}, "dict", "Backend options (lower-case keys), passed to the backend. "
        "A value may be a callable, called for each client creation."),
    Key("MIN_SIZE", 0, "int", "Clients kept open once the pool is first used, filled in the "
        "background.", minimum=0, maximum=MAX_COUNT),
    Key("MAX_SIZE", 10, "int", "Hard cap of open clients (including ones being created) in "
        "this process.", minimum=1, maximum=MAX_COUNT),
    _seconds("TIMEOUT", 5.0, "Seconds `acquire()` may take in total, creation included."),
    Key("MAX_WAITING", 0, "int", "0 = unbounded; otherwise the next waiter gets "
        "`PoolExhausted`.", minimum=0, maximum=MAX_COUNT),
    _seconds("MAX_IDLE", 300.0, "Close clients idle this long, down to MIN_SIZE; None: never.",
             allow_none=True),
    _seconds("MAX_LIFETIME", 3600.0, "Replace clients older than this, jittered a few percent "
             "downwards; None: never.", allow_none=True),
    Key("CHECK", "idle", "choice", "Validate on checkout: `\"always\"`, `\"idle\"` (idle longer "
        "than CHECK_IDLE_AFTER) or `\"never\"`.", choices=("always", "idle", "never")),
    _seconds("CHECK_IDLE_AFTER", 30.0, "Seconds of idleness after which `CHECK=\"idle\"` "
             "validates a client.", positive=False),
    _seconds("CONNECT_TIMEOUT", 5.0, "Bound on one creation attempt (for HTTP: the connect "
             "part of the request timeout)."),
    Key("CONNECT_RETRIES", 2, "int", "Further creation attempts after a failure.", minimum=0,
        maximum=MAX_CONNECT_RETRIES),
    _seconds("RETRY_BACKOFF", 0.5, "Wait before the first retry, doubled each time, jittered.",
             positive=False),
    _seconds("RETRY_BACKOFF_MAX", 5.0, "Longest wait between retries; also the probe interval "
             "while the pool fails fast."),
    _seconds("LEAK_TIMEOUT", None, "Seconds; a client held longer is logged once with the "
             "acquiring stack.", allow_none=True),
    _seconds("KEEPALIVE_INTERVAL", None, "Seconds; validate idle clients in the background.",
             allow_none=True),
    Key("HEALTH", {"CRITICAL": True, "TIMEOUT": 2.0}, "health", "`CRITICAL` "
        f"({_HEALTH_KEYS['CRITICAL'].expectation()}): include the pool in `pool_checks()`; "
        f"`TIMEOUT` ({_HEALTH_KEYS['TIMEOUT'].expectation()}): seconds the health check may "
        "take.",
        default_doc='{"CRITICAL": True, "TIMEOUT": 2.0}'),
    Key("ENDPOINTS", None, "endpoints", "Named endpoints, each `{\"OPTIONS\": {...}, "
        "\"MAX_SIZE\": n, \"MIN_SIZE\": n}` merged over the pool's.", allow_none=True,
        default_doc="none"),
    Key("KEYS", None, "keys", "Clients by a key given at checkout (`key=`): `MAX` "
        f"({_KEYS_KEYS['MAX'].expectation()}, default 1000): most live keys, the least "
        "recently used idle one is evicted past it; `IDLE_TIMEOUT` "
        f"({_KEYS_KEYS['IDLE_TIMEOUT'].expectation()}, default 600): close a key with no "
        "client in use for this long. MAX_SIZE and MIN_SIZE are per key.", allow_none=True,
        default_doc="none"),
    Key("TOTAL_MAX_SIZE", None, "int", "Cap of open clients across all endpoints or keys.",
        minimum=1, maximum=MAX_COUNT * 100, allow_none=True,
        default_doc="sum of endpoint caps; MAX_SIZE x KEYS MAX"),
    Key("ROUTING", "first", "choice", "How a pool with ENDPOINTS picks one: `\"first\"`, "
        "`\"round_robin\"` or `\"least_busy\"` (healthy endpoints only).",
        choices=("first", "round_robin", "least_busy")),
)
_KEYS_BY_NAME = {key.name: key for key in POOL_KEYS}
#: Keys an endpoint may override.
ENDPOINT_KEYS: frozenset[str] = frozenset({"OPTIONS", "MAX_SIZE", "MIN_SIZE"})


@dataclass(frozen=True)
class ProcessSetting:
    """A flat ``POOLED_CLIENTS_*`` setting."""

    name: str
    default: Any
    kind: str  # "float", "bool", "shared_status"
    doc: str
    minimum: float = 0
    maximum: float = MAX_SECONDS

    def expectation(self) -> str:
        """Human text of what the setting accepts."""
        if self.kind == "float":
            return span(self.minimum, self.maximum)
        if self.kind == "bool":
            return "True or False"
        return "None, 'database' or {'CACHE': '<alias in CACHES>'}"


PROCESS_SETTINGS: tuple[ProcessSetting, ...] = (
    ProcessSetting("POOLED_CLIENTS_SHUTDOWN_TIMEOUT", 5.0, "float",
                   "Seconds pools wait for clients in use when the process shuts down."),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS", None, "shared_status",
                   "Publish each process's stats so the admin page shows every worker: "
                   "`None` (off), `\"database\"` or `{\"CACHE\": \"alias\"}` (a cache every "
                   "worker shares); see Observability."),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL", 5.0, "float",
                   "Seconds between two publications of this process's stats.",
                   minimum=MIN_SECONDS),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS_MAX_AGE", 30.0, "float",
                   "Workers that have not published for this long drop off the page (longer "
                   "than the interval).", minimum=MIN_SECONDS),
    ProcessSetting("POOLED_CLIENTS_WARM_UP", False, "bool",
                   "Serving processes open each pool's `MIN_SIZE` clients in the background as "
                   "they start (gunicorn `post_fork`/`post_worker_init`, uWSGI postfork, else "
                   "the first request); never in `migrate`, `check` or a `--preload` master."),
    ProcessSetting("POOLED_CLIENTS_METRICS", False, "bool",
                   "Keep the `pooled_clients_*` Prometheus metrics up to date in every serving "
                   "process (needs the `prometheus` extra); see Observability."),
    ProcessSetting("POOLED_CLIENTS_METRICS_INTERVAL", 5.0, "float",
                   "Seconds between two refreshes of the Prometheus metrics (and of the "
                   "OpenTelemetry histograms between two collections).",
                   minimum=MIN_SECONDS),
    ProcessSetting("POOLED_CLIENTS_METRICS_ACCESS", None, "metrics_access",
                   "Who may read `metrics_view`: `None` (everyone) or a dict of any of "
                   "`PERMISSION`, `TOKEN` (bearer), `IPS` (addresses or networks); others "
                   "get 403. See Observability."),
    ProcessSetting("POOLED_CLIENTS_OPENTELEMETRY", False, "bool",
                   "Report the OpenTelemetry semantic-convention connection-pool metrics "
                   "(`db.client.connection.*`) through the global MeterProvider (needs the "
                   "`otel` extra); see Observability."),
)
_PROCESS_BY_NAME = {s.name: s for s in PROCESS_SETTINGS}
#: Cache backends that keep their data inside one process.
_PER_PROCESS_CACHES = ("django.core.cache.backends.locmem.LocMemCache",
                       "django.core.cache.backends.dummy.DummyCache")


def get_process_setting(name: str) -> Any:
    """The value of a flat ``POOLED_CLIENTS_*`` setting, or its default."""
    return getattr(settings, name, _PROCESS_BY_NAME[name].default)


# --------------------------------------------------------------------------- validation


def _check_value(alias: str, key: Key, value: Any, where: str = "") -> list[Problem]:
    label = f"POOLED_CLIENTS[{alias!r}]{where}[{key.name!r}]"
    expected = f"{label} is {show(value)}; expected {key.expectation()}."
    if value is None:
        return [] if key.allow_none else [Problem("pooled_clients.E007", expected)]
    if key.kind in ("int", "float"):
        fault = number_fault(value, key.minimum, key.maximum, integer=key.kind == "int")
        if fault is not None:
            return [Problem("pooled_clients.E007" if fault == "type" else "pooled_clients.E008",
                            expected)]
    elif key.kind == "bool":
        if not isinstance(value, bool):
            return [Problem("pooled_clients.E007", expected)]
    elif key.kind == "choice":
        # isinstance first: `in` would call an arbitrary object's __eq__.
        if not (isinstance(value, str) and value in key.choices):
            return [Problem("pooled_clients.E009", expected)]
    elif key.kind == "str":
        if not isinstance(value, str) or not value:
            return [Problem("pooled_clients.E007", expected)]
    elif not isinstance(value, Mapping):
        code = "pooled_clients.E013" if key.kind == "endpoints" else "pooled_clients.E007"
        return [Problem(code, f"{label} is {type(value).__name__}; expected {key.expectation()}.")]
    return []


def _unknown_key(alias: str, name: object, known: Mapping[str, object] | frozenset[str],
                 code: str, where: str = "") -> Problem:
    names = sorted(known)
    hint = did_you_mean(name, names)
    if not hint and isinstance(name, str) and name != name.upper():
        hint = " Backend options belong in OPTIONS; pool keys are upper-case."
    return Problem(code, f"POOLED_CLIENTS[{alias!r}]{where} has unknown key {show(name)}; "
                         f"expected one of {', '.join(names)}.{hint}")


def _import_backend(alias: str, path: Any) -> tuple[type[ClientBackend[Any]] | None, list[Problem]]:
    label = f"POOLED_CLIENTS[{alias!r}]['BACKEND']"
    try:
        cls = import_string(path)
    except (Exception, SystemExit) as exc:
        # Whatever a module raises on import (not only ImportError) is a setting problem.
        reason = mask_text(f"{type(exc).__name__}: {exc}".strip())
        return None, [Problem("pooled_clients.E005",
                              f"{label} {path!r} cannot be imported: {reason}")]
    if not (isinstance(cls, type) and issubclass(cls, ClientBackend)):
        return None, [Problem("pooled_clients.E006",
                              f"{label} {path!r} is not a subclass of "
                              "pooled_clients.backends.base.ClientBackend.")]
    return cls, []


def validate_definition(alias: Any, definition: Any) -> list[Problem]:
    """Every problem of one pool definition (empty when it is valid), warnings included:
    one call reports them all, so no problem hides another."""
    if not isinstance(alias, str) or not alias:
        return [Problem("pooled_clients.E002",
                        f"POOLED_CLIENTS has alias {show(alias)}; expected a non-empty string.")]
    if not isinstance(definition, Mapping):
        return [Problem("pooled_clients.E002",
                        f"POOLED_CLIENTS[{alias!r}] is {type(definition).__name__}; "
                        "expected a dict with at least 'BACKEND'.")]
    problems: list[Problem] = []
    for name in definition:
        if name not in _KEYS_BY_NAME:
            problems.append(_unknown_key(alias, name, _KEYS_BY_NAME, "pooled_clients.E003"))
    valid: dict[str, Any] = {}
    for key in POOL_KEYS:
        if key.name in definition:
            found = _check_value(alias, key, definition[key.name])
            problems.extend(found)
            if not found:
                valid[key.name] = definition[key.name]
    merged = {key.name: key.default for key in POOL_KEYS} | valid
    backend_cls: type[ClientBackend[Any]] | None = None
    if "BACKEND" not in definition:
        problems.append(Problem("pooled_clients.E004",
                                f"POOLED_CLIENTS[{alias!r}] has no 'BACKEND'; expected a dotted "
                                "path such as 'pooled_clients.backends.http.HTTPBackend'."))
    elif "BACKEND" in valid:
        backend_cls, found = _import_backend(alias, valid["BACKEND"])
        problems.extend(found)
    if merged["MIN_SIZE"] > merged["MAX_SIZE"]:
        problems.append(Problem("pooled_clients.E010",
                                f"POOLED_CLIENTS[{alias!r}] has MIN_SIZE {merged['MIN_SIZE']} "
                                f"greater than MAX_SIZE {merged['MAX_SIZE']}; expected "
                                "MIN_SIZE <= MAX_SIZE."))
    problems.extend(_validate_health(alias, merged["HEALTH"]))
    option_sets = [("", dict(merged["OPTIONS"]))]
    endpoints = merged["ENDPOINTS"]
    keys = merged["KEYS"]
    if keys is not None:
        problems.extend(_validate_keys(alias, keys, definition))
        if backend_cls is not None:
            # What a key supplies (a TCP host and port) may be left out of OPTIONS.
            option_sets = [("", backend_cls.keyed_placeholders() | dict(merged["OPTIONS"]))]
    if endpoints is None:
        for name in ("TOTAL_MAX_SIZE", "ROUTING"):
            if name in definition and (name == "ROUTING" or keys is None):
                problems.append(Problem("pooled_clients.E015",
                                        f"POOLED_CLIENTS[{alias!r}][{name!r}] is set but the pool "
                                        f"has no ENDPOINTS{'' if name == 'ROUTING' else ' or KEYS'}"
                                        f"; expected ENDPOINTS or no {name}."))
    else:
        endpoint_problems, option_sets = _validate_endpoints(alias, merged)
        problems.extend(endpoint_problems)
        if backend_cls is not None and backend_cls.is_async:
            problems.append(Problem("pooled_clients.E016",
                                    f"POOLED_CLIENTS[{alias!r}]['ENDPOINTS'] is not supported "
                                    f"with the async backend {definition['BACKEND']!r}; "
                                    "expected one pool per endpoint."))
    # OPTIONS that are not a dict are reported above; checking {} instead would add noise.
    if backend_cls is not None and ("OPTIONS" not in definition or "OPTIONS" in valid):
        for where, options in option_sets:
            problems.extend(_check_options(alias, backend_cls, where, options))
    problems.extend(secrets_in_settings(alias, definition))
    return problems


def _check_options(alias: str, backend_cls: type[ClientBackend[Any]], where: str,
                   options: dict[str, Any]) -> list[Problem]:
    label = f"POOLED_CLIENTS[{alias!r}]{where}['OPTIONS']"
    try:
        # A backend's message may quote its options: masked like anything else rendered.
        secrets = backend_cls.option_secrets(options)
        messages = backend_cls.check_options(options)
    except Exception as exc:  # a custom backend's own check must not take `check` down
        reason = printable(mask_text(f"{type(exc).__name__}: {exc}".strip()))
        return [Problem("pooled_clients.E011",
                        f"{label}: {backend_cls.__name__}.check_options() raised {reason}")]
    return [Problem("pooled_clients.E011",
                    f"{label}: {printable(mask_text(str(message).strip(), secrets))}")
            for message in messages]


def _validate_health(alias: str, health: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name, value in health.items():
        key = _HEALTH_KEYS.get(name) if isinstance(name, str) else None
        if key is None:
            problems.append(Problem("pooled_clients.E012",
                                    f"POOLED_CLIENTS[{alias!r}]['HEALTH'] has unknown key "
                                    f"{show(name)}; expected CRITICAL or TIMEOUT."
                                    f"{did_you_mean(name, _HEALTH_KEYS)}"))
            continue
        for problem in _check_value(alias, key, value, "['HEALTH']"):
            problems.append(Problem("pooled_clients.E012", problem.message))
    return problems


def _validate_keys(alias: str, keys: Mapping[str, Any],
                   definition: Mapping[str, Any]) -> list[Problem]:
    problems = []
    label = f"POOLED_CLIENTS[{alias!r}]['KEYS']"
    if "ENDPOINTS" in definition:
        problems.append(Problem("pooled_clients.E017",
                                f"{label} is set together with ENDPOINTS; expected one of them: "
                                "endpoints are keys declared in settings."))
    for name, value in keys.items():
        key = _KEYS_KEYS.get(name) if isinstance(name, str) else None
        if key is None:
            problems.append(Problem("pooled_clients.E017",
                                    f"{label} has unknown key {show(name)}; expected MAX or "
                                    f"IDLE_TIMEOUT.{did_you_mean(name, _KEYS_KEYS)}"))
            continue
        for problem in _check_value(alias, key, value, "['KEYS']"):
            problems.append(Problem("pooled_clients.E017", problem.message))
    return problems


def _validate_endpoints(alias: str, merged: Mapping[str, Any]
                        ) -> tuple[list[Problem], list[tuple[str, dict[str, Any]]]]:
    endpoints = merged["ENDPOINTS"]
    label = f"POOLED_CLIENTS[{alias!r}]['ENDPOINTS']"
    if not endpoints:
        return [Problem("pooled_clients.E013", f"{label} is empty; expected at least one "
                                               "endpoint.")], []
    problems: list[Problem] = []
    option_sets: list[tuple[str, dict[str, Any]]] = []
    min_sizes: list[int] = []
    for name, spec in endpoints.items():
        if not isinstance(name, str) or not name or not isinstance(spec, Mapping):
            problems.append(Problem("pooled_clients.E013",
                                    f"{label} entry {show(name)} must map a non-empty name to a "
                                    "dict with OPTIONS, MAX_SIZE and/or MIN_SIZE."))
            continue
        where = f"['ENDPOINTS'][{name!r}]"
        for key_name in spec:
            if key_name not in ENDPOINT_KEYS:
                problems.append(_unknown_key(alias, key_name, ENDPOINT_KEYS,
                                             "pooled_clients.E014", where))
        sizes = {"MIN_SIZE": merged["MIN_SIZE"], "MAX_SIZE": merged["MAX_SIZE"]}
        for key_name in sorted(ENDPOINT_KEYS & set(spec)):
            found = _check_value(alias, _KEYS_BY_NAME[key_name], spec[key_name], where)
            problems.extend(found)
            if key_name in sizes:
                if found:
                    del sizes[key_name]
                else:
                    sizes[key_name] = spec[key_name]
        options = spec.get("OPTIONS", {})
        if isinstance(options, Mapping):
            option_sets.append((where, dict(merged["OPTIONS"]) | dict(options)))
        if len(sizes) == 2:
            min_sizes.append(sizes["MIN_SIZE"])
            if sizes["MIN_SIZE"] > sizes["MAX_SIZE"]:
                problems.append(Problem("pooled_clients.E010",
                                        f"POOLED_CLIENTS[{alias!r}]{where} has MIN_SIZE "
                                        f"{sizes['MIN_SIZE']} greater than MAX_SIZE "
                                        f"{sizes['MAX_SIZE']}; expected MIN_SIZE <= MAX_SIZE."))
    total = merged["TOTAL_MAX_SIZE"]
    if isinstance(total, int) and sum(min_sizes) > total:
        # The pool-wide form of E010: MIN_SIZE (in total) greater than MAX_SIZE (in total).
        problems.append(Problem("pooled_clients.E010",
                                f"POOLED_CLIENTS[{alias!r}] has endpoints whose MIN_SIZE add up "
                                f"to {sum(min_sizes)}, more than TOTAL_MAX_SIZE {total}; expected "
                                "a total of at most TOTAL_MAX_SIZE."))
    return problems, option_sets


# Names of URL query parameters and connection-string keywords that carry a secret.
_SECRET_NAME = re.compile(
    r"password|passwd|pwd|secret|token|api_?key|apikey|access_?key|signature|credential", re.I)
_MAX_DEPTH = 12
_KEYWORD = re.compile(r"(?:^|[\s;])(\w+)\s*=")


def _debug_page_hides(name: object) -> bool:
    """True when Django's debug page masks a setting (or dict key) of this name."""
    from django.views.debug import (
        SafeExceptionReporterFilter,
        get_default_exception_reporter_filter,
    )

    hidden = getattr(get_default_exception_reporter_filter(), "hidden_settings",
                     SafeExceptionReporterFilter.hidden_settings)
    return isinstance(name, str) and bool(hidden.search(name))


def _secret_spots(text: str) -> list[str]:
    """Where ``text`` (a URL, a path with a query or a conninfo string) holds a secret."""
    found = []
    query = ""
    if "://" in text:
        try:
            parts = urlsplit(text)
            if parts.password:
                found.append("a password in the URL's user info")
            query = parts.query
        except ValueError:
            pass
    elif "?" in text:
        query = text.partition("?")[2]
    else:
        found += [f"a {name!r} keyword in the connection string"
                  for name in _KEYWORD.findall(text) if _SECRET_NAME.search(name)]
    found += [f"'?{name}=' in the URL's query string"
              for name, _ in parse_qsl(query.partition("#")[0], keep_blank_values=True)
              if _SECRET_NAME.search(name)]
    return found


def secrets_in_settings(alias: str, definition: Mapping[str, Any]) -> list[Problem]:
    """``pooled_clients.W001`` for each secret written inside a URL or connection string in
    the pool's OPTIONS (endpoints' included) where Django's debug page shows it in full.
    A value under a name the debug page masks (``password``, ``token``, ``api_key``,
    ``auth``...), or a callable, is fine."""
    if _debug_page_hides(alias):
        return []
    places: list[tuple[str, Any]] = [("['OPTIONS']", definition.get("OPTIONS"))]
    endpoints = definition.get("ENDPOINTS")
    if isinstance(endpoints, Mapping):
        places += [(f"['ENDPOINTS'][{name!r}]['OPTIONS']", spec.get("OPTIONS"))
                   for name, spec in endpoints.items()
                   if isinstance(spec, Mapping) and not _debug_page_hides(name)]
    problems = []
    while places:
        where, value = places.pop(0)
        if where.count("[") > _MAX_DEPTH:  # a dict that contains itself
            continue
        if isinstance(value, Mapping):
            places += [(f"{where}[{show(k)}]", v) for k, v in value.items()
                       if not _debug_page_hides(k)]
        elif isinstance(value, list | tuple):
            places += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, str):
            problems += [Problem(
                "pooled_clients.W001",
                f"POOLED_CLIENTS[{alias!r}]{where} holds {spot}: Django's debug page "
                "(DEBUG = True) shows this setting in full. Put the secret in an OPTIONS key "
                "the page masks ('password', 'token', 'api_key', 'auth', 'headers' with "
                "'Authorization') or make the value a callable.")
                for spot in _secret_spots(value)]
    return problems


def _validate_process_settings() -> list[Problem]:
    problems = []
    for name in dir(settings):
        if name.startswith("POOLED_CLIENTS_") and name not in _PROCESS_BY_NAME:
            problems.append(Problem("pooled_clients.E020",
                                    f"Unknown setting {name}; expected one of "
                                    f"{', '.join(_PROCESS_BY_NAME)}."
                                    f"{did_you_mean(name, _PROCESS_BY_NAME)}"))
    for spec in PROCESS_SETTINGS:
        value = get_process_setting(spec.name)
        expected = f"{spec.name} is {show(value)}; expected {spec.expectation()}."
        if spec.kind == "float":
            fault = number_fault(value, spec.minimum, spec.maximum)
            if fault is not None:
                problems.append(Problem("pooled_clients.E020", expected))
        elif spec.kind == "bool" and not isinstance(value, bool):
            problems.append(Problem("pooled_clients.E020", expected))
        elif spec.kind == "shared_status":
            problems.extend(_validate_shared_status(spec, value, expected))
        elif spec.kind == "metrics_access":
            problems.extend(Problem("pooled_clients.E020", message)
                            for message in access.problems(spec.name, value))
    if get_process_setting("POOLED_CLIENTS_OPENTELEMETRY") is True:
        try:
            import opentelemetry.metrics  # noqa: F401
        except ImportError:
            problems.append(Problem("pooled_clients.E023",
                                    "POOLED_CLIENTS_OPENTELEMETRY is True but opentelemetry-api "
                                    "is not installed; expected `pip install "
                                    "django-pooled-clients[otel]`."))
    interval = get_process_setting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL")
    max_age = get_process_setting("POOLED_CLIENTS_SHARED_STATUS_MAX_AGE")
    if (number_fault(interval, 0, MAX_SECONDS) is None
            and number_fault(max_age, 0, MAX_SECONDS) is None and max_age <= interval):
        problems.append(Problem("pooled_clients.E022",
                                f"POOLED_CLIENTS_SHARED_STATUS_MAX_AGE is {max_age!r}, not longer "
                                f"than POOLED_CLIENTS_SHARED_STATUS_INTERVAL {interval!r}; "
                                "expected a few intervals, or every worker drops off the page "
                                "between two publications."))
    return problems


def _validate_shared_status(spec: ProcessSetting, value: Any, expected: str) -> list[Problem]:
    if value is None or value == "database":
        return []
    if not isinstance(value, Mapping):
        return [Problem("pooled_clients.E020", expected)]
    problems = [Problem("pooled_clients.E020", f"{spec.name} has unknown key {show(name)}; "
                                               f"expected 'CACHE'.{did_you_mean(name, ['CACHE'])}")
                for name in value if name != "CACHE"]
    alias = value.get("CACHE")
    if not isinstance(alias, str) or not alias:
        problems.append(Problem("pooled_clients.E020",
                                f"{spec.name}['CACHE'] is {show(alias)}; expected the alias of "
                                "a cache in CACHES."))
        return problems
    caches = getattr(settings, "CACHES", {})
    if not isinstance(caches, Mapping) or alias not in caches:
        known = ", ".join(repr(a) for a in caches) if isinstance(caches, Mapping) else "none"
        problems.append(Problem("pooled_clients.E021",
                                f"{spec.name}['CACHE'] is {alias!r}, which is not in CACHES "
                                f"(configured: {known or 'none'}); expected the alias of a cache "
                                "every worker shares (Redis, Memcached, database)."))
        return problems
    backend = caches[alias].get("BACKEND") if isinstance(caches[alias], Mapping) else None
    if backend in _PER_PROCESS_CACHES:
        problems.append(Problem("pooled_clients.W002",
                                f"{spec.name}['CACHE'] is {alias!r}, a {backend.rsplit('.', 1)[-1]}"
                                ": each process sees only its own entry; expected a cache every "
                                "worker shares (Redis, Memcached, database)."))
    return problems


def raw_settings() -> Any:
    """``settings.POOLED_CLIENTS`` as written (``{}`` when absent)."""
    return getattr(settings, "POOLED_CLIENTS", {})


def validate_all() -> list[Problem]:
    """Every problem in ``POOLED_CLIENTS`` and the flat ``POOLED_CLIENTS_*`` settings."""
    raw = raw_settings()
    if not isinstance(raw, Mapping):
        return [Problem("pooled_clients.E001",
                        f"POOLED_CLIENTS is {type(raw).__name__}; expected a dict mapping each "
                        "alias to a pool definition.")]
    problems = []
    for alias, definition in raw.items():
        problems.extend(validate_definition(alias, definition))
    problems.extend(_validate_process_settings())
    return problems


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class EndpointDefinition:
    """One named endpoint of a pool: its merged OPTIONS and its own sizes."""

    name: str
    options: dict[str, Any]
    max_size: int
    min_size: int


@dataclass(frozen=True)
class KeysDefinition:
    """A keyed pool's ``KEYS``, parsed."""

    max_keys: int
    idle_timeout: float | None


@dataclass(frozen=True)
class PoolDefinition:
    """A validated pool definition, ready for the handler to build a pool from."""

    alias: str
    backend_path: str
    backend_class: type[ClientBackend[Any]]
    options: dict[str, Any]
    settings: PoolSettings
    health_critical: bool
    health_timeout: float
    endpoints: tuple[EndpointDefinition, ...] = ()
    total_max_size: int | None = None
    routing: str = "first"
    keys: KeysDefinition | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def parse_definition(alias: str, definition: Any) -> PoolDefinition:
    """Validate and parse one definition; raise ``ImproperlyConfigured`` if it is bad."""
    errors = [p for p in validate_definition(alias, definition) if p.is_error]
    if errors:
        raise ImproperlyConfigured("; ".join(f"{p.message} ({p.id})" for p in errors))
    merged = {key.name: key.default for key in POOL_KEYS} | dict(definition)
    health = _HEALTH_DEFAULTS | dict(merged["HEALTH"])
    backend_class, _ = _import_backend(alias, merged["BACKEND"])
    assert backend_class is not None
    pool_settings = PoolSettings(
        min_size=merged["MIN_SIZE"],
        max_size=merged["MAX_SIZE"],
        timeout=float(merged["TIMEOUT"]),
        max_waiting=merged["MAX_WAITING"],
        max_idle=_opt_float(merged["MAX_IDLE"]),
        max_lifetime=_opt_float(merged["MAX_LIFETIME"]),
        check=merged["CHECK"],
        check_idle_after=float(merged["CHECK_IDLE_AFTER"]),
        connect_timeout=float(merged["CONNECT_TIMEOUT"]),
        connect_retries=merged["CONNECT_RETRIES"],
        retry_backoff=float(merged["RETRY_BACKOFF"]),
        retry_backoff_max=float(merged["RETRY_BACKOFF_MAX"]),
        leak_timeout=_opt_float(merged["LEAK_TIMEOUT"]),
        keepalive_interval=_opt_float(merged["KEEPALIVE_INTERVAL"]),
    )
    endpoints: list[EndpointDefinition] = []
    for name, spec in (merged["ENDPOINTS"] or {}).items():
        endpoints.append(EndpointDefinition(
            name=name,
            options=dict(merged["OPTIONS"]) | dict(spec.get("OPTIONS", {})),
            max_size=spec.get("MAX_SIZE", merged["MAX_SIZE"]),
            min_size=spec.get("MIN_SIZE", merged["MIN_SIZE"]),
        ))
    return PoolDefinition(
        alias=alias,
        backend_path=merged["BACKEND"],
        backend_class=backend_class,
        options=dict(merged["OPTIONS"]),
        settings=pool_settings,
        health_critical=bool(health["CRITICAL"]),
        health_timeout=float(health["TIMEOUT"]),
        endpoints=tuple(endpoints),
        total_max_size=merged["TOTAL_MAX_SIZE"],
        routing=merged["ROUTING"],
        keys=_parse_keys(merged["KEYS"]),
        raw=definition,
    )


def _parse_keys(keys: Mapping[str, Any] | None) -> KeysDefinition | None:
    if keys is None:
        return None
    spec = {name: key.default for name, key in _KEYS_KEYS.items()} | dict(keys)
    return KeysDefinition(max_keys=int(spec["MAX"]),
                          idle_timeout=_opt_float(spec["IDLE_TIMEOUT"]))


_HEALTH_DEFAULTS: dict[str, Any] = {name: key.default for name, key in _HEALTH_KEYS.items()}


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def pool_definitions() -> dict[str, Any]:
    """The raw definitions by alias (``{}`` when the setting is absent or not a dict)."""
    raw = raw_settings()
    return dict(raw) if isinstance(raw, Mapping) else {}


# --------------------------------------------------------------------------- docs


def _format_default(value: Any) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, dict) and not value:
        return "`{}`"
    return f"`{value!r}`"


def reference_table(render: Callable[[Any], str] = _format_default) -> str:
    """The Markdown reference table of every pool key and process-wide setting."""
    lines = ["| key | default | accepts | meaning |", "|---|---|---|---|"]
    for key in POOL_KEYS:
        default = key.default_doc if key.default_doc is not None else render(key.default)
        if key.default_doc and key.default_doc.startswith("{"):
            default = f"`{key.default_doc}`"
        lines.append(f"| `{key.name}` | {default} | {key.expectation()} | {key.doc} |")
    lines += ["", "| setting | default | accepts | meaning |", "|---|---|---|---|"]
    for spec in PROCESS_SETTINGS:
        lines.append(f"| `{spec.name}` | {render(spec.default)} | {spec.expectation()} | "
                     f"{spec.doc} |")
    return "\n".join(lines) + "\n"
