"""Where the Proxmox VE API is and how skyrig authenticates to it.

An :class:`Endpoint` is resolved from the stack (``skyrig:proxmox``), from an explicit override
(the workflow passes the embedded pvesim this way), or from ``$SKYRIG_PVESIM_ENDPOINT`` which
points *any* stack at a running local pvesim (inline JSON or a JSON file with ``url``,
``token_id``, ``token_secret``, ``ca_path``; or the state directory of a running pvesim daemon,
whose ``endpoint.json`` is read). Resolving an endpoint never starts anything: the one place
that starts pvesim is :mod:`skyrig.workflows.localsim`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrig.config import Stack, resolve_secret
from skyrig.errors import SkyrigConfigError

PVESIM_ENV = "SKYRIG_PVESIM_ENDPOINT"


@dataclass(frozen=True)
class Endpoint:
    """How to reach one PVE API: base URL, API token and the CA that signs its certificate.

    Attributes:
        url: API base URL without ``/api2/json``, e.g. ``https://pve1.lab:8006``.
        token_id: PVE API token id ``user@realm!tokenname`` (PVE docs: pveum API tokens).
        token_secret: The token's secret UUID (never printed in ``repr``).
        ca_path: PEM CA bundle that signs the API certificate; ``None`` uses the system store.
        verify_tls: Whether to verify the certificate (a config check refuses ``false`` in prod).
    """

    url: str
    token_id: str
    token_secret: str = field(repr=False)
    ca_path: str | None = None
    verify_tls: bool = True

    @property
    def user(self) -> str:
        """The user part of ``token_id``, e.g. ``skyrig@pve``."""
        return self.token_id.split("!", 1)[0]

    @property
    def token_name(self) -> str:
        """The token part of ``token_id``, e.g. ``provision``."""
        return self.token_id.split("!", 1)[1]

    @property
    def verify(self) -> bool | str:
        """What ``requests`` gets as ``verify``: a CA path, True, or False (never in prod)."""
        if not self.verify_tls:
            return False
        return self.ca_path or True

    def to_dict(self) -> dict[str, Any]:
        """Return the endpoint as JSON-ready data (the ``endpoint.json`` shape, with the secret).

        Returns:
            ``{"url", "token_id", "token_secret", "ca_path", "verify_tls"}``.
        """
        return {"url": self.url, "token_id": self.token_id, "token_secret": self.token_secret,
                "ca_path": self.ca_path, "verify_tls": self.verify_tls}

    @classmethod
    def from_pvesim(cls, sim: Any) -> Endpoint:
        """Build the endpoint of a running pvesim (duck-typed: ``PveSim`` or ``SimEndpoint``).

        Takes ``url`` and ``ca_path``, and ``root_token`` (a ``(token_id, secret)`` pair) or
        ``token_id`` / ``token_secret``. No import of pvesim: the core never depends on it.

        Args:
            sim: The simulator or its endpoint record.

        Returns:
            An endpoint with TLS verification against the simulator's CA; a trailing ``/api2/json``
            is removed from the URL.
        """
        token = getattr(sim, "root_token", None)
        token_id, secret = token if token else (sim.token_id, sim.token_secret)
        return cls(url=str(sim.url).removesuffix("/api2/json"), token_id=str(token_id),
                   token_secret=str(secret), ca_path=str(sim.ca_path))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        """Build an endpoint from :meth:`to_dict`'s shape (e.g. a pvesim ``endpoint.json``).

        Args:
            d: ``url``, ``token_id``, ``token_secret`` (required), ``ca_path`` and ``verify_tls``
                (optional, default ``None`` / ``True``).

        Returns:
            The endpoint.

        Raises:
            KeyError: A required key is missing.
        """
        return cls(url=str(d["url"]), token_id=str(d["token_id"]),
                   token_secret=str(d["token_secret"]), ca_path=d.get("ca_path"),
                   verify_tls=bool(d.get("verify_tls", True)))


def _least_privilege(d: dict[str, Any], token_id: str | None) -> dict[str, Any]:
    """Use the stack's own token from a pvesim endpoint where that has it.

    A pvesim ``endpoint.json`` carries its root token and the bootstrapped tokens (``tokens``:
    authid → secret); taking the stack's token keeps the environment variable from handing out
    root where the stack asks for less.
    """
    tokens = d.get("tokens")
    if token_id and isinstance(tokens, dict) and token_id in tokens:
        return {**d, "token_id": token_id, "token_secret": tokens[token_id]}
    return d


def _from_env_value(value: str, token_id: str | None = None) -> Endpoint:
    """Parse ``$SKYRIG_PVESIM_ENDPOINT``.

    Accepts inline JSON, a JSON file, or a running pvesim's state directory (its ``endpoint.json``).
    Where that names bootstrapped ``tokens`` and one is ``token_id`` (the stack's
    ``proxmox.token_id``), that least-privilege token is used instead of the root token.
    Raises :class:`SkyrigConfigError` for anything else.
    """
    text = value.strip()
    try:
        if text.startswith("{"):
            return Endpoint.from_dict(_least_privilege(json.loads(text), token_id))
        path = Path(text)
        if path.is_dir():
            path = path / "endpoint.json"
            if not path.is_file():
                raise SkyrigConfigError(
                    f"${PVESIM_ENV}={value!r} is a directory without a running pvesim"
                    " (no endpoint.json)",
                    file=str(path.parent))
        if path.is_file():
            return Endpoint.from_dict(_least_privilege(json.loads(path.read_text()), token_id))
    except (ValueError, KeyError, TypeError) as exc:
        raise SkyrigConfigError(f"${PVESIM_ENV}={value!r} is not a valid endpoint: {exc!r}"
                                " (want url, token_id, token_secret, ca_path)") from exc
    raise SkyrigConfigError(
        f"${PVESIM_ENV}={value!r} is neither inline JSON, a JSON file nor the state directory"
        " of a running pvesim (start one with `skyrig pvesim serve --endpoint-file FILE`)"
    )


def resolve_endpoint(stack: Stack, override: Endpoint | None = None,
                     token_secret: str | None = None) -> Endpoint:
    """Return the endpoint to use for ``stack``: override > ``$SKYRIG_PVESIM_ENDPOINT`` > stack.

    Args:
        stack: The validated stack; its ``skyrig:proxmox`` block is used last.
        override: An endpoint given by the caller (the workflow passes the embedded pvesim).
        token_secret: The token secret, if the caller already has it; otherwise it is resolved from
            the stack's ``proxmox.token_secret`` reference (env var or file).

    Returns:
        The endpoint. Nothing is started or contacted.

    Raises:
        SkyrigConfigError: ``$SKYRIG_PVESIM_ENDPOINT`` is neither inline JSON, a JSON file nor a
            running pvesim's state directory, or lacks a key; the stack says ``endpoint: pvesim``
            but no simulator was given; or the token secret cannot be resolved.
    """
    if override is not None:
        return override
    env = os.environ.get(PVESIM_ENV)
    if env:
        return _from_env_value(env, stack.config.proxmox.token_id)
    px = stack.config.proxmox
    if px.embedded:
        raise SkyrigConfigError(
            f"stack {stack.name}: proxmox.endpoint is `pvesim` but no running simulator was given",
            file=str(stack.file),
        )
    secret = token_secret or resolve_secret(px.token_secret, f"stack {stack.name}: proxmox token")
    return Endpoint(url=px.endpoint, token_id=px.token_id, token_secret=secret,
                    ca_path=px.ca_bundle, verify_tls=px.verify_tls)
