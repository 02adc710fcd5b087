"""``/nodes/{node}/qemu`` (list, create) and ``/nodes/{node}/qemu/{vmid}`` (index, delete), with
the VM helpers the other qemu path families share. The families live beside it:
:mod:`~pvesim.api.qemu_config`, :mod:`~pvesim.api.qemu_clone`, :mod:`~pvesim.api.qemu_disk`,
:mod:`~pvesim.api.qemu_cloudinit`, :mod:`~pvesim.api.qemu_agent`, :mod:`~pvesim.api.qemu_migrate`,
:mod:`~pvesim.api.qemu_power`."""

from __future__ import annotations

import re
import time
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_cloudinit import regenerate_cloudinit
from pvesim.api.qemu_common import (
    _vmid,
    apply_pending,
    check_lock,
    create_disk,
    prepare_options,
)
from pvesim.apierror import TaskFailure, die, param_error, perm_error
from pvesim.auth import Caller
from pvesim.backend import Backend, vm_status_entry
from pvesim.pci import start_checks
from pvesim.tasks import TaskContext

_CREATE_CONTROL = {"node", "vmid", "start", "storage", "pool", "force", "archive", "unique",
                   "live-restore", "bwlimit", "import-working-storage"}




@route("GET", "/nodes/{node}/qemu")
def qemu_list(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    node = b.node(p["node"]).name
    out = []
    with b.store.lock:
        for vmid, vm in sorted(b.data["vms"].items(), key=lambda kv: int(kv[0])):
            if vm["node"] != node or not b.can(caller, f"/vms/{vmid}", ["VM.Audit"]):
                continue
            out.append(vm_status_entry(b, vmid, vm))
    return out


@route("GET", "/nodes/{node}/qemu/{vmid}")
def qemu_index(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, str]]:
    with b.store.lock:
        b.vm(p["node"], _vmid(p))
    return [{"subdir": s} for s in (
        "config", "pending", "cloudinit", "status", "unlink", "vncproxy", "termproxy", "migrate",
        "resize", "move", "rrd", "rrddata", "monitor", "agent", "snapshot", "spiceproxy",
        "sendkey", "firewall", "mtunnel", "remote_migrate")]


def _default_boot(conf: dict[str, str]) -> str:
    boot_rank = {"scsi": 0, "virtio": 1, "sata": 2, "ide": 3}
    disks = [k for k in sorted(conf, key=lambda k: (boot_rank.get(re.sub(r"\d+$", "", k), 9),
                                                     _drive_sort(k))) if vmconfig.is_drive(k)
             and k not in ("efidisk0", "tpmstate0")]
    order = [k for k in disks if not vmconfig.is_cdrom(conf[k])][:1]
    order += [k for k in disks if vmconfig.is_cdrom(conf[k]) and "cloudinit" not in conf[k]]
    order += [k for k in sorted(conf) if re.fullmatch(r"net\d+", k)][:1]
    return "order=" + ";".join(order)


def _drive_sort(key: str) -> tuple[int, str, int]:
    m = re.fullmatch(r"([a-z]+)(\d+)", key)
    rank = {"ide": 0, "sata": 1, "scsi": 2, "virtio": 3, "efidisk": 4, "tpmstate": 5}
    if not m:
        return (9, key, 0)
    return (rank.get(m.group(1), 8), m.group(1), int(m.group(2)))


@route("POST", "/nodes/{node}/qemu")
def qemu_create(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    if p.get("pool"):
        raise perm_error(f"pool '{p['pool']}' does not exist")
    if p.get("archive"):
        raise die("restore from archive is not supported by pvesim")
    b.check_perm(caller, f"/vms/{vmid}", ["VM.Allocate"])
    opts = {k: v for k, v in p.items() if k not in _CREATE_CONTROL}
    conf = prepare_options(b, caller, node, vmid, opts, {})
    start = bool(p.get("start"))
    with b.store.lock:
        existing = b.data["vms"].get(str(vmid))
        if existing is not None:
            raise die(f"unable to create VM {vmid} - VM {vmid} already exists on node "
                      f"'{existing['node']}'")
        b.data["vms"][str(vmid)] = {"node": node, "conf": {"lock": "create"}, "pending": {},
                                    "pending_delete": {}, "status": "stopped"}

        def worker(ctx: TaskContext) -> None:
            allocated: list[str] = []
            with b.store.lock:
                vm = b.data["vms"].get(str(vmid))
                if vm is None:
                    raise TaskFailure(f"unable to create VM {vmid} - config vanished")
                final: dict[str, str] = {}
                try:
                    for key, value in sorted(conf.items(), key=lambda kv: _drive_sort(kv[0])):
                        if vmconfig.is_drive(key):
                            final[key] = create_disk(b, node, vmid, key, value, ctx)
                            vol = vmconfig.volume_of(final[key])
                            if vol and vol != vmconfig.volume_of(value):
                                allocated.append(vol)
                        else:
                            final[key] = value
                except Exception as exc:
                    for vol in allocated:
                        b.free_volume(node, vol)
                    del b.data["vms"][str(vmid)]
                    msg = getattr(exc, "message", str(exc)).rstrip("\n")
                    raise TaskFailure(f"unable to create VM {vmid} - {msg}") from exc
                final.setdefault("smbios1", f"uuid={b.new_uuid()}")
                if final.get("vmgenid", "1") != "0":
                    final.setdefault("vmgenid", b.new_uuid())
                final["meta"] = f"creation-qemu=9.2.0,ctime={int(time.time())}"
                final.setdefault("boot", _default_boot(final))
                vm["conf"] = final
            if start:
                ctx.log("Execute autostart")
                try:
                    _start_in_task(b, node, vmid, ctx, skiplock=False)
                except TaskFailure as exc:     # PVE: `warn $@ if $@` after autostart
                    ctx.warn(exc.message)

        def on_fail() -> None:
            _drop_placeholder(b, node, vmid, "create")

        upid = b.tasks.start(node, "qmcreate", str(vmid), caller.authid, worker,
                             on_fail=on_fail)
    b.store.commit()
    return upid


def _drop_placeholder(b: Backend, node: str, vmid: int, lock: str) -> None:
    """A failed create/clone unlinks the new config and frees its new volumes (PVE does)."""
    vm = b.data["vms"].get(str(vmid))
    if vm is None or vm["node"] != node or vm["conf"].get("lock") != lock:
        return
    del b.data["vms"][str(vmid)]
    for vols in b.data["volumes"].get(node, {}).values():
        for name in [n for n, v in vols.items() if v.get("vmid") == vmid]:
            del vols[name]


def _start_in_task(b: Backend, node: str, vmid: int, ctx: TaskContext, *, skiplock: bool) -> None:
    with b.store.lock:
        vm = b.vm(node, vmid)
        conf = vm["conf"]
        if not skiplock and "lock" in conf:
            raise TaskFailure(f"VM is locked ({conf['lock']})")
        if vm["status"] == "running":
            raise TaskFailure(f"VM {vmid} already running")
        if vm.get("pending") or vm.get("pending_delete"):
            apply_pending(b, vm, vmid, ctx)
        reserved = start_checks(b, node, vmid, vm["conf"], ctx.log)
        regenerate_cloudinit(vm)
        vm["status"] = "running"
        vm["started"] = time.time()
        vm["pci"] = reserved


# ---------------------------------------------------------------------------- delete
@route("DELETE", "/nodes/{node}/qemu/{vmid}")
def qemu_delete(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    skiplock = bool(p.get("skiplock"))
    if skiplock and not caller.is_root:
        raise param_error({"skiplock": "Only root may use this option."})
    destroy_unref = bool(p.get("destroy-unreferenced-disks"))
    purge = bool(p.get("purge"))
    with b.vm_flock(vmid), b.store.lock:
        vm = b.vm(node, vmid)
        conf = vm["conf"]
        if not skiplock:
            check_lock(conf)
        if conf.get("protection") == "1":
            raise die(f"can't remove VM {vmid} - protection mode enabled")
        if vm["status"] == "running":
            raise die(f"VM {vmid} is running - destroy failed")

        def worker(ctx: TaskContext) -> None:
            with b.store.lock:
                cur = b.data["vms"].get(str(vmid))
                if cur is None:
                    return
                referenced = set()
                for key, value in list(cur["conf"].items()) + list(cur.get("pending", {}).items()):
                    if vmconfig.is_drive(key) or key.startswith("unused"):
                        volid = vmconfig.volume_of(value) if vmconfig.is_drive(key) else value
                        if volid and ":" in volid:
                            referenced.add(volid)
                for volid in sorted(referenced):
                    name = volid.split(":", 1)[1].split("/")[-1]
                    if not name.endswith(f"-{vmid}-cloudinit") and \
                            not re.match(rf"^(vm|base)-{vmid}-", name):
                        continue
                    b.free_volume(node, volid)
                    ctx.log(f"  Logical volume \"{name}\" successfully removed.")
                if destroy_unref:
                    for vols in b.data["volumes"].get(node, {}).values():
                        for name in sorted(vols):
                            if vols[name].get("vmid") == vmid:
                                del vols[name]
                                ctx.log(f"  Logical volume \"{name}\" successfully removed.")
                if purge:
                    ctx.log(f"purging VM {vmid} from related configurations..")
                del b.data["vms"][str(vmid)]

        def before() -> None:
            conf["lock"] = "destroyed"

        upid = b.tasks.start(node, "qmdestroy", str(vmid), caller.authid, worker, before=before)
    b.store.commit()
    return upid
