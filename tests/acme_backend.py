"""A custom backend: one SDK client per API key (the worked example of docs/backends.md).

``AcmeClient`` plays the vendor SDK you would install (``from acme import Client``); the
backend is the part you write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from pooled_clients.backends.base import ClientBackend
from pooled_clients.masking import mask_url


class AcmeClient:
    """A vendor-style SDK client: one API key, one keep-alive HTTP session."""

    def __init__(self, base_url: str, api_key: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def get(self, path: str) -> dict[str, Any]:
        response = self.session.get(self.base_url + path.lstrip("/"), timeout=self.timeout)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def close(self) -> None:
        self.session.close()


class AcmeBackend(ClientBackend[AcmeClient]):
    """Pools ``AcmeClient`` objects; ``OPTIONS``: ``base_url``, ``api_key``, ``timeout``."""

    # Values of these options are masked wherever the project shows text.
    secret_options = ("api_key",)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = []
        for name in options:
            if name not in ("base_url", "api_key", "timeout"):
                problems.append(f"unknown option {name!r}; expected base_url, api_key, timeout.")
        for name in ("base_url", "api_key"):
            if not isinstance(options.get(name), str) or not options.get(name):
                problems.append(f"{name!r} is required; expected a non-empty string.")
        return problems

    def create(self) -> AcmeClient:
        # The SDK connects lazily; connect_timeout still bounds its first request.
        return AcmeClient(self.options["base_url"], self.options["api_key"],
                          timeout=self.options.get("timeout", self.connect_timeout))

    def check(self, client: AcmeClient) -> None:
        client.session.get(client.base_url + "health",
                           timeout=self.connect_timeout).raise_for_status()

    def reset(self, client: AcmeClient) -> bool:
        client.session.cookies.clear()
        return True

    def close(self, client: AcmeClient) -> None:
        client.close()

    def describe(self) -> str:
        return mask_url(self.options["base_url"])

    @classmethod
    def keyed_placeholders(cls) -> dict[str, Any]:
        # In a keyed pool the API key comes with each checkout (key=tenant.api_key).
        return {"api_key": "given-by-each-key"}

    def key_options(self, key: Any) -> dict[str, Any]:
        # A key is a tenant's API key: its clients are built with it. Keys stay secret:
        # pages, logs and metrics show them only as a short hash (describe_key()).
        return {"api_key": key}
