"""A thin, typed session over proxmoxer: auth, wire encoding, typed errors, bounded retries.

* API-token auth (preferred) or ticket auth (``PveClient.with_password``); TLS verification is on
  unless the endpoint says otherwise (a CA bundle path is passed to ``requests``).
* Booleans are sent as ``1``/``0``; ``None`` values are dropped (PVE rejects ``True``).
* Every failure becomes :class:`skyrig.errors.ProxmoxError` with node, vmid, HTTP status and PVE's
  own message (the HTTP reason phrase plus the per-parameter ``errors``).
* Transient failures are retried a bounded number of times with backoff: connection resets and
  timeouts (only for reads or when the caller marks the call safe to repeat), 502/503/504 and
  595-599, and 500s whose message says ``got timeout`` / ``got no worker upid``.
* Raw ``hostpciN: host=...`` is refused *before* it is sent when the session is a token (PVE only
  allows it for root@pam with a ticket); skyrig attaches GPUs through PCI mappings.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException
from requests.adapters import HTTPAdapter

from skyrig.errors import ProxmoxError
from skyrig.proxmox.endpoint import Endpoint

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {502, 503, 504, 595, 596, 597, 598, 599}
TRANSIENT_500 = ("got timeout", "got no worker upid", "Connection refused", "No route to host")
HOSTPCI_KEY = re.compile(r"^hostpci\d+$")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 3.0

    def delays(self) -> list[float]:
        out, d = [], self.backoff_s
        for _ in range(self.attempts - 1):
            out.append(min(d, self.max_backoff_s))
            d *= 2
        return out


def encode_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """PVE wire form: booleans → 1/0, ``None`` dropped, lists kept (repeated keys)."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = 1 if value else 0
        elif isinstance(value, list | tuple):
            out[key] = [1 if v is True else 0 if v is False else v for v in value]
        else:
            out[key] = value
    return out


def is_transient(exc: ProxmoxError) -> bool:
    """Whether retrying the same call may succeed (PVE's 500 is any ``die``, so be specific)."""
    if exc.status is None:
        return True  # connection-level failure
    if exc.status in TRANSIENT_STATUS:
        return True
    msg = exc.pve_message or ""
    return exc.status == 500 and any(t in msg for t in TRANSIENT_500)


def is_missing(exc: ProxmoxError) -> bool:
    """PVE's way of saying *does not exist* (404, or 500 ``... does not exist``)."""
    msg = exc.pve_message or ""
    return exc.status == 404 or (exc.status == 500 and ("does not exist" in msg
                                                        or "not found" in msg))


def _describe_errors(errors: Any) -> str:
    if isinstance(errors, dict) and errors and "errors" not in errors:
        return "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))
    return ""


class PveClient:
    """One authenticated PVE API session, safe to share between provisioning threads."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, password: str | None = None,
                 pool_size: int = 16, sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.calls_by_path: Counter[tuple[str, str]] = Counter()
        host = endpoint.url.removeprefix("https://").split("/", 1)[0]
        if endpoint.url.startswith("http://"):
            raise ProxmoxError(f"{endpoint.url}: PVE speaks HTTPS only",
                               hint="use an https:// endpoint")
        self.uses_token = password is None
        try:
            if password is None:
                self.api = ProxmoxAPI(host, user=endpoint.user, token_name=endpoint.token_name,
                                      token_value=endpoint.token_secret,
                                      verify_ssl=endpoint.verify, timeout=timeout)
            else:
                self.api = ProxmoxAPI(host, user=endpoint.user, password=password,
                                      verify_ssl=endpoint.verify, timeout=timeout)
        except AuthenticationError as exc:
            raise ProxmoxError(f"login to {endpoint.url} as {endpoint.user} failed: {exc}",
                               status=401, hint="check the user name and password") from exc
        except requests.RequestException as exc:
            raise ProxmoxError(f"cannot reach {endpoint.url}: {exc}",
                               hint="is the endpoint up and its CA bundle right?") from exc
        session = self.api._store["session"]
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        session.mount("https://", adapter)

    @classmethod
    def with_password(cls, url: str, user: str, password: str, *, ca_path: str | None = None,
                      verify_tls: bool = True, **kw: Any) -> PveClient:
        """Ticket auth (``POST /access/ticket``); only root@pam may set raw host PCI ids."""
        ep = Endpoint(url=url, token_id=f"{user}!ticket", token_secret="", ca_path=ca_path,
                      verify_tls=verify_tls)
        client = cls(ep, password=password, **kw)
        return client

    # ------------------------------------------------------------------ counting
    def _count(self, method: str, path: str) -> None:
        template = re.sub(r"UPID:[^/]+", "{upid}", path)
        template = re.sub(r"/qemu/\d+", "/qemu/{vmid}", template)
        with self._lock:
            self.calls[method] += 1
            self.calls_by_path[(method, template)] += 1

    def call_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.calls_by_path.clear()

    # ------------------------------------------------------------------ requests
    def _guard(self, params: Mapping[str, Any]) -> None:
        if not self.uses_token and self.endpoint.user == "root@pam":
            return
        for key, value in params.items():
            if HOSTPCI_KEY.match(key) and isinstance(value, str) and "mapping=" not in value:
                raise ProxmoxError(
                    f"refusing to send raw {key}={value!r}: only root@pam with a ticket may set "
                    "host PCI addresses",
                    hint="attach GPUs through a cluster PCI mapping (hostpciN: mapping=<id>)",
                )

    def request(self, method: str, path: str, params: Mapping[str, Any] | None = None, *,
                node: str | None = None, vmid: int | None = None,
                repeatable: bool | None = None) -> Any:
        """Call ``METHOD /api2/json/<path>``; returns PVE's ``data``.

        ``repeatable``: whether the call may be sent again after a lost connection (default: only
        GETs). PVE-level transient errors (``got timeout``) are retried for every method because
        PVE did not perform the change.
        """
        method = method.upper()
        data = encode_params(params)
        self._guard(data)
        if repeatable is None:
            repeatable = method == "GET"
        resource = self.api(path.lstrip("/"))
        delays = self.retry.delays()
        attempt = 0
        while True:
            self._count(method, path)
            try:
                if method == "GET":
                    return resource.get(**data)
                if method == "POST":
                    return resource.post(**data)
                if method == "PUT":
                    return resource.put(**data)
                if method == "DELETE":
                    return resource.delete(**data)
                raise ValueError(f"unsupported method {method}")
            except ResourceException as exc:
                err = self._error(method, path, node, vmid, exc.status_code, str(exc.content),
                                  exc.errors)
                retry = is_transient(err)
            except requests.RequestException as exc:
                err = ProxmoxError(f"{method} /{path.lstrip('/')}: connection to "
                                   f"{self.endpoint.url} failed: {type(exc).__name__}: {exc}",
                                   node=node, vmid=vmid, status=None, pve_message=str(exc),
                                   hint="check that the PVE API is reachable; re-running is safe")
                retry = repeatable
            if not retry or attempt >= len(delays):
                raise err
            log.info("transient PVE failure (%s), retrying in %.1fs", err.pve_message,
                     delays[attempt])
            self._sleep(delays[attempt])
            attempt += 1

    def _error(self, method: str, path: str, node: str | None, vmid: int | None, status: int,
               content: str, errors: Any) -> ProxmoxError:
        detail = _describe_errors(errors)
        pve_message = content + (f" ({detail})" if detail else "")
        hint = None
        if status == 403:
            hint = ("grant the token the privilege named above (docs/provisioning.md lists the "
                    "minimal set)")
        elif status == 401:
            hint = "check the token id and secret (SKYRIG_PROXMOX_TOKEN_SECRET)"
        return ProxmoxError(f"{method} /{path.lstrip('/')} failed: {status} {pve_message}",
                            node=node, vmid=vmid, status=status, pve_message=pve_message,
                            hint=hint)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params)

    def post(self, path: str, **params: Any) -> Any:
        return self.request("POST", path, params)

    def put(self, path: str, **params: Any) -> Any:
        return self.request("PUT", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params)
