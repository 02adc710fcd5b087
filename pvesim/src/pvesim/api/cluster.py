"""Read-only cluster and node endpoints: version, nodes, resources, nextid, storage, PCI."""

from __future__ import annotations

import json
import time
from typing import Any

from pvesim import vmconfig
from pvesim.api import Reply, route
from pvesim.apierror import die, param_error
from pvesim.auth import Caller
from pvesim.backend import PVE_VERSION, Backend, vm_status_entry


@route("GET", "/version")
def version(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    return dict(PVE_VERSION)


def _node_entry(b: Backend, name: str) -> dict[str, Any]:
    node = b.hw.nodes[name]
    if name in b.data.get("nodes_offline", []):  # PVE lists an unreachable member bare
        return {"node": name, "id": f"node/{name}", "type": "node", "status": "offline",
                "level": "", "ssl_fingerprint": b.data.get("fingerprint", "")}
    used_mem = sum(
        vmconfig.memory_mib(vm["conf"]) * 1024**2 // 3 for vm in b.data["vms"].values()
        if vm["node"] == name and vm["status"] == "running")
    root_disk = 100 * 1024**3
    return {
        "node": name, "id": f"node/{name}", "type": "node", "status": "online",
        "cpu": 0.02, "maxcpu": node.cpus, "mem": 2 * 1024**3 + used_mem, "maxmem": node.memory,
        "disk": 8 * 1024**3, "maxdisk": root_disk, "uptime": int(time.time() - b.boot_time) + 3600,
        "level": "", "ssl_fingerprint": b.data.get("fingerprint", ""),
    }


@route("GET", "/nodes")
def nodes(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    with b.store.lock:
        return [_node_entry(b, n) for n in sorted(b.hw.nodes)]


@route("GET", "/nodes/{node}/status")
def node_status(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    node = b.node(p["node"])
    with b.store.lock:
        entry = _node_entry(b, node.name)
    return {
        "uptime": entry["uptime"], "cpu": entry["cpu"],
        "cpuinfo": {"cpus": node.cpus, "sockets": 2 if node.cpus >= 32 else 1,
                    "cores": node.cpus // (2 if node.cpus >= 32 else 1), "model":
                    "AMD EPYC 7543 32-Core Processor" if node.cpus >= 32 else
                    "AMD Ryzen 9 5950X 16-Core Processor", "mhz": "2800.000", "hvm": "1",
                    "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce cx8 apic svm"},
        "memory": {"total": node.memory, "used": entry["mem"], "free": node.memory - entry["mem"]},
        "rootfs": {"total": entry["maxdisk"], "used": entry["disk"],
                   "avail": entry["maxdisk"] - entry["disk"],
                   "free": entry["maxdisk"] - entry["disk"]},
        "swap": {"total": 8 * 1024**3, "used": 0, "free": 8 * 1024**3},
        "loadavg": ["0.10", "0.08", "0.05"], "idle": 0, "wait": 0.0,
        "kversion": "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)",
        "pveversion": "pve-manager/8.4.1/2a5fa54a8503f96d",
        "boot-info": {"mode": "efi", "secureboot": 0},
        "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "machine": "x86_64",
                           "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9"},
        "ksm": {"shared": 0},
    }


def _storage_entry(b: Backend, node: str, sid: str) -> dict[str, Any]:
    st = b.hw.nodes[node].storages[sid]
    used = b.storage_used(node, sid)
    return {"storage": sid, "type": st.type, "content": ",".join(st.content),
            "total": st.size, "used": used, "avail": st.size - used, "active": 1,
            "enabled": 1, "shared": int(st.shared),
            "used_fraction": round(used / st.size, 6) if st.size else 0}


@route("GET", "/cluster/resources")
def resources(b: Backend, caller: Caller, p: dict[str, Any]) -> Reply:
    """Served from a cache keyed on the state generation (bumped by every commit), the
    caller and ``type``; entries are at most ``RESOURCES_TTL`` seconds old (uptime, cpu)."""
    key = (b.store.generation, caller.authid, p.get("type"))
    hit = b.resources_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < RESOURCES_TTL:
        return Reply(None, raw=hit[1])
    with b.resources_lock:  # one thread recomputes, concurrent callers reuse its answer
        hit = b.resources_cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < RESOURCES_TTL:
            return Reply(None, raw=hit[1])
        now = time.monotonic()
        raw = json.dumps({"data": _resources(b, caller, p)}, separators=(",", ":")).encode()
        if len(b.resources_cache) > 64:
            b.resources_cache.clear()
        b.resources_cache[key] = (now, raw)
    return Reply(None, raw=raw)


RESOURCES_TTL = 1.0


def _resources(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    typ = p.get("type")
    out: list[dict[str, Any]] = []
    with b.store.lock:
        if typ in (None, "vm"):
            for vmid, vm in sorted(b.data["vms"].items(), key=lambda kv: int(kv[0])):
                if not b.can(caller, f"/vms/{vmid}", ["VM.Audit"]):
                    continue
                e = vm_status_entry(b, vmid, vm)
                entry = {
                    "id": f"qemu/{vmid}", "type": "qemu", "vmid": int(vmid), "node": vm["node"],
                    "name": e["name"], "status": e["status"], "template": e.get("template", 0),
                    "maxcpu": e["cpus"], "cpu": e["cpu"], "maxmem": e["maxmem"], "mem": e["mem"],
                    "maxdisk": e["maxdisk"], "disk": 0, "uptime": e["uptime"], "netin": 0,
                    "netout": 0, "diskread": 0, "diskwrite": 0, "hastate": None,
                }
                entry.pop("hastate")
                for key in ("lock", "tags"):
                    if key in e:
                        entry[key] = e[key]
                out.append(entry)
        if typ in (None, "node"):
            for name in sorted(b.hw.nodes):
                if not b.can(caller, f"/nodes/{name}", ["Sys.Audit"]):
                    continue
                n = _node_entry(b, name)
                n["cgroup-mode"] = 2
                n.pop("ssl_fingerprint", None)
                out.append(n)
        if typ in (None, "storage"):
            for name in sorted(b.hw.nodes):
                for sid in sorted(b.hw.nodes[name].storages):
                    if not b.can(caller, f"/storage/{sid}",
                                 ["Datastore.Audit", "Datastore.AllocateSpace"], any_of=True):
                        continue
                    s = _storage_entry(b, name, sid)
                    out.append({
                        "id": f"storage/{name}/{sid}", "type": "storage", "storage": sid,
                        "node": name, "status": "available", "plugintype": s["type"],
                        "content": s["content"], "shared": s["shared"], "disk": s["used"],
                        "maxdisk": s["total"],
                    })
        if typ in (None, "sdn"):
            for name in sorted(b.hw.nodes):
                out.append({"id": f"sdn/{name}/localnetwork", "type": "sdn", "sdn": "localnetwork",
                            "node": name, "status": "ok"})
    return out


@route("GET", "/cluster/nextid")
def nextid(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    with b.store.lock:
        used = {int(v) for v in b.data["vms"]}
        if "vmid" in p:
            vmid = int(p["vmid"])
            if vmid in used:
                raise param_error({"vmid": f"VM {vmid} already exists"})
            return str(vmid)
        vmid = 100
        while vmid in used:
            vmid += 1
        if vmid >= 1_000_000:
            raise die("unable to get any free VMID in range [100, 1000000)")
        return str(vmid)


@route("GET", "/nodes/{node}/storage")
def storage_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    node = b.node(p["node"])
    want = set(str(p.get("content", "")).split(",")) - {""}
    out = []
    with b.store.lock:
        for sid in sorted(node.storages):
            if p.get("storage") and p["storage"] != sid:
                continue
            if want and not want & set(node.storages[sid].content):
                continue
            if not b.can(caller, f"/storage/{sid}",
                         ["Datastore.Audit", "Datastore.AllocateSpace"], any_of=True):
                continue
            out.append(_storage_entry(b, node.name, sid))
    return out


@route("GET", "/nodes/{node}/storage/{storage}/content")
def storage_content(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    node = b.node(p["node"])
    st = b.storage(node.name, p["storage"])
    content = p.get("content")
    out = []
    with b.store.lock:
        for name, vol in sorted(b._volumes(node.name, st.id).items()):
            vcontent = vol.get("content", "images")
            if content and content != vcontent:
                continue
            if "vmid" in p and vol.get("vmid") != int(p["vmid"]):
                continue
            entry: dict[str, Any] = {"volid": f"{st.id}:{name}", "format": vol["format"],
                                     "size": vol["size"], "used": vol["size"] // 4,
                                     "ctime": vol["ctime"], "content": vcontent}
            if vol.get("vmid") is not None:
                entry["vmid"] = vol["vmid"]
            if vol.get("parent"):
                entry["parent"] = vol["parent"]
            out.append(entry)
    return out


@route("POST", "/nodes/{node}/storage/{storage}/content")
def storage_alloc(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"])
    st = b.storage(node.name, p["storage"])
    vmid = int(p["vmid"])
    name = str(p["filename"])
    b.check_perm(caller, f"/vms/{vmid}", ["VM.Allocate"])
    if "images" not in st.content:
        raise param_error({"storage": f"storage '{st.id}' does not support vm images"})
    if not name.startswith(f"vm-{vmid}-"):
        raise die(f"illegal name '{name}' - should be 'vm-{vmid}-*'")
    size_text = str(p["size"])
    mult = {"M": 1024**2, "G": 1024**3}.get(size_text[-1], 1024)
    size = int(size_text.rstrip("MG")) * mult
    with b.store.lock:
        volid = b.alloc_volume(node.name, st.id, vmid, size, name=name,
                               fmt=str(p.get("format", "raw")))
    b.store.commit()
    return volid


@route("GET", "/nodes/{node}/hardware/pci")
def hardware_pci(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    node = b.node(p["node"])
    blacklist = [c.strip().lower() for c in
                 str(p.get("pci-class-blacklist", "05;06;0b")).split(";") if c.strip()]
    verbose = int(p.get("verbose", 1))
    out = []
    for dev in node.pci:
        klass = dev.klass.lower().removeprefix("0x")
        if any(klass.startswith(prefix) for prefix in blacklist):
            continue
        entry: dict[str, Any] = {
            "id": dev.id, "class": dev.klass, "vendor": dev.vendor, "device": dev.device,
            "iommugroup": dev.iommugroup if node.iommu else -1,
        }
        if dev.subsystem_vendor:
            entry["subsystem_vendor"] = dev.subsystem_vendor
            entry["subsystem_device"] = dev.subsystem_device
        if dev.mdev:
            entry["mdev"] = 1
        if verbose:
            entry.update(dev.names)
        out.append(entry)
    return out
