"""GPU VM reconcile: read → diff → apply (clone, configure, resize, start, reboot, delete).

Ownership: a VM belongs to a stack when its tags hold ``skyrig-<stack>``; a half-made clone
(created by skyrig but not yet tagged) is recognised by the description skyrig gives the clone.
skyrig never changes or deletes a VM it does not own (:class:`OwnershipError`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from skyrig.errors import OwnershipError, ProxmoxError, ProxmoxTaskError
from skyrig.plan.proxmox import GpuVmSpec
from skyrig.proxmox.client import PveClient, is_missing
from skyrig.proxmox.ownership import parse_tags, vm_owned
from skyrig.proxmox.tasks import TaskResult, WaitPolicy, wait_for_task
from skyrig.proxmox.vmdiff import VmDiff, diff_config

Progress = Callable[[str, str], None]
RebootPolicy = Literal["never", "when-required"]
Action = Literal["created", "updated", "replaced", "unchanged", "deleted"]

#: Back-off before each re-run of a clone task that failed on a lock (bounded: 3 retries).
CLONE_LOCK_RETRY_S = (0.5, 1.0, 2.0)
#: Task exit statuses of a clone that lost a race for a lock, not a real failure (PVE's
#: ``PVE::Tools::lock_file`` and ``PVE::Cluster::cfs_lock_storage`` messages); a failed clone
#: removes its placeholder, so running it again is safe.
_LOCK_TIMEOUTS = (re.compile(r"can't lock file '[^']+' - got timeout"),
                  re.compile(r"cfs-lock '[^']+' error: got lock request timeout"))


def is_lock_timeout(exitstatus: str) -> bool:
    """Whether a task's exit status is a lock timeout (worth a bounded retry)."""
    return any(p.search(exitstatus) for p in _LOCK_TIMEOUTS)


#: Disk-like config keys (a new value may allocate a volume and move the old one to unusedN).
_DISK_KEY = re.compile(r"^(efidisk|tpmstate|scsi|virtio|sata|ide)\d+$")

#: One reboot at a time across the whole apply (``reboot_policy: when-required``).
REBOOT_LOCK = threading.Lock()


def _noop(_vm: str, _step: str) -> None:
    return None


@dataclass
class VmState:
    """A VM as PVE shows it: where, power state, current config and config with pending."""

    vmid: int
    node: str
    status: str
    current: dict[str, Any]
    config: dict[str, Any]
    pending_keys: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def tags(self) -> set[str]:
        return parse_tags(self.config.get("tags"))

    @property
    def lock(self) -> str | None:
        value = self.config.get("lock")
        return str(value) if value else None


@dataclass
class VmOutcome:
    name: str
    vmid: int
    node: str
    action: Action
    ip: str | None = None
    pending_reboot: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    rebooted: bool = False


def owned(state: VmState, spec_or_tag: GpuVmSpec | str, description: str | None = None) -> bool:
    """Whether the stack owns the VM (:func:`skyrig.proxmox.ownership.vm_owned`)."""
    if isinstance(spec_or_tag, GpuVmSpec):
        tag, description = spec_or_tag.owner_tag, str(spec_or_tag.config.get("description", ""))
    else:
        tag = spec_or_tag
    return vm_owned(state.config, tag, description)


class VmReconciler:
    """Reads, diffs and applies GPU VMs through one :class:`PveClient`."""

    def __init__(self, client: PveClient, *, task_timeout_s: float = 900.0,
                 reboot_policy: RebootPolicy = "never", ip_timeout_s: float | None = None,
                 shutdown_timeout_s: int = 60, progress: Progress | None = None) -> None:
        self.c = client
        self.policy = WaitPolicy(timeout_s=task_timeout_s)
        self.reboot_policy = reboot_policy
        self.ip_timeout_s = ip_timeout_s if ip_timeout_s is not None else task_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.progress = progress or _noop
        self._index: dict[int, dict[str, Any]] | None = None
        #: Called right before a clone is requested (the direct apply records the VM there, so
        #: a placeholder left by a clone that dies with this process is provably skyrig's).
        self.before_clone: Callable[[GpuVmSpec], None] | None = None

    # ------------------------------------------------------------------ reads
    def index(self, refresh: bool = False) -> dict[int, dict[str, Any]]:
        """vmid → ``/cluster/resources`` entry (one call for the whole cluster)."""
        if self._index is None or refresh:
            rows = self.c.get("cluster/resources", type="vm") or []
            self._index = {int(r["vmid"]): r for r in rows
                           if r.get("type", "qemu") == "qemu" and "vmid" in r}
        return self._index

    def read(self, vmid: int, node: str | None = None) -> VmState | None:
        """The live VM, or None. Uses ``/pending`` (current and pending values in one call)."""
        entry = self.index().get(vmid)
        node = str(entry["node"]) if entry else node
        if node is None:
            return None
        try:
            rows = self.c.request("GET", f"nodes/{node}/qemu/{vmid}/pending", node=node,
                                  vmid=vmid)
        except ProxmoxError as exc:
            if is_missing(exc):
                return None
            raise
        current: dict[str, Any] = {}
        config: dict[str, Any] = {}
        pending: list[str] = []
        for row in rows or []:
            key = str(row["key"])
            if "value" in row:
                current[key] = row["value"]
            if row.get("delete"):
                pending.append(key)
                continue
            if "pending" in row:
                config[key] = row["pending"]
                if row.get("value") != row["pending"]:
                    pending.append(key)
            elif "value" in row:
                config[key] = row["value"]
        status = str(entry.get("status", "stopped")) if entry else self._status(node, vmid)
        return VmState(vmid=vmid, node=node, status=status, current=current, config=config,
                       pending_keys=sorted(pending))

    def _status(self, node: str, vmid: int) -> str:
        st = self.c.request("GET", f"nodes/{node}/qemu/{vmid}/status/current", node=node,
                            vmid=vmid)
        return str(st.get("status", "stopped"))

    def guest_ip(self, node: str, vmid: int, expected: str | None = None) -> str | None:
        """The guest's IPv4 from the agent (the expected one if present), or None."""
        try:
            data = self.c.request("GET", f"nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
                                  node=node, vmid=vmid)
        except ProxmoxError as exc:
            if exc.status in (500, 595, 596) or exc.status is None:
                return None
            raise
        found: list[str] = []
        for iface in (data or {}).get("result", []):
            for addr in iface.get("ip-addresses", []):
                if addr.get("ip-address-type") == "ipv4":
                    ip = str(addr.get("ip-address"))
                    if not ipaddress.ip_address(ip).is_loopback or ip == expected:
                        found.append(ip)
        if expected and expected in found:
            return expected
        return found[0] if found and not expected else None

    def wait_for_ip(self, spec: GpuVmSpec, node: str) -> str:
        self.progress(spec.name, f"waiting for guest agent to report {spec.ip}")
        deadline = time.monotonic() + self.ip_timeout_s
        delay = 0.1
        while True:
            ip = self.guest_ip(node, spec.vmid, spec.ip)
            if ip == spec.ip:
                return ip
            if time.monotonic() >= deadline:
                raise ProxmoxError(
                    f"VM {spec.name} did not report IP {spec.ip} through the guest agent within "
                    f"{self.ip_timeout_s:g}s", node=node, vmid=spec.vmid,
                    hint="check cloud-init (ipconfig0) and that qemu-guest-agent runs in the "
                         "template")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ------------------------------------------------------------------ task helpers
    def _task(self, method: str, path: str, spec_name: str, node: str, vmid: int,
              step: str, params: dict[str, Any] | None = None,
              repeatable: bool = False) -> TaskResult | None:
        self.progress(spec_name, step)
        upid = self.c.request(method, path, params or {}, node=node, vmid=vmid,
                              repeatable=repeatable)
        if not upid:
            return None
        return wait_for_task(self.c, str(upid), policy=self.policy, vmid=vmid,
                             what=f"{step} of {spec_name}")

    def _wait_unlocked(self, node: str, vmid: int) -> None:
        deadline = time.monotonic() + self.policy.timeout_s
        delay = 0.05
        while True:
            conf = self.c.request("GET", f"nodes/{node}/qemu/{vmid}/config", node=node,
                                  vmid=vmid)
            if not conf.get("lock"):
                return
            if time.monotonic() >= deadline:
                raise ProxmoxError(f"VM {vmid} stayed locked ({conf['lock']})", node=node,
                                   vmid=vmid, hint="look for a running task on the node")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ------------------------------------------------------------------ create
    def clone(self, spec: GpuVmSpec) -> None:
        params = dict(spec.clone_params)
        if params.get("target") == spec.node:
            params.pop("target")
        params["description"] = spec.config.get("description", "")
        path = f"nodes/{spec.node}/qemu/{spec.template_vmid}/clone"
        self.progress(spec.name, f"full clone of template {spec.template_vmid}")
        if self.before_clone is not None:
            self.before_clone(spec)
        try:
            upid = self.c.request("POST", path, params, node=spec.node, vmid=spec.vmid)
        except ProxmoxError as exc:
            # A lost answer may hide a clone that did start: adopt it if it is ours.
            if exc.status is not None and "already exists" not in (exc.pve_message or ""):
                raise
            state = self.read(spec.vmid, spec.node) if self._exists(spec) else None
            if state is None:
                if exc.status is not None:
                    raise
                upid = self.c.request("POST", path, params, node=spec.node, vmid=spec.vmid)
            elif state.lock == "clone" or owned(state, spec):
                self._wait_unlocked(spec.node, spec.vmid)
                return
            else:
                raise OwnershipError(
                    f"VM {spec.vmid} appeared on {spec.node} but is not skyrig's",
                    hint="pick another vmid or remove that VM by hand") from exc
        for delay in [*CLONE_LOCK_RETRY_S, None]:
            try:
                wait_for_task(self.c, str(upid), policy=self.policy, vmid=spec.vmid,
                              what=f"clone of {spec.name}")
                break
            except ProxmoxTaskError as exc:
                if delay is None or not is_lock_timeout(exc.pve_message or ""):
                    raise
                self.progress(spec.name, f"clone hit a lock timeout ({exc.pve_message}); "
                                         f"retrying in {delay:g}s")
                time.sleep(delay)
                upid = self.c.request("POST", path, params, node=spec.node, vmid=spec.vmid)
        self._wait_unlocked(spec.node, spec.vmid)

    def _exists(self, spec: GpuVmSpec) -> bool:
        return spec.vmid in self.index(refresh=True)

    def configure(self, spec: GpuVmSpec, d: VmDiff, digest: str | None = None) -> None:
        if not d.set and not d.delete:
            return
        params: dict[str, Any] = dict(d.set)
        if d.delete:
            params["delete"] = ",".join(d.delete)
        if digest:
            params["digest"] = digest
        keys = ", ".join(sorted([*d.set, *d.delete]))
        self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/config", spec.name, spec.node,
                   spec.vmid, f"configure ({keys})", params)

    def resize(self, spec: GpuVmSpec, size: str) -> None:
        self._task("PUT", f"nodes/{spec.node}/qemu/{spec.vmid}/resize", spec.name, spec.node,
                   spec.vmid, f"resize {spec.disk} to {size}", {"disk": spec.disk, "size": size})

    def start(self, spec: GpuVmSpec) -> None:
        self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/status/start", spec.name,
                   spec.node, spec.vmid, "start")

    def reboot(self, spec: GpuVmSpec) -> None:
        with REBOOT_LOCK:
            self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/status/reboot", spec.name,
                       spec.node, spec.vmid, "reboot (apply pending changes)")

    def create(self, spec: GpuVmSpec) -> VmOutcome:
        self.clone(spec)
        state = self.read(spec.vmid, spec.node)
        if state is None:
            raise ProxmoxError(f"VM {spec.vmid} vanished right after its clone", node=spec.node,
                               vmid=spec.vmid)
        return self._converge(spec, state, "created")

    # ------------------------------------------------------------------ ensure
    def plan(self, spec: GpuVmSpec, state: VmState | None,
             recorded: dict[str, Any] | None = None) -> VmDiff | None:
        """The diff that ``ensure`` would apply (None: the VM would be created)."""
        if state is None:
            return None
        return diff_config(spec, state.config, running=state.running, recorded=recorded,
                           live_node=state.node)

    def ensure(self, spec: GpuVmSpec, recorded: dict[str, Any] | None = None,
               allow_replace: bool = True) -> VmOutcome:
        """Make the live VM match ``spec``; create or replace it if needed."""
        state = self.read(spec.vmid)
        if state is not None and state.lock == "clone" and not owned(state, spec):
            state = self.settle_clone(state, spec.template_vmid, spec.name,
                                      str(spec.config.get("description", "")),
                                      recorded is not None, spec_node=spec.node)
        if state is None:
            return self.create(spec)
        if not owned(state, spec):
            raise OwnershipError(
                f"VM {spec.vmid} on {state.node} exists but is not owned by this stack (no tag "
                f"{spec.owner_tag!r}); skyrig will not touch it",
                hint=f"choose another vmid for {spec.name}, or import it deliberately "
                     "(skyrig.proxmox.vms.VmReconciler.import_vm)")
        d = diff_config(spec, state.config, running=state.running, recorded=recorded,
                        live_node=state.node)
        if d.replace:
            if not allow_replace:
                raise ProxmoxError(f"{spec.name}: {', '.join(d.replace)} changed; the VM must be "
                                   "replaced", vmid=spec.vmid, node=state.node)
            self.destroy(state, spec.owner_tag, str(spec.config.get("description", "")),
                         name=spec.name)
            out = self.create(spec)
            out.action = "replaced"
            return out
        return self._converge(spec, state, "unchanged", d)

    def _converge(self, spec: GpuVmSpec, state: VmState, action: Action,
                  d: VmDiff | None = None) -> VmOutcome:
        if state.lock:
            self._wait_unlocked(state.node, spec.vmid)
            state = self.read(spec.vmid, spec.node) or state
            d = None
        if d is None:
            d = diff_config(spec, state.config, running=state.running)
        if d.forbidden:
            c = d.forbidden[0]
            raise ProxmoxError(f"{spec.name}: cannot change {c.key} from {c.old} to {c.new} "
                               "(PVE cannot shrink disks)", node=spec.node, vmid=spec.vmid,
                               hint="keep the disk size or replace the VM (skyrig down/up)")
        changed = [c.key for c in d.changes]
        if d.set or d.delete:
            digest = None
            if action == "unchanged":
                conf = self.c.request("GET", f"nodes/{spec.node}/qemu/{spec.vmid}/config",
                                      node=spec.node, vmid=spec.vmid)
                digest = conf.get("digest")
            self.configure(spec, d, digest)
        if d.resize:
            self.resize(spec, d.resize)
        if any(_DISK_KEY.match(k) and k in state.current for k in d.set):
            self.drop_leftovers(spec, state.config)  # a re-allocated volume went to unusedN
        if changed and action == "unchanged":
            action = "updated"
        out = VmOutcome(name=spec.name, vmid=spec.vmid, node=spec.node, action=action,
                        changes=changed)
        running = state.running
        if changed and running:
            fresh = self.read(spec.vmid, spec.node)
            pending = fresh.pending_keys if fresh else []
        else:
            pending = state.pending_keys if running else []
        if running and pending:
            if self.reboot_policy == "when-required":
                self.reboot(spec)
                if any(_DISK_KEY.match(k) for k in pending):
                    self.drop_leftovers(spec, state.current)
                out.rebooted = True
                if action == "unchanged":
                    out.action = "updated"
                    out.changes = [f"reboot: {', '.join(pending)}"]
            else:
                out.pending_reboot = pending
                self.progress(spec.name, f"pending reboot: {', '.join(pending)}")
        if not running:
            self.start(spec)
            if action == "unchanged":
                out.action = "updated"
                out.changes.append("start")
        if not running or out.rebooted or action in ("created", "replaced"):
            out.ip = self.wait_for_ip(spec, spec.node)
        else:
            out.ip = self.guest_ip(spec.node, spec.vmid, spec.ip)
        self.progress(spec.name, f"{out.action}" + (f" ({out.ip})" if out.ip else ""))
        return out

    def drop_leftovers(self, spec: GpuVmSpec, before: dict[str, Any]) -> list[str]:
        """Delete the ``unusedN`` entries a write just produced (PVE moves the old volume of a
        replaced disk-like key, e.g. a re-allocated ``efidisk0``, to ``unusedN``); deleting
        ``unusedN`` destroys the volume. Entries that were there before are left alone."""
        conf = self.c.request("GET", f"nodes/{spec.node}/qemu/{spec.vmid}/config",
                              {"current": 1}, node=spec.node, vmid=spec.vmid) or {}
        new = sorted(k for k in conf if re.fullmatch(r"unused\d+", str(k)) and k not in before
                     and f"-{spec.vmid}-" in str(conf[k]))
        if new:
            self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/config", spec.name,
                       spec.node, spec.vmid, f"destroy replaced volumes ({', '.join(new)})",
                       {"delete": ",".join(new)})
        return new

    # ------------------------------------------------------------------ clone placeholders
    def active_clones(self, nodes: set[str], ids: set[int]) -> list[tuple[str, str]]:
        """Running ``qmclone`` tasks whose id (PVE: the *source* vmid) is in ``ids``:
        ``(node, upid)``."""
        out = []
        for node in sorted(nodes):
            rows = self.c.request("GET", f"nodes/{node}/tasks", {"source": "active",
                                                                 "typefilter": "qmclone"},
                                  node=node) or []
            out += [(node, str(r["upid"])) for r in rows
                    if str(r.get("id", "")) in {str(i) for i in ids}]
        return out

    def settle_clone(self, state: VmState, template_vmid: int | None, name: str,
                     description: str, recorded: bool, *,
                     spec_node: str | None = None) -> VmState | None:
        """Resolve a clone placeholder (config ``lock: clone`` and no owner tag yet).

        * a ``qmclone`` task from the template (or for the vmid) still runs: wait for it and
          return the VM as it is then (None if the clone failed and PVE removed it);
        * no such task: a stale placeholder (the clone's process died). When the provisioning
          record (``recorded``) or the description proves it is skyrig's, remove it
          (``skiplock``, purge, unreferenced disks) and return None so it is cloned again;
          otherwise raise :class:`ProxmoxError` with the commands that clean it up.
        """
        nodes = {state.node, *([spec_node] if spec_node else [])}
        ids = {state.vmid, *([template_vmid] if template_vmid is not None else [])}
        running = self.active_clones(nodes, ids)
        if running:
            for _node, upid in running:
                self.progress(name, f"waiting for the running clone task {upid}")
                # a failed clone removes its own placeholder: re-read either way
                with contextlib.suppress(ProxmoxTaskError):
                    wait_for_task(self.c, upid, policy=self.policy, vmid=state.vmid,
                                  what=f"clone of {name} (started earlier)")
            return self.read(state.vmid, state.node)
        live_desc = str(state.config.get("description", "")).strip()
        proven = recorded or (bool(description) and live_desc == description.strip())
        node, vmid = state.node, state.vmid
        cleanup = (f"`qm unlock {vmid} && qm destroy {vmid} --purge "
                   f"--destroy-unreferenced-disks 1` on {node}")
        if not proven:
            raise ProxmoxError(
                f"VM {vmid} on {node} is a stale clone placeholder (lock: clone, no clone task "
                "running) that neither its description nor the provisioning record shows to be "
                "skyrig's; skyrig will not remove it",
                node=node, vmid=vmid,
                hint=f"if nothing else is cloning to it, clean it up: {cleanup}; then re-run")
        self.progress(name, f"removing stale clone placeholder {vmid} on {node}")
        try:
            self._task("DELETE", f"nodes/{node}/qemu/{vmid}", name, node, vmid,
                       "destroy stale clone placeholder",
                       {"skiplock": 1, "purge": 1, "destroy-unreferenced-disks": 1})
        except ProxmoxError as exc:
            if "Only root may use this option" not in str(exc):
                raise
            raise ProxmoxError(
                f"VM {vmid} on {node} is a stale clone placeholder skyrig made (lock: clone, no "
                "clone task running; the clone's process died). Removing it needs PVE's "
                "skiplock, which PVE grants only to root@pam, never to an API token",
                node=node, vmid=vmid,
                hint=f"run {cleanup} (or `pvesh delete /nodes/{node}/qemu/{vmid} --skiplock 1 "
                     "--purge 1 --destroy-unreferenced-disks 1` as root), then re-run: the "
                     "VM is cloned again") from exc
        if self._index is not None:
            self._index.pop(vmid, None)
        return None

    # ------------------------------------------------------------------ delete
    def destroy(self, state: VmState, owner_tag: str, description: str | None = None, *,
                name: str | None = None) -> None:
        """Graceful shutdown (timeout) → stop → destroy with purge. Owned VMs only."""
        label = name or str(state.vmid)
        if not owned(state, owner_tag, description):
            raise OwnershipError(
                f"refusing to delete VM {state.vmid} on {state.node}: it has no {owner_tag!r} tag",
                hint="skyrig deletes only VMs its stack owns")
        node, vmid = state.node, state.vmid
        if state.lock:
            self._wait_unlocked(node, vmid)
        if state.running:
            try:
                self._task("POST", f"nodes/{node}/qemu/{vmid}/status/shutdown", label, node, vmid,
                           "graceful shutdown", {"timeout": self.shutdown_timeout_s,
                                                 "forceStop": 0})
            except ProxmoxTaskError:
                self.progress(label, "shutdown timed out; stopping")
            if self._status(node, vmid) != "stopped":
                self._task("POST", f"nodes/{node}/qemu/{vmid}/status/stop", label, node, vmid,
                           "stop", repeatable=True)
        self._task("DELETE", f"nodes/{node}/qemu/{vmid}", label, node, vmid,
                   "destroy (purge)", {"purge": 1, "destroy-unreferenced-disks": 1})
        if self._index is not None:
            self._index.pop(vmid, None)

    def delete(self, vmid: int, owner_tag: str, description: str | None = None,
               name: str | None = None, recorded: bool = False) -> bool:
        """Delete the VM if it exists (False if it was already gone). A clone placeholder
        skyrig half-made is settled first (:meth:`settle_clone`)."""
        state = self.read(vmid)
        if state is not None and state.lock == "clone" and not owned(state, owner_tag,
                                                                     description):
            state = self.settle_clone(state, None, name or str(vmid), description or "",
                                      recorded)
        if state is None:
            return True
        self.destroy(state, owner_tag, description, name=name)
        return True

    def import_vm(self, vmid: int, owner_tag: str) -> VmState:
        """Adopt an existing VM by vmid: add the owner tag so the stack manages it from now on."""
        state = self.read(vmid)
        if state is None:
            raise ProxmoxError(f"VM {vmid} does not exist; nothing to import", vmid=vmid)
        if owner_tag.lower() not in state.tags:
            tags = ";".join(sorted({*state.tags, owner_tag.lower()}))
            self.c.request("PUT", f"nodes/{state.node}/qemu/{vmid}/config", {"tags": tags},
                           node=state.node, vmid=vmid)
            state = self.read(vmid, state.node) or state
        return state
