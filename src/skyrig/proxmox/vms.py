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
    """Say whether a task's exit status is a lock timeout (worth a bounded retry).

    Matches PVE's ``PVE::Tools::lock_file`` (``can't lock file '...' - got timeout``) and
    ``PVE::Cluster::cfs_lock_storage`` (``cfs-lock '...' error: got lock request timeout``).

    Args:
        exitstatus: The task's exit status text.

    Returns:
        ``True`` for either lock timeout.
    """
    return any(p.search(exitstatus) for p in _LOCK_TIMEOUTS)


#: Disk-like config keys (a new value may allocate a volume and move the old one to unusedN).
_DISK_KEY = re.compile(r"^(efidisk|tpmstate|scsi|virtio|sata|ide)\d+$")

#: One reboot at a time across the whole apply (``reboot_policy: when-required``).
REBOOT_LOCK = threading.Lock()


def _noop(_vm: str, _step: str) -> None:
    return None


@dataclass
class VmState:
    """A VM as PVE shows it: where, power state, current config and config with pending.

    Attributes:
        vmid: VMID.
        node: PVE node it lives on.
        status: Power state from ``/cluster/resources`` or ``status/current`` (``running``,
            ``stopped``, ...).
        current: Config values in effect now (``value`` of ``GET .../pending`` rows).
        config: Config with pending changes applied (``pending`` where one is pending; keys
            pending deletion left out).
        pending_keys: Sorted keys with a pending change or deletion.
    """

    vmid: int
    node: str
    status: str
    current: dict[str, Any]
    config: dict[str, Any]
    pending_keys: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        """Whether the VM is running."""
        return self.status == "running"

    @property
    def tags(self) -> set[str]:
        """The VM's tags (pending value included), lower-cased."""
        return parse_tags(self.config.get("tags"))

    @property
    def lock(self) -> str | None:
        """The config ``lock`` (``clone``, ``backup``, ``migrate``, ...), or None."""
        value = self.config.get("lock")
        return str(value) if value else None


@dataclass
class VmOutcome:
    """What reconciling one VM did.

    Attributes:
        name: VM name.
        vmid: VMID.
        node: PVE node.
        action: ``created``, ``updated``, ``replaced``, ``unchanged`` or ``deleted``.
        ip: IPv4 address the guest agent reported, or ``None``.
        pending_reboot: Keys left pending on the running VM (``reboot_policy: never``).
        changes: Keys changed (plus ``start`` / ``reboot: ...`` steps).
        rebooted: Whether the VM was rebooted to apply pending changes.
    """
    name: str
    vmid: int
    node: str
    action: Action
    ip: str | None = None
    pending_reboot: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    rebooted: bool = False


def owned(state: VmState, spec_or_tag: GpuVmSpec | str, description: str | None = None) -> bool:
    """Say whether the stack owns the VM (:func:`skyrig.proxmox.ownership.vm_owned`).

    Args:
        state: The live VM.
        spec_or_tag: The planned VM (its owner tag and clone description are used) or an owner
            tag ``skyrig-<stack>``.
        description: With a tag: the description that marks an untagged half-made clone.

    Returns:
        Whether skyrig may change or delete the VM for this stack.
    """
    if isinstance(spec_or_tag, GpuVmSpec):
        tag, description = spec_or_tag.owner_tag, str(spec_or_tag.config.get("description", ""))
    else:
        tag = spec_or_tag
    return vm_owned(state.config, tag, description)


class VmReconciler:
    """Read, diff and apply GPU VMs through one :class:`PveClient`.

    Args:
        client: The PVE session.
        task_timeout_s: Timeout of every PVE task (clone, config, start, ...), in seconds.
        reboot_policy: ``never`` leaves changes that need a reboot pending (reported);
            ``when-required`` reboots through the API, one VM at a time.
        ip_timeout_s: How long to wait for the guest agent to report the VM's address, in
            seconds (default: ``task_timeout_s``).
        shutdown_timeout_s: ``timeout`` of the graceful shutdown before a stop, in seconds (PVE
            API ``POST /nodes/{node}/qemu/{vmid}/status/shutdown``).
        progress: Called as ``progress(vm_name, step)`` for every step.

    Attributes:
        before_clone: Called with the spec right before a clone is requested (the direct apply
            records the VM there, so a placeholder left by a clone that dies with this process
            is provably skyrig's).
    """

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
        """Return every QEMU VM of the cluster (``GET /cluster/resources?type=vm``), cached.

        Args:
            refresh: Re-read even when cached.

        Returns:
            VMID → its ``/cluster/resources`` row (``node``, ``status``, ``name``, ``tags``, ...).

        Raises:
            ProxmoxError: The read failed.
        """
        if self._index is None or refresh:
            rows = self.c.get("cluster/resources", type="vm") or []
            self._index = {int(r["vmid"]): r for r in rows
                           if r.get("type", "qemu") == "qemu" and "vmid" in r}
        return self._index

    def read(self, vmid: int, node: str | None = None) -> VmState | None:
        """Return the live VM, or None.

        Uses ``GET /nodes/{node}/qemu/{vmid}/pending`` (PVE API: current and pending values in one
        call); the node comes from :meth:`index`, else from ``node``.

        Args:
            vmid: VMID.
            node: Node to look on when the VM is not in the cached index.

        Returns:
            The VM's state, or ``None`` when it does not exist (or no node is known).

        Raises:
            ProxmoxError: A read failed for another reason than "does not exist".
        """
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
        """Return the guest's IPv4 address as the QEMU guest agent reports it.

        PVE API ``GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces``; an agent that is not
        running yet (500/595/596 or no connection) counts as "no address yet".

        Args:
            node: PVE node.
            vmid: VMID.
            expected: The address the VM should have; when given, only it is returned.

        Returns:
            ``expected`` when the guest has it; otherwise (no ``expected``) the first non-loopback
            IPv4 address; ``None`` when there is none.

        Raises:
            ProxmoxError: The agent call failed for another reason (e.g. 403).
        """
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
        """Wait until the guest agent reports the VM's planned address.

        Polls :meth:`guest_ip` with backoff (0.1 s, ×1.5, capped at 1 s) for up to ``ip_timeout_s``
        seconds.

        Args:
            spec: The planned VM (``ip``, ``vmid``).
            node: PVE node.

        Returns:
            ``spec.ip``.

        Raises:
            ProxmoxError: The address did not appear in time (check cloud-init ``ipconfig0`` and the
                template's qemu-guest-agent), or an agent call failed.
        """
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
        """Full-clone the node's template to ``spec.vmid`` and wait until the VM is unlocked.

        PVE API ``POST /nodes/{node}/qemu/{template}/clone`` with ``full=1`` and the clone
        description. A lost answer or ``already exists`` is resolved by reading the VM: a clone of
        this stack (locked ``clone`` or owned) is adopted, a missing one is requested again. A clone
        task that fails on a lock timeout (:func:`is_lock_timeout`) is re-run up to 3 times (after
        0.5, 1 and 2 s).

        Args:
            spec: The planned VM.

        Raises:
            OwnershipError: Another VM appeared at ``spec.vmid``.
            ProxmoxError: The request failed, or the VM stayed locked past the task timeout.
            ProxmoxTaskError: The clone task failed or timed out.
        """
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
        """Write the diff's ``set`` and ``delete`` to the VM config (nothing when both are empty).

        PVE API ``POST /nodes/{node}/qemu/{vmid}/config`` (async, waited for), with ``digest`` so a
        concurrent edit is refused rather than overwritten.

        Args:
            spec: The planned VM.
            d: The diff to write.
            digest: The config digest read before diffing, or ``None``.

        Raises:
            ProxmoxError: The request failed (e.g. a stale digest).
            ProxmoxTaskError: The config task failed or timed out.
        """
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
        """Grow the boot disk (PVE API ``PUT /nodes/{node}/qemu/{vmid}/resize``; online).

        Args:
            spec: The planned VM (``disk``, e.g. ``scsi0``).
            size: New absolute size as PVE takes it, e.g. ``64G`` (GiB); PVE refuses to shrink.

        Raises:
            ProxmoxError: The request failed.
            ProxmoxTaskError: The resize task failed or timed out.
        """
        self._task("PUT", f"nodes/{spec.node}/qemu/{spec.vmid}/resize", spec.name, spec.node,
                   spec.vmid, f"resize {spec.disk} to {size}", {"disk": spec.disk, "size": size})

    def start(self, spec: GpuVmSpec) -> None:
        """Start the VM (PVE API ``POST /nodes/{node}/qemu/{vmid}/status/start``) and wait.

        Args:
            spec: The planned VM.

        Raises:
            ProxmoxError: The request failed.
            ProxmoxTaskError: The start task failed (e.g. a PCI mapping that does not resolve) or
                timed out.
        """
        self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/status/start", spec.name,
                   spec.node, spec.vmid, "start")

    def reboot(self, spec: GpuVmSpec) -> None:
        """Reboot the VM through the API so pending changes apply; one reboot at a time.

        PVE API ``POST /nodes/{node}/qemu/{vmid}/status/reboot`` (applies ``[PENDING]`` changes,
        unlike a reboot inside the guest).

        Args:
            spec: The planned VM.

        Raises:
            ProxmoxError: The request failed.
            ProxmoxTaskError: The reboot task failed or timed out.
        """
        with REBOOT_LOCK:
            self._task("POST", f"nodes/{spec.node}/qemu/{spec.vmid}/status/reboot", spec.name,
                       spec.node, spec.vmid, "reboot (apply pending changes)")

    def create(self, spec: GpuVmSpec) -> VmOutcome:
        """Clone, configure, resize and start a new VM, then wait for its address.

        Args:
            spec: The planned VM.

        Returns:
            The outcome, action ``created``.

        Raises:
            OwnershipError: Another VM appeared at ``spec.vmid``.
            ProxmoxError: A call failed, the VM vanished after its clone, or its address did not
                appear in time.
            ProxmoxTaskError: A task failed or timed out.
        """
        self.clone(spec)
        state = self.read(spec.vmid, spec.node)
        if state is None:
            raise ProxmoxError(f"VM {spec.vmid} vanished right after its clone", node=spec.node,
                               vmid=spec.vmid)
        return self._converge(spec, state, "created")

    # ------------------------------------------------------------------ ensure
    def plan(self, spec: GpuVmSpec, state: VmState | None,
             recorded: dict[str, Any] | None = None) -> VmDiff | None:
        """Return the diff that :meth:`ensure` would apply.

        Args:
            spec: The planned VM.
            state: The live VM, or ``None``.
            recorded: The VM's provisioning record, for replace-forcing fields.

        Returns:
            The diff, or ``None`` when the VM would be created.

        Raises:
            ValueError: A disk size cannot be parsed.
        """
        if state is None:
            return None
        return diff_config(spec, state.config, running=state.running, recorded=recorded,
                           live_node=state.node)

    def ensure(self, spec: GpuVmSpec, recorded: dict[str, Any] | None = None,
               allow_replace: bool = True) -> VmOutcome:
        """Make the live VM match ``spec``; create or replace it if needed.

        A clone placeholder is settled first (:meth:`settle_clone`); a VM at ``spec.vmid`` this
        stack does not own is never touched. Replace-forcing changes (node, template, storage)
        destroy and re-create the VM; everything else converges in place (config, resize, start,
        reboot per ``reboot_policy``).

        Args:
            spec: The planned VM.
            recorded: The VM's provisioning record (``None``: skyrig has no record of it).
            allow_replace: Whether a replace-forcing change may destroy and re-create the VM.

        Returns:
            What was done and the VM's address.

        Raises:
            OwnershipError: The VM at ``spec.vmid`` belongs to someone else.
            ProxmoxError: A call failed; a replacement is needed but not allowed; a disk would have
                to shrink; a stale placeholder cannot be proven skyrig's; or the address did not
                appear in time.
            ProxmoxTaskError: A task failed or timed out.
        """
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
        """Delete the ``unusedN`` entries a write just produced.

        PVE moves the old volume of a replaced disk-like key (e.g. a re-allocated ``efidisk0``) to
        ``unusedN``; deleting ``unusedN`` destroys the volume (pve-docs qm.conf ``unused[n]``).
        Entries that were there before, or whose volume is not this VM's (``-<vmid>-``), are left
        alone.

        Args:
            spec: The planned VM.
            before: The config before the write; its ``unusedN`` keys are kept.

        Returns:
            The deleted keys, e.g. ``["unused0"]``.

        Raises:
            ProxmoxError: A call failed.
            ProxmoxTaskError: The config task failed or timed out.
        """
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
        """Return running ``qmclone`` tasks whose id is in ``ids``.

        PVE API ``GET /nodes/{node}/tasks?source=active&typefilter=qmclone``; a clone task's id is
        the *source* VMID (the template).

        Args:
            nodes: PVE nodes to ask.
            ids: VMIDs (templates or targets) to look for.

        Returns:
            ``(node, upid)`` per running task.

        Raises:
            ProxmoxError: A task list could not be read.
        """
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

        * A ``qmclone`` task from the template (or for the VMID) still runs: wait for it and return
          the VM as it is then (``None`` if the clone failed and PVE removed it).
        * No such task: a stale placeholder (the clone's process died). When the provisioning record
          (``recorded``) or the description proves it is skyrig's, remove it (``skiplock``, purge,
          unreferenced disks) and return ``None`` so it is cloned again.

        Args:
            state: The locked VM.
            template_vmid: The template it would be cloned from, or ``None`` when unknown.
            name: VM name for progress and messages.
            description: The description skyrig gives this VM's clone.
            recorded: Whether the provisioning record lists the VM.
            spec_node: The node the spec wants, also searched for clone tasks.

        Returns:
            The VM after the running clone, or ``None`` when there is no VM (any more).

        Raises:
            ProxmoxError: The placeholder is not provably skyrig's, or removing it needs PVE's
                ``skiplock`` which only root@pam has (the message gives the ``qm`` commands), or a
                call failed.
            ProxmoxTaskError: The destroy task failed or timed out.
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
        """Shut down gracefully, stop if still running, then destroy with purge. Owned VMs only.

        PVE API ``POST .../status/shutdown`` (``timeout`` = ``shutdown_timeout_s``, no force), then
        ``POST .../status/stop`` if needed, then ``DELETE /nodes/{node}/qemu/{vmid}`` with
        ``purge=1`` and ``destroy-unreferenced-disks=1``.

        Args:
            state: The live VM.
            owner_tag: The stack's owner tag, ``skyrig-<stack>``.
            description: The clone description that marks an untagged half-made clone as skyrig's.
            name: VM name for progress (default: the VMID).

        Raises:
            OwnershipError: The stack does not own the VM.
            ProxmoxError: A call failed, or the VM stayed locked past the task timeout.
            ProxmoxTaskError: The stop or destroy task failed or timed out (a timed-out shutdown
                only leads to a stop).
        """
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
        """Delete the VM if it exists; a clone placeholder skyrig half-made is settled first.

        Args:
            vmid: VMID.
            owner_tag: The stack's owner tag, ``skyrig-<stack>``.
            description: The clone description that marks an untagged half-made clone as skyrig's.
            name: VM name for progress and messages.
            recorded: Whether the provisioning record lists the VM (proof for a stale placeholder).

        Returns:
            ``True``: the VM is gone (deleted now, or already absent).

        Raises:
            OwnershipError: The stack does not own the VM.
            ProxmoxError: A call failed, or a stale placeholder cannot be removed (see
                :meth:`settle_clone`).
            ProxmoxTaskError: A task failed or timed out.
        """
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
        """Adopt an existing VM by VMID: add the owner tag so the stack manages it from now on.

        PVE API ``PUT /nodes/{node}/qemu/{vmid}/config`` with the merged ``tags``.

        Args:
            vmid: VMID.
            owner_tag: The stack's owner tag, ``skyrig-<stack>``.

        Returns:
            The VM as it is after tagging.

        Raises:
            ProxmoxError: The VM does not exist, or a call failed.
        """
        state = self.read(vmid)
        if state is None:
            raise ProxmoxError(f"VM {vmid} does not exist; nothing to import", vmid=vmid)
        if owner_tag.lower() not in state.tags:
            tags = ";".join(sorted({*state.tags, owner_tag.lower()}))
            self.c.request("PUT", f"nodes/{state.node}/qemu/{vmid}/config", {"tags": tags},
                           node=state.node, vmid=vmid)
            state = self.read(vmid, state.node) or state
        return state
