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
    """Inputs from an :class:`Endpoint` (or an Output of one); the secret is wrapped secret."""
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
    return Endpoint(url=str(props["pve_url"]), token_id=str(props["pve_token_id"]),
                    token_secret=str(props["pve_token_secret"]),
                    ca_path=str(props.get("pve_ca_path") or "") or None,
                    verify_tls=bool(props.get("pve_verify_tls", True)))


def client_from(props: dict[str, Any]) -> PveClient:
    return PveClient(endpoint_from(props))


def changed_connection(olds: dict[str, Any], news: dict[str, Any]) -> bool:
    return any(olds.get(k) != news.get(k) for k in CONNECTION_KEYS)
