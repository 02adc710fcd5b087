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
    """How often and how long to retry a transient failure.

    Attributes:
        attempts: Total tries including the first one (4 means up to 3 retries).
        backoff_s: Delay before the first retry, in seconds; doubled after each retry.
        max_backoff_s: Cap on any one delay, in seconds.
    """

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 3.0

    def delays(self) -> list[float]:
        """The sleep before each retry, in order.

        Returns:
            ``attempts - 1`` delays in seconds: ``backoff_s`` doubling each time, capped at
            ``max_backoff_s`` (e.g. ``[0.2, 0.4, 0.8]`` for the defaults).
        """
        out, d = [], self.backoff_s
        for _ in range(self.attempts - 1):
            out.append(min(d, self.max_backoff_s))
            d *= 2
        return out


def encode_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Encode call parameters in PVE's wire form.

    PVE's API schema types booleans as ``0``/``1`` and rejects ``true``; repeated keys (e.g.
    ``delete`` lists) are sent as lists (PVE API viewer, JSONSchema ``boolean`` type).

    Args:
        params: Parameter name → value as a caller writes it; ``None`` means "no parameter".

    Returns:
        A new dict: booleans → ``1``/``0`` (also inside lists/tuples, which become lists),
        ``None`` values dropped, everything else unchanged.
    """
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
    """Say whether retrying the same call may succeed.

    PVE answers any ``die`` in a handler with HTTP 500, so only 500s whose message says the worker
    timed out or could not start (``got timeout``, ``got no worker upid``, connection refused / no
    route) count; so do connection-level failures (no status), 502/503/504 and pveproxy's 595-599.

    Args:
        exc: The error of a failed call, with ``status`` and ``pve_message`` set by
            :meth:`PveClient.request`.

    Returns:
        ``True`` when the failure is transient, ``False`` when repeating would fail the same way.
    """
    if exc.status is None:
        return True  # connection-level failure
    if exc.status in TRANSIENT_STATUS:
        return True
    msg = exc.pve_message or ""
    return exc.status == 500 and any(t in msg for t in TRANSIENT_500)


def is_missing(exc: ProxmoxError) -> bool:
    """Say whether an error is PVE's way of saying *does not exist*.

    PVE answers a missing object with 404 on some paths and with 500 ``... does not exist`` /
    ``... not found`` on others (e.g. ``GET /nodes/{node}/qemu/{vmid}/config`` of an unknown VMID).

    Args:
        exc: The error of a failed call.

    Returns:
        ``True`` for a 404, or a 500 whose PVE message says "does not exist" or "not found".
    """
    msg = exc.pve_message or ""
    return exc.status == 404 or (exc.status == 500 and ("does not exist" in msg
                                                        or "not found" in msg))


def _describe_errors(errors: Any) -> str:
    if isinstance(errors, dict) and errors and "errors" not in errors:
        return "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))
    return ""


class PveClient:
    """One authenticated PVE API session, safe to share between provisioning threads.

    Authenticates with an API token (``user@realm!tokenid`` + secret from ``endpoint``) unless
    ``password`` is given, then with a ticket (``POST /access/ticket``). Counts every call by method
    and by path template (``calls``, ``calls_by_path``) for benchmarks and tests.

    Args:
        endpoint: URL (``https://host:8006``), token and TLS settings of the API.
        timeout: Per-request timeout in seconds, passed to ``requests``.
        retry: Retry policy for transient failures (default :class:`RetryPolicy`).
        password: Password for ticket auth; ``None`` means token auth.
        pool_size: HTTP connections kept per host (one per concurrent provisioning thread).
        sleep: Sleep function used between retries (injected by tests).

    Raises:
        ProxmoxError: The URL is ``http://`` (PVE speaks HTTPS only), the ticket login was refused
            (status 401) or the endpoint cannot be reached.
    """

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
        """Open a session with ticket auth (PVE API: ``POST /access/ticket``).

        Only ``root@pam`` with a ticket may set raw ``hostpciN: host=...`` (pve-docs qm.conf
        hostpci); every other session is refused such a parameter before it is sent.

        Args:
            url: API base URL, ``https://host:8006``.
            user: PVE user with realm, e.g. ``root@pam``.
            password: The user's password.
            ca_path: PEM CA bundle that signs the node certificate; ``None`` uses the system store.
            verify_tls: Whether to verify the server certificate.
            **kw: Further :class:`PveClient` keyword arguments (``timeout``, ``retry``, ...).

        Returns:
            A logged-in client whose ``uses_token`` is ``False``.

        Raises:
            ProxmoxError: The login was refused (status 401) or the endpoint cannot be reached.
        """
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
        """Return the number of API calls sent so far, by HTTP method (retries count).

        Returns:
            ``{"GET": n, "POST": n, ...}``; a copy, safe to keep.
        """
        with self._lock:
            return dict(self.calls)

    def reset_counts(self) -> None:
        """Set all call counters (by method and by path template) back to zero."""
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
        """Call ``METHOD /api2/json/<path>`` and return PVE's ``data``.

        Parameters are encoded by :func:`encode_params`. A raw ``hostpciN`` host address is refused
        unless the session is ``root@pam`` with a ticket (pve-docs qm.conf ``hostpci``: only root
        may pass through raw devices; everyone else uses cluster PCI mappings). Transient failures
        (see :func:`is_transient`) are retried per ``retry``; PVE-level ones (``got timeout``) for
        every method because PVE did not perform the change, connection-level ones only when
        ``repeatable``.

        Args:
            method: ``GET``, ``POST``, ``PUT`` or ``DELETE`` (any case).
            path: API path below ``/api2/json``, e.g. ``nodes/pve1/qemu/101/config``.
            params: Query/body parameters; see :func:`encode_params`.
            node: PVE node name, only to label errors.
            vmid: VMID, only to label errors.
            repeatable: Whether the call may be sent again after a lost connection (default: only
                ``GET``).

        Returns:
            The ``data`` member of PVE's JSON answer (a dict, list, str such as a UPID, or
            ``None``).

        Raises:
            ProxmoxError: PVE answered with an error status (``status`` and ``pve_message`` carry
                PVE's reason and per-parameter errors; 401/403 come with a hint), the connection
                failed after the allowed retries, or a raw ``hostpciN: host=...`` was refused before
                sending.
            ValueError: ``method`` is not one of the four above.
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
        """Send ``GET /api2/json/<path>`` (retried on a lost connection).

        Args:
            path: API path below ``/api2/json``.
            **params: Query parameters.

        Returns:
            PVE's ``data``.

        Raises:
            ProxmoxError: The call failed (see :meth:`request`).
        """
        return self.request("GET", path, params)

    def post(self, path: str, **params: Any) -> Any:
        """Send ``POST /api2/json/<path>`` (not repeated on a lost connection).

        Args:
            path: API path below ``/api2/json``.
            **params: Body parameters.

        Returns:
            PVE's ``data``; a UPID string for calls that start a task.

        Raises:
            ProxmoxError: The call failed (see :meth:`request`).
        """
        return self.request("POST", path, params)

    def put(self, path: str, **params: Any) -> Any:
        """Send ``PUT /api2/json/<path>`` (not repeated on a lost connection).

        Args:
            path: API path below ``/api2/json``.
            **params: Body parameters.

        Returns:
            PVE's ``data`` (often ``None``).

        Raises:
            ProxmoxError: The call failed (see :meth:`request`).
        """
        return self.request("PUT", path, params)

    def delete(self, path: str, **params: Any) -> Any:
        """Send ``DELETE /api2/json/<path>`` (not repeated on a lost connection).

        Args:
            path: API path below ``/api2/json``.
            **params: Query parameters (e.g. ``purge=1``).

        Returns:
            PVE's ``data``; a UPID string for calls that start a task.

        Raises:
            ProxmoxError: The call failed (see :meth:`request`).
        """
        return self.request("DELETE", path, params)
