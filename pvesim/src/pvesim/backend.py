"""The simulator core: state, hardware, tasks, locks, faults and the helpers handlers share."""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pvesim import vmconfig
from pvesim.apierror import ApiError, PveSimError, die, perm_error
from pvesim.auth import Caller, has_priv
from pvesim.faults import FaultInjector
from pvesim.hardware import Hardware, Node, load_hardware
from pvesim.store import StateStore
from pvesim.tasks import TaskManager, normalise_durations

ROOT_TOKEN_ID = "skyrig"
PVE_VERSION = {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}
INTERRUPTED = "task interrupted: pvesim stopped while the task was running"
TEMPLATE_CONF = {
    "name": "debian12-cloud", "template": "1", "agent": "1", "scsihw": "virtio-scsi-single",
    "serial0": "socket", "vga": "serial0", "ostype": "l26", "cores": "1", "memory": "1024",
    "boot": "order=scsi0", "cpu": "x86-64-v2-AES",
}


class SharedLock:
    """A reader/writer flock: many shared holders or one exclusive holder, with timeouts."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    def acquire(self, timeout: float = -1) -> bool:
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._exclusive and not self._shared,
                                     None if timeout < 0 else timeout)
            if ok:
                self._exclusive = True
            return ok

    def release(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()

    def acquire_shared(self, timeout: float = -1) -> bool:
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._exclusive,
                                     None if timeout < 0 else timeout)
            if ok:
                self._shared += 1
            return ok

    def release_shared(self) -> None:
        with self._cond:
            self._shared = max(0, self._shared - 1)
            self._cond.notify_all()


class Backend:
    def __init__(
        self,
        state_path: Path,
        hardware: str | Path = "local",
        *,
        faults: FaultInjector | None = None,
        task_durations: dict[str, float] | None = None,
        seed: int = 0,
        lock_timeout: float = 10.0,
        auth_failure_delay: float = 0.0,
    ) -> None:
        self.hw: Hardware = load_hardware(hardware)
        self.store = StateStore(Path(state_path))
        self.faults = faults or FaultInjector(seed)
        self.durations = normalise_durations(task_durations)
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.lock_timeout = lock_timeout
        self.auth_failure_delay = auth_failure_delay
        self.stopping = threading.Event()
        self.tasks = TaskManager(self)
        self._flocks: dict[int, SharedLock] = {}
        self._flocks_guard = threading.Lock()
        self._storage_locks: dict[str, threading.Lock] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._counts_lock = threading.Lock()
        self.boot_time = time.time()
        self.resources_cache: dict[tuple[int, str, Any], tuple[float, bytes]] = {}
        self.resources_lock = threading.Lock()
        existed = self.store.load(self._initial_state)
        if existed:
            with self.store.lock:
                if self.tasks.fail_interrupted(INTERRUPTED):
                    pass
                self._ensure_nodes()
            self.store.commit()

    # ------------------------------------------------------------------ state set-up
    def _initial_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "secret": secrets.token_hex(32),
            "hardware": self.hw.source,
            "users": {
                "root@pam": {
                    "password": secrets.token_urlsafe(18),
                    "enable": 1,
                    "tokens": {ROOT_TOKEN_ID: {"secret": str(uuid.uuid4()), "privsep": 0}},
                },
            },
            "roles": {},
            "acl": [],
            "vms": {},
            "volumes": {},
            "mappings": {"pci": {}},
            "tasks": {},
            "counters": {},
        }
        self.store.data = state
        self._ensure_nodes()
        return state

    def _ensure_nodes(self) -> None:
        """Create storages and template VMs of nodes that are new to this state file."""
        data = self.store.data
        for node in self.hw.nodes.values():
            vols = data["volumes"].setdefault(node.name, {})
            for sid in node.storages:
                vols.setdefault(sid, {})
            tpl = node.template
            if tpl and str(tpl["vmid"]) not in data["vms"]:
                vmid = int(tpl["vmid"])
                storage = "local-lvm" if "local-lvm" in node.storages else next(iter(node.storages))
                self._volumes(node.name, storage)[f"base-{vmid}-disk-0"] = {
                    "size": 3 * 1024**3, "vmid": vmid, "format": "raw", "ctime": int(time.time()),
                }
                self._volumes(node.name, storage)[f"vm-{vmid}-cloudinit"] = {
                    "size": 4 * 1024**2, "vmid": vmid, "format": "raw", "ctime": int(time.time()),
                }
                conf = dict(TEMPLATE_CONF)
                conf["name"] = str(tpl.get("name", "debian12-cloud"))
                conf["scsi0"] = f"{storage}:base-{vmid}-disk-0,iothread=1,size=3G"
                conf["ide2"] = f"{storage}:vm-{vmid}-cloudinit,media=cdrom"
                conf["net0"] = f"virtio={self.new_mac()},bridge=vmbr0"
                conf["smbios1"] = f"uuid={self.new_uuid()}"
                conf["vmgenid"] = self.new_uuid()
                conf["meta"] = f"creation-qemu=9.2.0,ctime={int(time.time())}"
                data["vms"][str(vmid)] = {"node": node.name, "conf": conf, "pending": {},
                                          "pending_delete": {}, "status": "stopped"}

    # ------------------------------------------------------------------ small helpers
    def sleep(self, seconds: float) -> bool:
        """Sleep unless the simulator stops; False if it is stopping."""
        if seconds <= 0:
            return not self.stopping.is_set()
        return not self.stopping.wait(seconds)

    def new_mac(self) -> str:
        with self._rng_lock:
            tail = ":".join(f"{self.rng.randrange(256):02X}" for _ in range(3))
        return f"BC:24:11:{tail}"

    def new_uuid(self) -> str:
        with self._rng_lock:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @property
    def data(self) -> dict[str, Any]:
        return self.store.data

    def node(self, name: str) -> Node:
        node = self.hw.nodes.get(name)
        if node is None:
            raise die(f"unable to get IP for node '{name}' - node offline?")
        return node

    def node_offline(self, name: str) -> bool:
        """Whether ``name`` was taken offline (:meth:`set_node_online`); caller holds no lock."""
        with self.store.lock:
            return name in self.data.get("nodes_offline", [])

    def set_node_online(self, name: str, online: bool) -> list[str]:
        """Take a node offline (or back): a power or network loss of a cluster member.

        Offline, the node is ``online: 0`` in ``/cluster/status`` and ``status: offline`` in
        ``/nodes`` and ``/cluster/resources``, and every request proxied to it answers 595 ``No
        route to host``, as pveproxy does for an unreachable node. Its VMs keep their recorded
        state. Returns the offline node names, sorted; raises :class:`PveSimError` (exit 2) for
        an unknown node.
        """
        if name not in self.hw.nodes:
            raise PveSimError(f"no node {name!r} in this simulator",
                              hint=f"nodes: {', '.join(sorted(self.hw.nodes))}", exit_code=2)
        with self.store.lock:
            down = set(self.data.get("nodes_offline", []))
            down = down - {name} if online else down | {name}
            self.data["nodes_offline"] = sorted(down)
            self.store.commit()
            return list(self.data["nodes_offline"])

    def vm(self, node: str, vmid: int | str) -> dict[str, Any]:
        vm = self.data["vms"].get(str(vmid))
        if vm is None or vm["node"] != node:
            raise die(f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
        return vm  # type: ignore[no-any-return]

    def _volumes(self, node: str, storage: str) -> dict[str, Any]:
        vols: dict[str, Any] = self.data["volumes"].setdefault(node, {}).setdefault(storage, {})
        return vols

    def storage(self, node: str, sid: str) -> Any:
        st = self.node(node).storages.get(sid)
        if st is None:
            raise die(f"storage '{sid}' does not exist")
        return st

    def storage_used(self, node: str, sid: str) -> int:
        return sum(int(v["size"]) for v in self._volumes(node, sid).values())

    def alloc_volume(self, node: str, sid: str, vmid: int, size: int, *, name: str | None = None,
                     fmt: str = "raw", parent: str | None = None) -> str:
        st = self.storage(node, sid)
        vols = self._volumes(node, sid)
        if name is None:
            n = 0
            while f"vm-{vmid}-disk-{n}" in vols or f"base-{vmid}-disk-{n}" in vols:
                n += 1
            name = f"vm-{vmid}-disk-{n}"
        if name in vols:
            raise die(f"volume '{sid}:{name}' already exists")
        if self.storage_used(node, sid) + size > st.size:
            raise die(f"{sid}: not enough free space to allocate {size} bytes for '{name}'")
        vols[name] = {"size": size, "vmid": vmid, "format": fmt, "ctime": int(time.time())}
        if parent:
            vols[name]["parent"] = parent
        return f"{sid}:{name}"

    def free_volume(self, node: str, volid: str) -> None:
        sid, _, name = volid.partition(":")
        name = name.split("/")[-1]
        self._volumes(node, sid).pop(name, None)

    def volume(self, node: str, volid: str) -> dict[str, Any] | None:
        sid, _, name = volid.partition(":")
        if name.startswith("snippets/"):
            return self._volumes(node, sid).get(name)  # type: ignore[no-any-return]
        vol: dict[str, Any] | None = self._volumes(node, sid).get(name.split("/")[-1])
        return vol

    # ------------------------------------------------------------------ locks
    def _flock(self, vmid: int | str) -> SharedLock:
        with self._flocks_guard:
            return self._flocks.setdefault(int(vmid), SharedLock())

    @staticmethod
    def _flock_timeout(vmid: int | str) -> ApiError:
        return die(f"can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")

    @contextlib.contextmanager
    def vm_flock(self, vmid: int | str, timeout: float | None = None) -> Iterator[None]:
        """The per-VM flock ``/var/lock/qemu-server/lock-<vmid>.conf`` (exclusive)."""
        lock = self.acquire_flock(vmid, timeout)
        try:
            yield
        finally:
            lock.release()

    def acquire_flock(self, vmid: int | str, timeout: float | None = None) -> SharedLock:
        """Take the VM's flock exclusively (``PVE::QemuConfig->lock_config``); the caller
        releases it with ``.release()``."""
        lock = self._flock(vmid)
        if not lock.acquire(timeout=self.lock_timeout if timeout is None else timeout):
            raise self._flock_timeout(vmid)
        return lock

    def acquire_flock_shared(self, vmid: int | str,
                             timeout: float | None = None) -> Callable[[], None]:
        """Take the VM's flock shared (``lock_config_shared``: a clone of a template holds it
        for the whole clone, so parallel clones of one template run while an exclusive writer
        of the template waits and times out). Returns the release function."""
        lock = self._flock(vmid)
        if not lock.acquire_shared(timeout=self.lock_timeout if timeout is None else timeout):
            raise self._flock_timeout(vmid)
        return lock.release_shared

    @contextlib.contextmanager
    def storage_lock(self, node: str, sid: str) -> Iterator[None]:
        """The storage's allocation lock (``cfs-lock 'storage-<id>'``), held while a volume is
        allocated for ``durations['storage_alloc']`` seconds; waiting longer than
        ``lock_timeout`` fails like PVE's cluster lock (``got lock request timeout``)."""
        with self._flocks_guard:
            lock = self._storage_locks.setdefault(f"{node}/{sid}", threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise die(f"cfs-lock 'storage-{sid}' error: got lock request timeout")
        try:
            self.sleep(self.durations.get("storage_alloc", 0.0))
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ permissions
    def check_perm(self, caller: Caller, path: str, privs: list[str] | tuple[str, ...],
                   any_of: bool = False) -> None:
        if not has_priv(self.data, caller, path, privs, any_of):
            missing = "|".join(privs) if any_of else next(
                p for p in privs if not has_priv(self.data, caller, path, [p]))
            raise perm_error(f"{path}, {missing}")

    def can(self, caller: Caller, path: str, privs: list[str] | tuple[str, ...],
            any_of: bool = False) -> bool:
        return has_priv(self.data, caller, path, privs, any_of)

    # ------------------------------------------------------------------ request counters
    def count_request(self, method: str, template: str) -> None:
        with self._counts_lock:
            self._counts[(method, template)] += 1

    def request_counts(self) -> dict[tuple[str, str], int]:
        with self._counts_lock:
            return dict(self._counts)

    def reset_request_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()

    def pci_in_use(self, node: str) -> dict[str, int]:
        """PCI function ids in use by running VMs on ``node`` -> vmid."""
        out: dict[str, int] = {}
        for vmid, vm in self.data["vms"].items():
            if vm["node"] == node and vm["status"] == "running":
                for dev in vm.get("pci", []):
                    out[dev] = int(vmid)
        return out


def vm_status_entry(b: Backend, vmid: str, vm: dict[str, Any]) -> dict[str, Any]:
    conf = vm["conf"]
    running = vm["status"] == "running"
    maxmem = vmconfig.memory_mib(conf) * 1024**2
    entry: dict[str, Any] = {
        "vmid": int(vmid), "name": conf.get("name", f"VM {vmid}"),
        "status": vm["status"], "maxmem": maxmem, "mem": maxmem // 3 if running else 0,
        "maxdisk": vmconfig.boot_disk_size(conf), "disk": 0, "cpus": vmconfig.cpu_count(conf),
        "cpu": 0.01 if running else 0, "uptime": int(time.time() - vm.get("started", 0))
        if running else 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    }
    if running:
        entry["pid"] = 100000 + int(vmid)
    if conf.get("template") == "1":
        entry["template"] = 1
    if "lock" in conf:
        entry["lock"] = conf["lock"]
    if "tags" in conf:
        entry["tags"] = conf["tags"]
    return entry


def require(cond: bool, error: ApiError) -> None:
    if not cond:
        raise error
