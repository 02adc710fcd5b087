"""``POST /nodes/{node}/qemu/{vmid}/clone``: placeholder config, shared flock on a template
source, storage allocation locks, full and linked clones."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu import _drive_sort, _drop_placeholder
from pvesim.api.qemu_common import (
    _vmid,
    check_lock,
)
from pvesim.apierror import ApiError, TaskFailure, die, perm_error
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.tasks import TaskContext


@route("POST", "/nodes/{node}/qemu/{vmid}/clone")
def qemu_clone(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    newid = int(p["newid"])
    target = p.get("target") or node
    if p.get("pool"):
        raise perm_error(f"pool '{p['pool']}' does not exist")
    with b.store.lock:
        src = b.vm(node, vmid)
        conf = dict(src["conf"])
    is_template = conf.get("template") == "1"
    full = bool(p["full"]) if "full" in p else not is_template
    if p.get("storage") and not full:
        raise die("parameter 'storage' not allowed for linked clones")
    if p.get("format") and not full:
        raise die("parameter 'format' not allowed for linked clones")
    if p.get("snapname"):
        raise die(f"snapshot '{p['snapname']}' does not exist")
    check_lock(conf)
    if target != node:
        b.node(target)
        if any(vmconfig.is_drive(k) and not vmconfig.is_cdrom(conf[k]) for k in conf):
            raise die(f"can't clone VM to node '{target}' (VM uses local storage)")
    if p.get("storage"):
        st = b.storage(target, p["storage"])
        b.check_perm(caller, f"/storage/{st.id}", ["Datastore.AllocateSpace"])
    for key in vmconfig.hostpci_keys(conf):
        m = re.search(r"(?:^|,)mapping=([^,]+)", conf[key])
        if m:
            b.check_perm(caller, f"/mapping/pci/{m.group(1)}", ["Mapping.Use"])
    # the source's flock, shared (PVE: lock_config_shared for a template; a full lock for a VM)
    # and the target's flock are held by the worker for the whole clone
    release_src = (b.acquire_flock_shared(vmid) if is_template
                   else b.acquire_flock(vmid).release)
    try:
        flock = b.acquire_flock(newid, timeout=1.0)
    except BaseException:
        release_src()
        raise

    def release() -> None:
        flock.release()
        release_src()

    try:
        with b.store.lock:
            if str(newid) in b.data["vms"]:
                raise die(f"unable to create VM {newid}: config file already exists")
            b.data["vms"][str(newid)] = {"node": target, "conf": {"lock": "clone"},
                                         "pending": {}, "pending_delete": {},
                                         "status": "stopped"}

            def worker(ctx: TaskContext) -> None:
                _clone_worker(b, ctx, node, vmid, target, newid, full, p)

            def on_fail() -> None:
                _drop_placeholder(b, target, newid, "clone")

            upid = b.tasks.start(node, "qmclone", str(vmid), caller.authid, worker,
                                 on_fail=on_fail, on_done=release)
    except BaseException:
        release()
        raise
    b.store.commit()
    return upid


def _clone_storages(b: Backend, node: str, vmid: int, p: dict[str, Any]) -> list[str]:
    """The target storages a clone allocates on (sorted: locks are taken in one order)."""
    with b.store.lock:
        src = b.data["vms"].get(str(vmid))
        conf = dict(src["conf"]) if src else {}
    sids = set()
    for key, value in conf.items():
        if key == "lock" or not vmconfig.is_drive(key):
            continue
        volid = vmconfig.volume_of(value)
        if volid and ":" in volid and (not vmconfig.is_cdrom(value) or "cloudinit" in value):
            sids.add(str(p.get("storage") or volid.split(":", 1)[0]))
    return sorted(sids)


def _clone_worker(b: Backend, ctx: TaskContext, node: str, vmid: int, target: str, newid: int,
                  full: bool, p: dict[str, Any]) -> None:
    # the storages' allocation locks (PVE: cfs-lock 'storage-<id>', with a timeout)
    with contextlib.ExitStack() as held:
        for sid in _clone_storages(b, node, vmid, p):
            try:
                held.enter_context(b.storage_lock(target, sid))
            except ApiError as exc:
                with b.store.lock:
                    b.data["vms"].pop(str(newid), None)
                raise TaskFailure(f"clone failed: {exc.message.rstrip()}") from exc
        _clone_copy(b, ctx, node, vmid, target, newid, full, p)


def _clone_copy(b: Backend, ctx: TaskContext, node: str, vmid: int, target: str, newid: int,
                full: bool, p: dict[str, Any]) -> None:
    allocated: list[str] = []
    with b.store.lock:
        src = b.data["vms"].get(str(vmid))
        if src is None:
            del b.data["vms"][str(newid)]
            raise TaskFailure(f"clone failed: Configuration file 'nodes/{node}/qemu-server/"
                              f"{vmid}.conf' does not exist")
        for key in sorted(src.get("pending", {})) + sorted(src.get("pending_delete", {})):
            ctx.warn(f"found pending changes for '{key}', discarding for clone")
        conf = {k: v for k, v in src["conf"].items()
                if k not in ("template", "lock") and not k.startswith("unused")}
        try:
            for key in sorted(conf, key=_drive_sort):
                if not vmconfig.is_drive(key):
                    continue
                value = conf[key]
                volid = vmconfig.volume_of(value)
                if not volid or ":" not in volid or (vmconfig.is_cdrom(value) and \
                        "cloudinit" not in value):
                    continue
                sid = str(p.get("storage") or volid.split(":", 1)[0])
                rest = value.split(",", 1)[1] if "," in value else ""
                if "cloudinit" in volid:
                    name = f"vm-{newid}-cloudinit"
                    new = b.alloc_volume(target, sid, newid, 4 * 1024**2, name=name)
                    allocated.append(new)
                    conf[key] = f"{new},media=cdrom"
                    continue
                srcvol = b.volume(node, volid) or {"size": 0}
                kind = "full" if full else "linked"
                ctx.log(f"create {kind} clone of drive {key} ({volid})")
                if full:
                    new = b.alloc_volume(target, sid, newid, int(srcvol["size"]),
                                         fmt=str(p.get("format", "raw")))
                else:
                    base = volid.split(":", 1)[1].split("/")[-1]
                    if not base.startswith("base-"):
                        raise TaskFailure("clone_image only works on base images")
                    n = 0
                    while b.volume(target, f"{sid}:vm-{newid}-disk-{n}") is not None:
                        n += 1
                    name = f"vm-{newid}-disk-{n}"
                    b.alloc_volume(target, sid, newid, int(srcvol["size"]), name=name,
                                   parent=base)
                    new = f"{sid}:{base}/{name}"
                allocated.append(new)
                conf[key] = new + (f",{rest}" if rest else "")
        except Exception as exc:
            for vol in allocated:
                b.free_volume(target, vol)
            b.data["vms"].pop(str(newid), None)
            msg = getattr(exc, "message", str(exc)).rstrip("\n")
            raise TaskFailure(f"clone failed: {msg}") from exc
        for key in list(conf):
            if re.fullmatch(r"net\d+", key):
                conf[key] = re.sub(r"=([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})",
                                   f"={b.new_mac()}", conf[key], count=1)
        conf["smbios1"] = re.sub(r"uuid=[^,]+", f"uuid={b.new_uuid()}",
                                 conf.get("smbios1", "uuid=x"))
        if "vmgenid" in conf and conf["vmgenid"] != "0":
            conf["vmgenid"] = b.new_uuid()
        conf["name"] = str(p.get("name") or f"Copy-of-VM-{src['conf'].get('name', vmid)}")
        if p.get("description"):
            conf["description"] = str(p["description"])
        b.data["vms"][str(newid)] = {"node": target, "conf": conf, "pending": {},
                                     "pending_delete": {}, "status": "stopped"}
