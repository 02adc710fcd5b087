"""Connection properties shared by the dynamic providers (the token secret stays secret)."""

from __future__ import annotations

from typing import Any

from skyrig.proxmox.client import PveClient
from skyrig.proxmox.endpoint import Endpoint

#: Input keys of every skyrig dynamic resource that say how to reach PVE.
CONNECTION_KEYS = ("pve_url", "pve_token_id", "pve_token_secret", "pve_ca_path",
                   "pve_verify_tls")
SECRET_OUTPUTS = ["pve_token_secret"]


def connection_inputs(endpoint: Any) -> dict[str, Any]:
    """Return the connection inputs of a dynamic resource from an :class:`Endpoint`.

    The token secret is wrapped with ``pulumi.Output.secret`` so it is encrypted in the state
    (Pulumi docs: "Secrets").

    Args:
        endpoint: An :class:`Endpoint` or a Pulumi Output of one.

    Returns:
        Outputs for :data:`CONNECTION_KEYS`: ``pve_url``, ``pve_token_id``, ``pve_token_secret``
        (secret), ``pve_ca_path`` (``""`` for none) and ``pve_verify_tls``.
    """
    import pulumi

    ep = pulumi.Output.from_input(endpoint)
    return {
        "pve_url": ep.apply(lambda e: e.url),
        "pve_token_id": ep.apply(lambda e: e.token_id),
        "pve_token_secret": pulumi.Output.secret(ep.apply(lambda e: e.token_secret)),
        "pve_ca_path": ep.apply(lambda e: e.ca_path or ""),
        "pve_verify_tls": ep.apply(lambda e: bool(e.verify_tls)),
    }


def endpoint_from(props: dict[str, Any]) -> Endpoint:
    """Rebuild the endpoint from a dynamic resource's properties.

    Args:
        props: Resource properties holding :data:`CONNECTION_KEYS` (plain values, as the
            provider receives them).

    Returns:
        The endpoint (an empty ``pve_ca_path`` means none).

    Raises:
        KeyError: ``pve_url``, ``pve_token_id`` or ``pve_token_secret`` is missing.
    """
    return Endpoint(url=str(props["pve_url"]), token_id=str(props["pve_token_id"]),
                    token_secret=str(props["pve_token_secret"]),
                    ca_path=str(props.get("pve_ca_path") or "") or None,
                    verify_tls=bool(props.get("pve_verify_tls", True)))


def client_from(props: dict[str, Any]) -> PveClient:
    """Open a PVE session from a dynamic resource's properties.

    Args:
        props: Resource properties holding :data:`CONNECTION_KEYS`.

    Returns:
        A token-authenticated client.

    Raises:
        ProxmoxError: The endpoint is not HTTPS or cannot be reached.
        KeyError: A required connection key is missing.
    """
    return PveClient(endpoint_from(props))


def changed_connection(olds: dict[str, Any], news: dict[str, Any]) -> bool:
    """Say whether any connection property changed between two states.

    Args:
        olds: Old resource properties.
        news: New resource properties.

    Returns:
        ``True`` when any of :data:`CONNECTION_KEYS` differs.
    """
    return any(olds.get(k) != news.get(k) for k in CONNECTION_KEYS)
