"""``/nodes/{node}/qemu/{vmid}/config`` (GET, PUT, POST) and ``…/pending`` (PVE's
``PVE/API2/Qemu.pm`` update_vm and vm_pending)."""

from __future__ import annotations

import re
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_common import (
    _vmid,
    apply_pending,
    check_hostpci_perm,
    check_lock,
    describe_update,
    hotplug_pending,
    option_priv,
    output_config,
    prepare_options,
    wait_for_task,
)
from pvesim.apierror import die, param_error
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.tasks import TaskContext

_UPDATE_CONTROL = {"node", "vmid", "delete", "revert", "digest", "skiplock", "force",
                   "background_delay"}


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
