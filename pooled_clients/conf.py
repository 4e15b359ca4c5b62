"""The one schema of ``settings.POOLED_CLIENTS``: defaults, parsing and validation.

System checks, pool construction and the documentation's reference table are all
produced from :data:`POOL_KEYS` and :data:`PROCESS_SETTINGS`, so they cannot drift apart.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from pooled_clients import access
from pooled_clients.backends.base import ClientBackend
from pooled_clients.masking import mask_text, printable
from pooled_clients.pool import PoolSettings

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


#: Every system-check id this project reports, with what triggers it. Stable once released.
ERROR_IDS: dict[str, str] = {
    "pooled_clients.E001": "POOLED_CLIENTS is not a dict of alias -> pool definition.",
    "pooled_clients.E002": "An alias is not a non-empty string, or its definition is not a dict.",
    "pooled_clients.E003": "A pool definition has an unknown (misspelled) key.",
    "pooled_clients.E004": "A pool definition has no BACKEND.",
    "pooled_clients.E005": "BACKEND cannot be imported.",
    "pooled_clients.E006": "BACKEND is not a ClientBackend subclass.",
    "pooled_clients.E007": "A key has a value of the wrong type.",
    "pooled_clients.E008": "A number is out of its allowed range.",
    "pooled_clients.E009": "A key's value is not one of its allowed choices.",
    "pooled_clients.E010": "MIN_SIZE is greater than MAX_SIZE.",
    "pooled_clients.E011": "The backend rejects the pool's OPTIONS.",
    "pooled_clients.E012": "HEALTH has an unknown key or a bad value.",
    "pooled_clients.E013": "ENDPOINTS is malformed (not a non-empty dict of name -> definition).",
    "pooled_clients.E014": "An endpoint definition has an unknown key.",
    "pooled_clients.E015": "TOTAL_MAX_SIZE or ROUTING is set on a pool without ENDPOINTS.",
    "pooled_clients.E016": "ENDPOINTS is set on a pool whose BACKEND is async.",
    "pooled_clients.E020": "A process-wide POOLED_CLIENTS_* setting is unknown or has a bad value.",
}


@dataclass(frozen=True)
class Key:
    """One upper-case key of a pool definition."""

    name: str
    default: Any
    kind: str  # "int", "float", "choice", "bool", "str", "dict", "health", "endpoints"
    doc: str
    minimum: float | None = None
    exclusive_minimum: bool = False
    allow_none: bool = False
    choices: tuple[str, ...] = ()
    default_doc: str | None = None

    def expectation(self) -> str:
        """Human text of what the key accepts."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number of seconds"
            if self.minimum is None:
                text = noun
            elif self.exclusive_minimum:
                text = f"{noun} > {self.minimum:g}"
            else:
                text = f"{noun} >= {self.minimum:g}"
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "str":
            text = "a dotted path string"
        else:
            text = "a dict"
        return f"{text} or None" if self.allow_none else text


POOL_KEYS: tuple[Key, ...] = (
    Key("BACKEND", None, "str", "Dotted path of the `ClientBackend` subclass. Required.",
        default_doc="required"),
    Key("OPTIONS", {}, "dict", "Backend options (lower-case keys), passed to the backend."),
    Key("MIN_SIZE", 0, "int", "Clients kept open once the pool is first used, filled in the "
        "background.", minimum=0),
    Key("MAX_SIZE", 10, "int", "Hard cap of open clients (including ones being created) in "
        "this process.", minimum=1),
    Key("TIMEOUT", 5.0, "float", "Seconds `acquire()` may take in total, creation included.",
        minimum=0, exclusive_minimum=True),
    Key("MAX_WAITING", 0, "int", "0 = unbounded; otherwise the next waiter gets "
        "`PoolExhausted`.", minimum=0),
    Key("MAX_IDLE", 300.0, "float", "Close clients idle this long, down to MIN_SIZE.",
        minimum=0, exclusive_minimum=True, allow_none=True),
    Key("MAX_LIFETIME", 3600.0, "float", "Replace clients older than this, jittered a few "
        "percent downwards.", minimum=0, exclusive_minimum=True, allow_none=True),
    Key("CHECK", "idle", "choice", "Validate on checkout: `\"always\"`, `\"idle\"` (idle longer "
        "than CHECK_IDLE_AFTER) or `\"never\"`.", choices=("always", "idle", "never")),
    Key("CHECK_IDLE_AFTER", 30.0, "float", "Seconds of idleness after which `CHECK=\"idle\"` "
        "validates a client.", minimum=0),
    Key("CONNECT_TIMEOUT", 5.0, "float", "Bound on one creation attempt (for HTTP: the connect "
        "part of the request timeout).", minimum=0, exclusive_minimum=True),
    Key("CONNECT_RETRIES", 2, "int", "Further creation attempts after a failure.", minimum=0),
    Key("RETRY_BACKOFF", 0.5, "float", "Wait before the first retry, doubled each time, "
        "jittered.", minimum=0),
    Key("RETRY_BACKOFF_MAX", 5.0, "float", "Longest wait between retries; also the probe "
        "interval while the pool fails fast.", minimum=0, exclusive_minimum=True),
    Key("LEAK_TIMEOUT", None, "float", "Seconds; a client held longer is logged once with the "
        "acquiring stack.", minimum=0, exclusive_minimum=True, allow_none=True),
    Key("KEEPALIVE_INTERVAL", None, "float", "Seconds; validate idle clients in the background.",
        minimum=0, exclusive_minimum=True, allow_none=True),
    Key("HEALTH", {"CRITICAL": True, "TIMEOUT": 2.0}, "health", "`CRITICAL`: include the pool in "
        "`pool_checks()`; `TIMEOUT`: seconds the health check may take.",
        default_doc='{"CRITICAL": True, "TIMEOUT": 2.0}'),
    Key("ENDPOINTS", None, "endpoints", "Named endpoints, each `{\"OPTIONS\": {...}, "
        "\"MAX_SIZE\": n}` merged over the pool's.", allow_none=True, default_doc="none"),
    Key("TOTAL_MAX_SIZE", None, "int", "Cap of open clients across all endpoints.", minimum=1,
        allow_none=True, default_doc="sum of endpoint caps"),
    Key("ROUTING", "first", "choice", "How a pool with ENDPOINTS picks one: `\"first\"`, "
        "`\"round_robin\"` or `\"least_busy\"` (healthy endpoints only).",
        choices=("first", "round_robin", "least_busy")),
)
_KEYS_BY_NAME = {key.name: key for key in POOL_KEYS}
_HEALTH_KEYS: dict[str, Key] = {
    "CRITICAL": Key("CRITICAL", True, "bool", "Include the pool in `pool_checks()`."),
    "TIMEOUT": Key("TIMEOUT", 2.0, "float", "Seconds the health check may take.", minimum=0,
                   exclusive_minimum=True),
}
#: Keys an endpoint may override.
ENDPOINT_KEYS: frozenset[str] = frozenset({"OPTIONS", "MAX_SIZE", "MIN_SIZE"})


@dataclass(frozen=True)
class ProcessSetting:
    """A flat ``POOLED_CLIENTS_*`` setting."""

    name: str
    default: Any
    kind: str
    doc: str
    minimum: float | None = None


PROCESS_SETTINGS: tuple[ProcessSetting, ...] = (
    ProcessSetting("POOLED_CLIENTS_SHUTDOWN_TIMEOUT", 5.0, "float",
                   "Seconds pools wait for clients in use when the process shuts down.",
                   minimum=0),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS", None, "shared_status",
                   "Publish each process's stats so the admin page shows every worker: "
                   "`None` (off), `\"database\"` or `{\"CACHE\": \"alias\"}`; see Observability."),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS_INTERVAL", 5.0, "float",
                   "Seconds between two publications of this process's stats.", minimum=0.1),
    ProcessSetting("POOLED_CLIENTS_SHARED_STATUS_MAX_AGE", 30.0, "float",
                   "Workers that have not published for this long drop off the page.",
                   minimum=0.1),
    ProcessSetting("POOLED_CLIENTS_METRICS", False, "bool",
                   "Keep the `pooled_clients_*` Prometheus metrics up to date in every serving "
                   "process (needs the `prometheus` extra); see Observability."),
    ProcessSetting("POOLED_CLIENTS_METRICS_INTERVAL", 5.0, "float",
                   "Seconds between two refreshes of the Prometheus metrics.", minimum=0.1),
    ProcessSetting("POOLED_CLIENTS_METRICS_ACCESS", None, "metrics_access",
                   "Who may read `metrics_view`: `None` (everyone) or a dict of any of "
                   "`PERMISSION`, `TOKEN` (bearer), `IPS` (addresses or networks); others "
                   "get 403. See Observability."),
)
_PROCESS_BY_NAME = {s.name: s for s in PROCESS_SETTINGS}


def get_process_setting(name: str) -> Any:
    """The value of a flat ``POOLED_CLIENTS_*`` setting, or its default."""
    return getattr(settings, name, _PROCESS_BY_NAME[name].default)


# --------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_value(alias: str, key: Key, value: Any, where: str = "") -> list[Problem]:
    label = f"POOLED_CLIENTS[{alias!r}]{where}[{key.name!r}]"
    if value is None:
        if key.allow_none:
            return []
        return [Problem("pooled_clients.E007", f"{label} is None; expected {key.expectation()}.")]
    if key.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return [Problem("pooled_clients.E007",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
    elif key.kind == "float":
        if not _is_number(value) or not math.isfinite(value):
            return [Problem("pooled_clients.E007",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
    elif key.kind == "bool":
        if not isinstance(value, bool):
            return [Problem("pooled_clients.E007",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
    elif key.kind == "choice":
        if value not in key.choices:
            return [Problem("pooled_clients.E009",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
        return []
    elif key.kind == "str":
        if not isinstance(value, str) or not value:
            return [Problem("pooled_clients.E007",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
        return []
    elif key.kind in ("dict", "health", "endpoints"):
        if not isinstance(value, Mapping):
            code = "pooled_clients.E013" if key.kind == "endpoints" else "pooled_clients.E007"
            return [Problem(code, f"{label} is {type(value).__name__}; expected a dict.")]
        return []
    if key.minimum is not None:
        too_small = value <= key.minimum if key.exclusive_minimum else value < key.minimum
        if too_small:
            return [Problem("pooled_clients.E008",
                            f"{label} is {value!r}; expected {key.expectation()}.")]
    return []


def _unknown_key(alias: str, name: object, known: Mapping[str, object] | frozenset[str],
                 code: str, where: str = "") -> Problem:
    names = list(known)
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name.upper(), names, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return Problem(code, f"POOLED_CLIENTS[{alias!r}]{where} has unknown key {name!r}; "
                         f"expected one of {', '.join(sorted(names))}.{hint}")


def _import_backend(alias: str, path: Any) -> tuple[type[ClientBackend[Any]] | None, list[Problem]]:
    label = f"POOLED_CLIENTS[{alias!r}]['BACKEND']"
    try:
        cls = import_string(path)
    except ImportError as exc:
        return None, [Problem("pooled_clients.E005",
                              f"{label} {path!r} cannot be imported: {exc}.")]
    if not (isinstance(cls, type) and issubclass(cls, ClientBackend)):
        return None, [Problem("pooled_clients.E006",
                              f"{label} {path!r} is not a subclass of "
                              "pooled_clients.backends.base.ClientBackend.")]
    return cls, []


def validate_definition(alias: Any, definition: Any) -> list[Problem]:
    """Every problem of one pool definition (empty when it is valid)."""
    if not isinstance(alias, str) or not alias:
        return [Problem("pooled_clients.E002",
                        f"POOLED_CLIENTS has alias {alias!r}; expected a non-empty string.")]
    if not isinstance(definition, Mapping):
        return [Problem("pooled_clients.E002",
                        f"POOLED_CLIENTS[{alias!r}] is {type(definition).__name__}; "
                        "expected a dict with at least 'BACKEND'.")]
    problems: list[Problem] = []
    for name in definition:
        if name not in _KEYS_BY_NAME:
            problems.append(_unknown_key(alias, name, _KEYS_BY_NAME, "pooled_clients.E003"))
    for key in POOL_KEYS:
        if key.name in definition:
            problems.extend(_check_value(alias, key, definition[key.name]))
    backend_cls: type[ClientBackend[Any]] | None = None
    if "BACKEND" not in definition:
        problems.append(Problem("pooled_clients.E004",
                                f"POOLED_CLIENTS[{alias!r}] has no 'BACKEND'; expected a dotted "
                                "path such as 'pooled_clients.backends.http.HTTPBackend'."))
    elif isinstance(definition["BACKEND"], str) and definition["BACKEND"]:
        backend_cls, found = _import_backend(alias, definition["BACKEND"])
        problems.extend(found)
    if problems:
        return problems
    merged = {key.name: key.default for key in POOL_KEYS} | dict(definition)
    if merged["MIN_SIZE"] > merged["MAX_SIZE"]:
        problems.append(Problem("pooled_clients.E010",
                                f"POOLED_CLIENTS[{alias!r}] has MIN_SIZE {merged['MIN_SIZE']} "
                                f"greater than MAX_SIZE {merged['MAX_SIZE']}; expected "
                                "MIN_SIZE <= MAX_SIZE."))
    problems.extend(_validate_health(alias, merged["HEALTH"]))
    endpoints = merged["ENDPOINTS"]
    if endpoints is None:
        for name in ("TOTAL_MAX_SIZE", "ROUTING"):
            if name in definition:
                problems.append(Problem("pooled_clients.E015",
                                        f"POOLED_CLIENTS[{alias!r}][{name!r}] is set but the pool "
                                        "has no ENDPOINTS; expected ENDPOINTS or no "
                                        f"{name}."))
        option_sets = [("", dict(merged["OPTIONS"]))]
    else:
        endpoint_problems, option_sets = _validate_endpoints(alias, merged)
        problems.extend(endpoint_problems)
        if backend_cls is not None and backend_cls.is_async:
            problems.append(Problem("pooled_clients.E016",
                                    f"POOLED_CLIENTS[{alias!r}]['ENDPOINTS'] is not supported "
                                    f"with the async backend {definition['BACKEND']!r}; "
                                    "expected one pool per endpoint."))
    assert backend_cls is not None
    for where, options in option_sets:
        # A backend's message may quote its options: masked like anything else rendered.
        secrets = backend_cls.option_secrets(options)
        for message in backend_cls.check_options(options):
            problems.append(Problem("pooled_clients.E011",
                                    f"POOLED_CLIENTS[{alias!r}]{where}['OPTIONS']: "
                                    f"{printable(mask_text(str(message).strip(), secrets))}"))
    return problems


def _validate_health(alias: str, health: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name, value in health.items():
        key = _HEALTH_KEYS.get(name)
        if key is None:
            problems.append(Problem("pooled_clients.E012",
                                    f"POOLED_CLIENTS[{alias!r}]['HEALTH'] has unknown key "
                                    f"{name!r}; expected CRITICAL or TIMEOUT."))
            continue
        for problem in _check_value(alias, key, value, "['HEALTH']"):
            problems.append(Problem("pooled_clients.E012", problem.message))
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
        where = f"['ENDPOINTS'][{name!r}]"
        if not isinstance(name, str) or not name or not isinstance(spec, Mapping):
            problems.append(Problem("pooled_clients.E013",
                                    f"{label} entry {name!r} must map a non-empty name to a dict "
                                    "with OPTIONS and/or MAX_SIZE."))
            continue
        for key_name in spec:
            if key_name not in ENDPOINT_KEYS:
                problems.append(_unknown_key(alias, key_name, ENDPOINT_KEYS,
                                             "pooled_clients.E014", where))
        for key_name in ENDPOINT_KEYS & set(spec):
            problems.extend(_check_value(alias, _KEYS_BY_NAME[key_name], spec[key_name], where))
        options = spec.get("OPTIONS", {})
        if isinstance(options, Mapping):
            option_sets.append((where, dict(merged["OPTIONS"]) | dict(options)))
        min_size = spec.get("MIN_SIZE", merged["MIN_SIZE"])
        max_size = spec.get("MAX_SIZE", merged["MAX_SIZE"])
        if isinstance(min_size, int) and isinstance(max_size, int):
            min_sizes.append(min_size)
            if min_size > max_size:
                problems.append(Problem("pooled_clients.E010",
                                        f"POOLED_CLIENTS[{alias!r}]{where} has MIN_SIZE "
                                        f"{min_size} greater than MAX_SIZE {max_size}; expected "
                                        "MIN_SIZE <= MAX_SIZE."))
    total = merged["TOTAL_MAX_SIZE"]
    if isinstance(total, int) and sum(min_sizes) > total:
        # The pool-wide form of E010: MIN_SIZE (in total) greater than MAX_SIZE (in total).
        problems.append(Problem("pooled_clients.E010",
                                f"POOLED_CLIENTS[{alias!r}] has endpoints whose MIN_SIZE add up "
                                f"to {sum(min_sizes)}, more than TOTAL_MAX_SIZE {total}; expected "
                                "a total of at most TOTAL_MAX_SIZE."))
    return problems, option_sets


def _validate_process_settings() -> list[Problem]:
    problems = []
    for name in dir(settings):
        if name.startswith("POOLED_CLIENTS_") and name not in _PROCESS_BY_NAME:
            close = difflib.get_close_matches(name, list(_PROCESS_BY_NAME), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(Problem("pooled_clients.E020",
                                    f"Unknown setting {name}; expected one of "
                                    f"{', '.join(_PROCESS_BY_NAME)}.{hint}"))
    for spec in PROCESS_SETTINGS:
        value = get_process_setting(spec.name)
        if spec.kind == "float":
            if not _is_number(value) or (spec.minimum is not None and value < spec.minimum):
                problems.append(Problem("pooled_clients.E020",
                                        f"{spec.name} is {value!r}; expected a number of seconds "
                                        f">= {spec.minimum:g}."))
        elif spec.kind == "bool" and not isinstance(value, bool):
            problems.append(Problem("pooled_clients.E020",
                                    f"{spec.name} is {value!r}; expected True or False."))
        elif spec.kind == "shared_status" and not (
            value is None or value == "database"
            or (isinstance(value, Mapping) and set(value) == {"CACHE"}
                and isinstance(value["CACHE"], str))
        ):
            problems.append(Problem("pooled_clients.E020",
                                    f"{spec.name} is {value!r}; expected None, 'database' or "
                                    "{'CACHE': '<cache alias>'}."))
        elif spec.kind == "metrics_access":
            problems.extend(Problem("pooled_clients.E020", message)
                            for message in access.problems(spec.name, value))
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
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def parse_definition(alias: str, definition: Any) -> PoolDefinition:
    """Validate and parse one definition; raise ``ImproperlyConfigured`` if it is bad."""
    problems = validate_definition(alias, definition)
    if problems:
        raise ImproperlyConfigured(
            "; ".join(f"{p.message} ({p.id})" for p in problems)
        )
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
        raw=definition,
    )


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
    lines += ["", "| setting | default | meaning |", "|---|---|---|"]
    for spec in PROCESS_SETTINGS:
        lines.append(f"| `{spec.name}` | {render(spec.default)} | {spec.doc} |")
    return "\n".join(lines) + "\n"
