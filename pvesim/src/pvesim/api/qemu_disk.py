"""``PUT /nodes/{node}/qemu/{vmid}/resize`` and ``POST …/template``."""

from __future__ import annotations

import re
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
from pvesim.tasks import TaskContext


@route("PUT", "/nodes/{node}/qemu/{vmid}/resize")
def qemu_resize(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    skiplock = bool(p.get("skiplock"))
    if skiplock and not caller.is_root:
        raise param_error({"skiplock": "Only root may use this option."})
    disk, size_text, digest = str(p["disk"]), str(p["size"]), p.get("digest")
    with b.store.lock:
        b.vm(node, vmid)

    def worker(ctx: TaskContext) -> None:
        with b.vm_flock(vmid), b.store.lock:
            vm = b.vm(node, vmid)
            conf = vm["conf"]
            if digest and digest != vmconfig.digest(vm):
                raise TaskFailure("checksum mismatch (file change by other user?)")
            if not skiplock and "lock" in conf:
                raise TaskFailure(f"VM is locked ({conf['lock']})")
            if disk not in conf:
                raise TaskFailure(f"disk '{disk}' does not exist")
            value = conf[disk]
            if vmconfig.is_cdrom(value):
                raise TaskFailure("you can't resize a cdrom")
            volid = vmconfig.volume_of(value) or ""
            vol = b.volume(node, volid)
            cur = int(vol["size"]) if vol else 0
            if size_text.startswith("+"):
                new = cur + vmconfig.size_bytes(size_text[1:])
            else:
                new = vmconfig.size_bytes(size_text)
            if new < cur:
                raise TaskFailure("shrinking disks is not supported")
            if new == cur:
                return
            sid = volid.split(":", 1)[0]
            st = b.storage(node, sid)
            if b.storage_used(node, sid) - cur + new > st.size:
                raise TaskFailure(f"{sid}: not enough free space to resize '{volid}'")
            if vol is not None:
                vol["size"] = new
            conf[disk] = re.sub(r"(^|,)size=[^,]+", "", value) + \
                f",size={vmconfig.format_size(new)}"
            ctx.log(f"  Size of logical volume pve/{volid.split(':')[-1].split('/')[-1]} changed "
                    f"from {vmconfig.format_size(cur)} to {vmconfig.format_size(new)}.")

    upid = b.tasks.start(node, "resize", str(vmid), caller.authid, worker)
    b.store.commit()
    return upid


@route("POST", "/nodes/{node}/qemu/{vmid}/template")
def qemu_template(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    with b.vm_flock(vmid), b.store.lock:
        vm = b.vm(node, vmid)
        conf = vm["conf"]
        check_lock(conf)
        if conf.get("template") == "1" and not p.get("disk"):
            raise die("you can't convert a template to a template")
        if vm["status"] == "running":
            raise die("you can't convert a VM to template if VM is running")
        conf["template"] = "1"

        def worker(ctx: TaskContext) -> None:
            with b.store.lock:
                cur = b.vm(node, vmid)
                for key in sorted(cur["conf"]):
                    value = cur["conf"][key]
                    if not vmconfig.is_drive(key) or vmconfig.is_cdrom(value):
                        continue
                    if p.get("disk") and key != p["disk"]:
                        continue
                    volid = vmconfig.volume_of(value) or ""
                    sid, _, name = volid.partition(":")
                    if "/" in name or not name.startswith("vm-"):
                        continue
                    base = "base-" + name[3:]
                    vols = b._volumes(node, sid)
                    if name in vols:
                        vols[base] = vols.pop(name)
                    ctx.log(f"  Renamed \"{name}\" to \"{base}\" in volume group \"pve\"")
                    cur["conf"][key] = value.replace(volid, f"{sid}:{base}", 1)

        upid = b.tasks.start(node, "qmtemplate", str(vmid), caller.authid, worker)
    b.store.commit()
    return upid
