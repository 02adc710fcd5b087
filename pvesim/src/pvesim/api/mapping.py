"""/cluster/mapping/pci CRUD (pve-manager ``PVE/API2/Cluster/Mapping/PCI.pm``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pvesim.api import route
from pvesim.apierror import die
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.formats import FormatError
from pvesim.pci import assert_valid, parse_map_entry


def _cfg(b: Backend) -> dict[str, Any]:
    cfg: dict[str, Any] = b.data["mappings"]["pci"]
    return cfg


def _digest(b: Backend) -> str:
    text = json.dumps(_cfg(b), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


def _entry(b: Backend, mid: str, cfg: dict[str, Any], check_node: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": mid, "map": list(cfg.get("map", [])), "digest": _digest(b)}
    for key in ("description", "mdev", "live-migration-capable"):
        if key in cfg:
            out[key] = cfg[key]
    if check_node is not None:
        checks = []
        node = b.hw.nodes.get(check_node)
        entries = []
        for text in cfg.get("map", []):
            try:
                e = parse_map_entry(text)
            except FormatError:
                continue
            if e.get("node") == check_node:
                entries.append(e)
        if not entries:
            checks.append({"severity": "warning", "message": f"No mapping for node {check_node}."})
        for e in entries:
            if node is None:
                break
            try:
                assert_valid(node, mid, e)
            except ValueError as exc:
                checks.append({"severity": "error", "message": str(exc)})
        out["checks"] = checks
    return out


@route("GET", "/cluster/mapping/pci")
def mapping_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    check_node = p.get("check-node")
    out = []
    with b.store.lock:
        for mid in sorted(_cfg(b)):
            if not b.can(caller, f"/mapping/pci/{mid}",
                         ["Mapping.Modify", "Mapping.Use", "Mapping.Audit"], any_of=True):
                continue
            out.append(_entry(b, mid, _cfg(b)[mid], check_node))
    return out


@route("GET", "/cluster/mapping/pci/{id}")
def mapping_get(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    mid = str(p["id"])
    with b.store.lock:
        cfg = _cfg(b).get(mid)
        if cfg is None:
            raise die(f"mapping '{mid}' not found")
        out = _entry(b, mid, cfg, None)
        out.pop("id", None)
        out["type"] = "pci"
        return out


def _store_fields(target: dict[str, Any], p: dict[str, Any]) -> None:
    if "map" in p:
        target["map"] = [str(m) for m in p["map"]]
    if "description" in p:
        target["description"] = str(p["description"])
    for key in ("mdev", "live-migration-capable"):
        if key in p:
            target[key] = int(p[key])


@route("POST", "/cluster/mapping/pci")
def mapping_create(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    mid = str(p["id"])
    with b.store.lock:
        if mid in _cfg(b):
            raise die(f"create hardware mapping failed: pci ID '{mid}' already defined")
        entry: dict[str, Any] = {}
        _store_fields(entry, p)
        _cfg(b)[mid] = entry
    b.store.commit()
    return None


@route("PUT", "/cluster/mapping/pci/{id}")
def mapping_update(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    mid = str(p["id"])
    with b.store.lock:
        cfg = _cfg(b).get(mid)
        if cfg is None:
            raise die(f"update hardware mapping failed: pci ID '{mid}' does not exist")
        if p.get("digest") and p["digest"] != _digest(b):
            raise die("update hardware mapping failed: detected modified configuration - file "
                      "changed by other user? Try again.")
        for key in [k for k in str(p.get("delete", "")).replace(";", ",").split(",") if k]:
            cfg.pop(key, None)
        _store_fields(cfg, p)
    b.store.commit()
    return None


@route("DELETE", "/cluster/mapping/pci/{id}")
def mapping_delete(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    with b.store.lock:
        _cfg(b).pop(str(p["id"]), None)
    b.store.commit()
    return None
