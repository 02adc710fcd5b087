"""qemu power endpoints: status index/current, start, stop, shutdown, reboot."""

from __future__ import annotations

import time
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu import _start_in_task
from pvesim.api.qemu_agent import _agent_enabled
from pvesim.api.qemu_cloudinit import regenerate_cloudinit
from pvesim.api.qemu_common import _vmid, apply_pending
from pvesim.apierror import TaskFailure, die, param_error
from pvesim.auth import Caller
from pvesim.backend import Backend, vm_status_entry
from pvesim.pci import start_checks
from pvesim.tasks import TaskContext


def _skiplock(caller: Caller, p: dict[str, Any]) -> bool:
    skiplock = bool(p.get("skiplock"))
    if skiplock and not caller.is_root:
        raise param_error({"skiplock": "Only root may use this option."})
    return skiplock


@route("GET", "/nodes/{node}/qemu/{vmid}/status")
def status_index(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, str]]:
    with b.store.lock:
        b.vm(p["node"], _vmid(p))
    return [{"subdir": s} for s in ("current", "start", "stop", "reset", "shutdown", "suspend",
                                     "reboot")]


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
def status_current(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(p["node"], vmid)
        out = vm_status_entry(b, str(vmid), vm)
        conf = vm["conf"]
    out["qmpstatus"] = out["status"]
    out["ha"] = {"managed": 0}
    if _agent_enabled(conf):
        out["agent"] = 1
    if vmconfig.memory_mib(conf):
        out["balloon"] = out["maxmem"]
    out["serial"] = 1 if any(k.startswith("serial") for k in conf) else 0
    if out["status"] == "running":
        out["running-machine"] = "pc-q35-9.2+pve1" if "q35" in conf.get("machine", "") \
            else "pc-i440fx-9.2+pve1"
        out["running-qemu"] = "9.2.0"
        out["nics"] = {f"tap{vmid}i{k[3:]}": {"netin": 0, "netout": 0} for k in conf
                       if k.startswith("net")}
    return out


@route("POST", "/nodes/{node}/qemu/{vmid}/status/start")
def vm_start(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    skiplock = _skiplock(caller, p)
    for key in ("migratedfrom", "stateuri", "targetstorage", "migration_type",
                "migration_network", "force-cpu"):
        if key in p and not caller.is_root:
            raise param_error({key: "Only root may use this option."})
    with b.store.lock:
        b.vm(node, vmid)

    def worker(ctx: TaskContext) -> None:
        with b.vm_flock(vmid):
            _start_in_task(b, node, vmid, ctx, skiplock=skiplock)

    upid = b.tasks.start(node, "qmstart", str(vmid), caller.authid, worker)
    b.store.commit()
    return upid


def _stop(b: Backend, node: str, vmid: int, skiplock: bool) -> None:
    with b.store.lock:
        vm = b.vm(node, vmid)
        if not skiplock and "lock" in vm["conf"]:
            raise TaskFailure(f"VM is locked ({vm['conf']['lock']})")
        vm["status"] = "stopped"
        vm.pop("started", None)
        vm["pci"] = []


def _stop_task(b: Backend, caller: Caller, node: str, vmid: int, skiplock: bool,
               kind: str) -> str:
    """A stop or shutdown task: the guest is simulated, so both end in the stopped state."""
    with b.store.lock:
        b.vm(node, vmid)

    def worker(ctx: TaskContext) -> None:
        with b.vm_flock(vmid):
            _stop(b, node, vmid, skiplock)

    upid = b.tasks.start(node, kind, str(vmid), caller.authid, worker)
    b.store.commit()
    return upid


@route("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
def vm_stop(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    skiplock = _skiplock(caller, p)
    if p.get("keepActive") and not caller.is_root:
        raise param_error({"keepActive": "Only root may use this option."})
    return _stop_task(b, caller, node, vmid, skiplock, "qmstop")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown")
def vm_shutdown(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    skiplock = _skiplock(caller, p)
    return _stop_task(b, caller, node, vmid, skiplock, "qmshutdown")


@route("POST", "/nodes/{node}/qemu/{vmid}/status/reboot")
def vm_reboot(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    node = b.node(p["node"]).name
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(node, vmid)
        if vm["status"] != "running":
            raise die(f"VM {vmid} not running")

    def worker(ctx: TaskContext) -> None:
        with b.vm_flock(vmid), b.store.lock:
            cur = b.vm(node, vmid)
            if "lock" in cur["conf"]:
                raise TaskFailure(f"VM is locked ({cur['conf']['lock']})")
            cur["status"] = "stopped"
            cur["pci"] = []
            apply_pending(b, cur, vmid, ctx)
            reserved = start_checks(b, node, vmid, cur["conf"], ctx.log)
            regenerate_cloudinit(cur)
            cur["status"] = "running"
            cur["started"] = time.time()
            cur["pci"] = reserved

    upid = b.tasks.start(node, "qmreboot", str(vmid), caller.authid, worker)
    b.store.commit()
    return upid
