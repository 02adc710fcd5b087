"""qemu endpoints: list, create, clone, config GET/PUT/POST, pending, resize, template, delete,
cloud-init dump, guest agent and migrate."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_common import (
    apply_pending,
    check_hostpci_perm,
    check_lock,
    create_disk,
    describe_update,
    hotplug_pending,
    option_priv,
    output_config,
    prepare_options,
    wait_for_task,
)
from pvesim.apierror import TaskFailure, die, param_error, perm_error
from pvesim.auth import Caller
from pvesim.backend import Backend, vm_status_entry
from pvesim.formats import urldecode_sshkeys
from pvesim.pci import mapping_entries_for_node, start_checks
from pvesim.tasks import TaskContext

_CREATE_CONTROL = {"node", "vmid", "start", "storage", "pool", "force", "archive", "unique",
                   "live-restore", "bwlimit", "import-working-storage"}
_UPDATE_CONTROL = {"node", "vmid", "delete", "revert", "digest", "skiplock", "force",
                   "background_delay"}


def _vmid(p: dict[str, Any]) -> int:
    return int(p["vmid"])


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


# ---------------------------------------------------------------------------- config
@route("GET", "/nodes/{node}/qemu/{vmid}/config")
def config_get(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("snapshot"):
        raise die(f"snapshot '{p['snapshot']}' does not exist")
    with b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        conf = dict(vm["conf"]) if p.get("current") else vmconfig.merged_config(vm)
        out = output_config(conf)
        out["digest"] = vmconfig.digest(vm)
    return out


@route("GET", "/nodes/{node}/qemu/{vmid}/pending")
def pending_get(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    with b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        conf, pending, deletes = vm["conf"], vm.get("pending", {}), vm.get("pending_delete", {})
        out = []
        for key in sorted(set(conf) | set(pending) | set(deletes)):
            item: dict[str, Any] = {"key": key}
            if key in conf:
                item["value"] = output_config({key: conf[key]})[key]
            if key in pending:
                item["pending"] = output_config({key: pending[key]})[key]
            if key in deletes:
                item["delete"] = 2 if deletes[key] else 1
            out.append(item)
    return out


def _split_list(value: Any) -> list[str]:
    return [x for x in re.split(r"[,;\s]+", str(value or "")) if x]


def update_vm(b: Backend, caller: Caller, p: dict[str, Any], *, sync: bool) -> str | None:
    """qemu-server ``$update_vm_api`` for PUT (sync) and POST (async) config."""
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    opts = {k: v for k, v in p.items() if k not in _UPDATE_CONTROL}
    deletes = _split_list(p.get("delete"))
    reverts = _split_list(p.get("revert"))
    skiplock = bool(p.get("skiplock"))
    force = bool(p.get("force"))
    if skiplock and not caller.is_root:
        raise param_error({"skiplock": "Only root may use this option."})
    if not deletes and not reverts and not opts:
        raise die("no options specified")
    for key in deletes:
        if vmconfig.option_schema(key) is None:
            raise param_error({"delete": f"unknown option '{key}'"})
        if key in opts:
            raise param_error(
                {"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})
    for key in reverts:
        if key in opts:
            raise param_error(
                {"revert": f"you can't use '-{key}' and -revert {key}' at the same time"})
        if key in deletes:
            raise param_error(
                {"revert": f"you can't use '-delete {key}' and '-revert {key}' at the same time"})
    with b.store.lock:
        old = dict(b.vm(node, vmid)["conf"])
    for key in deletes:
        b.check_perm(caller, f"/vms/{vmid}", [option_priv(key, old.get(key))])
        if key.startswith("hostpci") and key in old:
            check_hostpci_perm(b, caller, vmid, key, old[key])
    values = prepare_options(b, caller, node, vmid, opts, old)
    warnings: list[str] = []
    with b.vm_flock(vmid), b.store.lock:
        vm = b.vm(node, vmid)
        conf = vm["conf"]
        if p.get("digest") and p["digest"] != vmconfig.digest(vm):
            raise die("checksum mismatch (file change by other user?)")
        if not skiplock:
            check_lock(conf)
        merged = vmconfig.merged_config(vm)
        merged.update(values)
        if "balloon" in merged and int(merged["balloon"]) > vmconfig.memory_mib(merged):
            raise die("balloon value too large (must be smaller than assigned memory)")
        pending = vm.setdefault("pending", {})
        pending_delete = vm.setdefault("pending_delete", {})
        for key in deletes:
            if key not in conf and key not in pending:
                warnings.append(f"cannot delete '{key}' - not set in current configuration!")
                continue
            pending.pop(key, None)
            if key in conf:
                pending_delete[key] = 1 if force else 0
        for key, value in values.items():
            pending_delete.pop(key, None)
            if conf.get(key) == value:
                pending.pop(key, None)
            else:
                pending[key] = value
        for key in reverts:
            pending.pop(key, None)
            pending_delete.pop(key, None)

        def apply(ctx: TaskContext | None) -> None:
            with b.store.lock:
                cur = b.vm(node, vmid)
                if cur["status"] == "running":
                    hotplug_pending(b, cur, vmid, ctx)
                else:
                    apply_pending(b, cur, vmid, ctx)

        if sync:
            apply(None)
            upid = None
        else:
            line = describe_update(vmid, values, deletes)

            def worker(ctx: TaskContext) -> None:
                ctx.log(line)
                for w in warnings:
                    ctx.warn(w)
                apply(ctx)

            upid = b.tasks.start(node, "qmconfig", str(vmid), caller.authid, worker)
    b.store.commit()
    if upid is not None and p.get("background_delay"):
        task = wait_for_task(b, upid, float(p["background_delay"]))
        if task is not None:
            if task["exitstatus"] == "OK" or task["exitstatus"].startswith("WARNINGS"):
                return None
            raise die(f"failed to update VM {vmid}: {task['exitstatus']}")
    return upid


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
def config_put(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    update_vm(b, caller, p, sync=True)
    return None


@route("POST", "/nodes/{node}/qemu/{vmid}/config")
def config_post(b: Backend, caller: Caller, p: dict[str, Any]) -> str | None:
    return update_vm(b, caller, p, sync=False)


# ---------------------------------------------------------------------------- clone
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
    flock = b.acquire_flock(newid, timeout=1.0)   # held by the worker for the whole clone
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
                                 on_fail=on_fail, on_done=flock.release)
    except BaseException:
        flock.release()
        raise
    b.store.commit()
    return upid


def _clone_worker(b: Backend, ctx: TaskContext, node: str, vmid: int, target: str, newid: int,
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


# ---------------------------------------------------------------------------- resize / template
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


# ---------------------------------------------------------------------------- cloud-init
def _ipconfig(conf: dict[str, str], idx: int) -> dict[str, Any]:
    raw = conf.get(f"ipconfig{idx}")
    if not raw:
        return {}
    try:
        return vmconfig.parse_option(f"ipconfig{idx}", raw)
    except Exception:
        return {}


_CI_KEYS = ("cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver",
            "searchdomain", "sshkeys")


def cloudinit_values(conf: dict[str, str]) -> dict[str, str]:
    """The options that make up the cloud-init drive."""
    return {k: v for k, v in conf.items() if k in _CI_KEYS or re.fullmatch(r"ipconfig\d+", k)}


def regenerate_cloudinit(vm: dict[str, Any]) -> None:
    """Remember which values the cloud-init drive was generated from (start, PUT cloudinit)."""
    vm["cloudinit"] = cloudinit_values(vm["conf"])


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_pending(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    with b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        current = cloudinit_values(vmconfig.merged_config(vm))
        generated = dict(vm.get("cloudinit", {}))
    out = []
    for key in sorted(set(current) | set(generated)):
        item: dict[str, Any] = {"key": key}
        if key in generated:
            item["value"] = "**********" if key == "cipassword" else generated[key]
        if key in current and current[key] != generated.get(key):
            item["pending"] = "**********" if key == "cipassword" else current[key]
        if key in generated and key not in current:
            item["delete"] = 1
        out.append(item)
    return out


@route("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_regenerate(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    with b.vm_flock(_vmid(p)), b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        check_lock(vm["conf"])
        regenerate_cloudinit(vm)
    b.store.commit()
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump")
def cloudinit_dump(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(p["node"], vmid)
        conf = vmconfig.merged_config(vm)
    kind = p["type"]
    if kind == "meta":
        text = vmconfig.config_text(conf)
        return f"instance-id: {hashlib.sha1(text.encode()).hexdigest()}\n"
    if kind == "user":
        name = conf.get("name", f"VM{vmid}")
        lines = ["#cloud-config", f"hostname: {name}", "manage_etc_hosts: true", f"fqdn: {name}"]
        if conf.get("ciuser"):
            lines.append(f"user: {conf['ciuser']}")
        if conf.get("cipassword"):
            lines.append(f"password: {conf['cipassword']}")
        if conf.get("sshkeys"):
            lines.append("ssh_authorized_keys:")
            for key in urldecode_sshkeys(conf["sshkeys"]).splitlines():
                if key.strip():
                    lines.append(f"  - {key.strip()}")
        lines += ["chpasswd:", "  expire: False", "users:", "  - default",
                  f"package_upgrade: {'true' if conf.get('ciupgrade', '1') == '1' else 'false'}"]
        return "\n".join(lines) + "\n"
    lines = ["version: 1", "config:"]
    for key in sorted((k for k in conf if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        idx = int(key[3:])
        mac = (vmconfig.net_mac(conf[key]) or "").lower()
        lines += ["    - type: physical", f"      name: eth{idx}", f"      mac_address: '{mac}'",
                  "      subnets:"]
        ipc = _ipconfig(conf, idx)
        ip = ipc.get("ip", "dhcp")
        if ip == "dhcp":
            lines.append("      - type: dhcp4")
        else:
            iface = ipaddress.ip_interface(ip)
            lines += ["      - type: static", f"        address: '{iface.ip}'",
                      f"        netmask: '{iface.network.netmask}'"]
            if ipc.get("gw"):
                lines.append(f"        gateway: '{ipc['gw']}'")
        if ipc.get("ip6"):
            lines.append("      - type: dhcp6" if ipc["ip6"] in ("dhcp", "auto")
                         else f"      - type: static6\n        address: '{ipc['ip6']}'")
    if conf.get("nameserver") or conf.get("searchdomain"):
        lines.append("    - type: nameserver")
        if conf.get("nameserver"):
            lines.append("      address:")
            lines += [f"      - '{ns}'" for ns in conf["nameserver"].split()]
        if conf.get("searchdomain"):
            lines.append("      search:")
            lines += [f"      - '{sd}'" for sd in conf["searchdomain"].split()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- guest agent
def _agent_enabled(conf: dict[str, str]) -> bool:
    raw = conf.get("agent")
    if raw is None:
        return False
    try:
        return bool(int(vmconfig.parse_option("agent", raw).get("enabled", 0)))
    except Exception:
        return False


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces")
def agent_interfaces(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(p["node"], vmid)
        conf = dict(vm["conf"])
        running = vm["status"] == "running"
        started = float(vm.get("started", 0))
    if not _agent_enabled(conf):
        raise die("No QEMU guest agent configured")
    if not running:
        raise die(f"VM {vmid} is not running")
    if time.time() - started < b.durations.get("agent_boot", 0.0):
        raise die("QEMU guest agent is not running")
    result: list[dict[str, Any]] = [{
        "name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                         {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}],
        "statistics": {"rx-bytes": 0, "rx-packets": 0, "tx-bytes": 0, "tx-packets": 0,
                       "rx-errs": 0, "rx-dropped": 0, "tx-errs": 0, "tx-dropped": 0},
    }]
    for key in sorted((k for k in conf if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        idx = int(key[3:])
        ipc = _ipconfig(conf, idx)
        ip = ipc.get("ip", "dhcp")
        if ip == "dhcp":
            addr, prefix = f"10.{100 + idx}.{(vmid >> 8) & 255}.{vmid & 255 or 1}", 24
        else:
            iface = ipaddress.ip_interface(ip)
            addr, prefix = str(iface.ip), iface.network.prefixlen
        result.append({
            "name": f"eth{idx}", "hardware-address": (vmconfig.net_mac(conf[key]) or "").lower(),
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": addr, "prefix": prefix}],
            "statistics": {"rx-bytes": 4096, "rx-packets": 32, "tx-bytes": 2048,
                           "tx-packets": 16, "rx-errs": 0, "rx-dropped": 0, "tx-errs": 0,
                           "tx-dropped": 0},
        })
    return {"result": result}


# ---------------------------------------------------------------------------- migrate
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
