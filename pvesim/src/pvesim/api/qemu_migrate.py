"""``/nodes/{node}/qemu/{vmid}/migrate`` (POST and the GET preconditions)."""

from __future__ import annotations

from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_common import (
    _vmid,
    check_lock,
)
from pvesim.apierror import TaskFailure, die, param_error
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.pci import mapping_entries_for_node, start_checks
from pvesim.tasks import TaskContext


@route("POST", "/nodes/{node}/qemu/{vmid}/migrate")
def qemu_migrate(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    target = str(p["target"])
    online = bool(p.get("online"))
    force = bool(p.get("force"))
    if force and not caller.is_root:
        raise param_error({"force": "Only root may use this option."})
    if target == node:
        raise die("target is local node.")
    if target not in b.hw.nodes:
        raise die(f"no such cluster node '{target}'")
    with b.store.lock:
        vm = b.vm(node, vmid)
        conf = dict(vm["conf"])
        running = vm["status"] == "running"
    check_lock(conf)
    if running and not online:
        raise die("can't migrate running VM without --online")
    raw: list[str] = []
    mapped: list[tuple[str, str]] = []
    for key in vmconfig.hostpci_keys(conf):
        opt = vmconfig.parse_option(key, conf[key])
        if opt.get("mapping"):
            mapped.append((key, str(opt["mapping"])))
        else:
            raw.append(key)
    with b.store.lock:
        missing = [k for k, m in mapped if not mapping_entries_for_node(b, m, target)]
        not_live = [f"{k}:{m}" for k, m in mapped
                    if not int(b.data["mappings"]["pci"].get(m, {}).get(
                        "live-migration-capable", 0))]
    if missing:
        raise die(f"can't migrate to '{target}': missing mapped devices {', '.join(missing)}")
    if running and not_live:
        raise die("can't live migrate running VM which uses following mapped devices: "
                  + ", ".join(not_live))

    def worker(ctx: TaskContext) -> None:
        ctx.log(f"starting migration of VM {vmid} to node '{target}'")
        if raw and (running or not force):
            raise TaskFailure(f"can't migrate VM which uses local devices: {', '.join(raw)}")
        with b.vm_flock(vmid), b.store.lock:
            cur = b.vm(node, vmid)
            for key, value in cur["conf"].items():
                if not (vmconfig.is_drive(key) or key.startswith("unused")):
                    continue
                volid = vmconfig.volume_of(value) if vmconfig.is_drive(key) else value
                if not volid or ":" not in volid:
                    continue
                sid, _, name = volid.partition(":")
                vol = b._volumes(node, sid).pop(name.split("/")[-1], None)
                if vol is not None:
                    b._volumes(target, sid)[name.split("/")[-1]] = vol
                    ctx.log(f"copying local disk '{volid}' to node '{target}'")
            cur["node"] = target
            if running:
                cur["pci"] = start_checks(b, target, vmid, cur["conf"], ctx.log)
        ctx.log("migration finished successfully")

    upid = b.tasks.start(node, "qmigrate", str(vmid), caller.authid, worker)
    b.store.commit()
    return upid


@route("GET", "/nodes/{node}/qemu/{vmid}/migrate")
def qemu_migrate_preconditions(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(node, vmid)
        conf = dict(vm["conf"])
        running = vm["status"] == "running"
        local_res: list[tuple[str, Any]] = []
        mapped: list[tuple[str, Any]] = []
        for key in vmconfig.hostpci_keys(conf):
            opt = vmconfig.parse_option(key, conf[key])
            (mapped if opt.get("mapping") else local_res).append((key, opt.get("mapping")))
        allowed: list[str] = []
        not_allowed: dict[str, Any] = {}
        for other in sorted(b.hw.nodes):
            if other == node:
                continue
            missing = [k for k, m in mapped if not mapping_entries_for_node(b, str(m), other)]
            if missing:
                not_allowed[other] = {"unavailable-resources": missing}
            else:
                allowed.append(other)
        disks = []
        for key in sorted(conf):
            if not vmconfig.is_drive(key) or (vmconfig.is_cdrom(conf[key]) and \
                    "cloudinit" not in conf[key]):
                continue
            volid = vmconfig.volume_of(conf[key]) or ""
            vol = b.volume(node, volid)
            if vol is not None:
                disks.append({"volid": volid, "size": vol["size"], "drivename": key,
                              "referenced_in_config": 1})
    out: dict[str, Any] = {
        "running": int(running), "allowed_nodes": allowed, "not_allowed_nodes": not_allowed,
        "local_disks": disks, "local_resources": [k for k, _ in local_res],
        "mapped-resources": [k for k, _ in mapped],
        "mapped-resource-info": {k: {"name": m} for k, m in mapped},
    }
    if p.get("target"):
        out["target"] = p["target"]
    return out
