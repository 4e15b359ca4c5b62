"""Who may read ``/metrics``: ``POOLED_CLIENTS_METRICS_ACCESS``.

``None`` (the default) lets everyone in, as Prometheus endpoints conventionally do. A dict
with one or more of these keys lets in a request that satisfies any one of them:

- ``"PERMISSION"``: ``"app_label.codename"``, a permission the logged-in user has;
- ``"TOKEN"``: a bearer token the scraper sends (``Authorization: Bearer <token>``),
  compared in constant time;
- ``"IPS"``: client addresses or networks (``"10.0.0.0/8"``, ``"::1"``) matched against
  ``REMOTE_ADDR``.

Everyone else gets 403, and so does everyone when the value is malformed (the system
check ``pooled_clients.E020`` says why). Nothing here imports prometheus_client (the
system checks use this module).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

__all__ = ["KEYS", "MIN_TOKEN_LENGTH", "allowed", "problems"]

KEYS = ("PERMISSION", "TOKEN", "IPS")
#: A shorter token would be guessable by a scraper that keeps trying.
MIN_TOKEN_LENGTH = 16

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def problems(name: str, value: Any) -> list[str]:
    """Each problem with the setting's value, as a sentence (the token is never quoted)."""
    if value is None:
        return []
    expected = f"expected None or a dict with one or more of {', '.join(KEYS)}"
    if not isinstance(value, Mapping) or not value:
        return [f"{name} is {type(value).__name__}; {expected}."]
    found = [f"{name} has unknown key {key!r}; {expected}." for key in value if key not in KEYS]
    permission = value.get("PERMISSION")
    if "PERMISSION" in value and not (isinstance(permission, str)
                                      and permission.count(".") == 1
                                      and all(permission.split("."))):
        found.append(f"{name}['PERMISSION'] is {permission!r}; expected a permission name "
                     "such as 'pooled_clients.view_pool_status'.")
    token = value.get("TOKEN")
    if "TOKEN" in value and not (isinstance(token, str) and len(token) >= MIN_TOKEN_LENGTH
                                 and token.isascii() and token.isprintable()
                                 and " " not in token):
        found.append(f"{name}['TOKEN'] is not a usable token; expected a string of at least "
                     f"{MIN_TOKEN_LENGTH} printable ASCII characters without spaces.")
    ips = value.get("IPS")
    if "IPS" in value:
        if not isinstance(ips, list | tuple) or not ips:
            found.append(f"{name}['IPS'] is {ips!r}; expected a non-empty list of addresses "
                         "or networks.")
        else:
            for item in ips:
                try:
                    ipaddress.ip_network(item, strict=False)
                except (TypeError, ValueError):
                    found.append(f"{name}['IPS'] has {item!r}; expected an IP address or a "
                                 "network such as '10.0.0.0/8'.")
    return found


@functools.lru_cache(maxsize=8)
def _networks(items: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _from_allowed_ip(request: HttpRequest, items: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(items))


def _has_token(request: HttpRequest, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    # Compared in constant time, and even when the scheme is wrong, so the time taken
    # tells nothing about the token.
    match = hmac.compare_digest(credentials.strip().encode("utf-8", "replace"),
                                token.encode("utf-8"))
    return match and scheme.lower() == "bearer"


def allowed(request: HttpRequest, access: Any) -> bool:
    """Whether ``request`` may read the metrics under ``access`` (the setting's value).
    A value :func:`problems` finds fault with lets nobody in (``manage.py check`` says why)."""
    if access is None:
        return True
    if not isinstance(access, Mapping) or problems("", access):
        return False
    ips = access.get("IPS")
    if ips and _from_allowed_ip(request, tuple(ips)):
        return True
    token = access.get("TOKEN")
    if token and _has_token(request, token):
        return True
    permission = access.get("PERMISSION")
    if permission:
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.has_perm(permission):
            return True
    return False
