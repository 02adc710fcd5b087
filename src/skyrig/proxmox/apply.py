"""The direct apply of a plan: PCI mappings, then GPU VMs in parallel (bounded), then pruning.

This is the reconcile core's driver over a :class:`~skyrig.plan.Plan` and a
:class:`~skyrig.proxmox.client.PveClient`; it knows nothing of Pulumi, pvesim or the console.
The Pulumi dynamic providers call the same reconcilers; :mod:`skyrig.workflows.provision`
chooses the path. Every apply ends with an :class:`ApplyResult`; a re-run that changes nothing
says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from skyrig.errors import OwnershipError, ProxmoxError
from skyrig.plan import Plan
from skyrig.plan.proxmox import GpuVmSpec
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.mappings import MappingReconciler
from skyrig.proxmox.ownership import parse_tags
from skyrig.proxmox.state import ProvisionRecord
from skyrig.proxmox.vms import VmOutcome, VmReconciler

ApplyPath = Literal["direct", "pulumi"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ApplyResult:
    """What an apply or destroy did. Resource names: ``vm/<name>``, ``pci-mapping/<id>``.

    Attributes:
        stack: Stack name.
        path: ``direct`` or ``pulumi``.
        created: Resources created.
        updated: Resources changed in place.
        replaced: VMs destroyed and re-created.
        deleted: Resources deleted.
        unchanged: Resources that already matched (or were left alone; see ``details``).
        pending_reboot: VM names with changes pending until a reboot.
        rebooted: VM names rebooted to apply pending changes.
        ips: VM name → IPv4 address reported by the guest agent.
        details: Resource → human-readable notes (changed keys, why left alone).
        api_calls: PVE API calls sent, by HTTP method.
        elapsed_s: Wall time of the apply in seconds.
    """

    stack: str
    path: ApplyPath
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pending_reboot: list[str] = field(default_factory=list)
    rebooted: list[str] = field(default_factory=list)
    ips: dict[str, str] = field(default_factory=dict)
    details: dict[str, list[str]] = field(default_factory=dict)
    api_calls: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether anything was created, updated, replaced, deleted or rebooted."""
        return bool(self.created or self.updated or self.replaced or self.deleted
                    or self.rebooted)

    @property
    def api_calls_total(self) -> int:
        """The number of PVE API calls sent, all methods together."""
        return sum(self.api_calls.values())

    def summary(self) -> str:
        """Return a one-line summary for the console.

        Returns:
            E.g. ``"1 created; 3 unchanged (direct path, 4.2s, API calls: GET 40, POST 6)"`` or
            ``"no changes: 4 resources already match the stack (...)"``, with pending reboots.
        """
        if not self.changed:
            head = f"no changes: {len(self.unchanged)} resources already match the stack"
        else:
            parts = [f"{len(v)} {k}" for k, v in (
                ("created", self.created), ("updated", self.updated),
                ("replaced", self.replaced), ("deleted", self.deleted)) if v]
            head = ", ".join(parts) + f"; {len(self.unchanged)} unchanged"
        if self.pending_reboot:
            head += f"; pending reboot: {', '.join(self.pending_reboot)}"
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.api_calls.items()))
        return f"{head} ({self.path} path, {self.elapsed_s:.1f}s, API calls: {calls or 'none'})"

    def record_vm(self, out: VmOutcome) -> None:
        """Add one VM's outcome to the lists, addresses and details.

        Args:
            out: The outcome of :meth:`VmReconciler.ensure`.
        """
        key = f"vm/{out.name}"
        {"created": self.created, "updated": self.updated, "replaced": self.replaced,
         "unchanged": self.unchanged, "deleted": self.deleted}[out.action].append(key)
        if out.ip:
            self.ips[out.name] = out.ip
        if out.pending_reboot:
            self.pending_reboot.append(out.name)
            self.details.setdefault(key, []).append(
                "pending reboot: " + ", ".join(out.pending_reboot))
        if out.rebooted:
            self.rebooted.append(out.name)
        if out.changes and out.action == "updated":
            self.details.setdefault(key, []).extend(out.changes)


class ApplyFailed(ProxmoxError):
    """Some resources failed; the others were applied. ``result`` says what did happen.

    Args:
        failures: Resource name (``vm/<name>``) → the error that stopped it.
        result: What the apply or destroy did before and besides the failures.
    """

    def __init__(self, failures: dict[str, Exception], result: ApplyResult) -> None:
        self.failures = failures
        self.result = result
        lines = [f"  {name}: {exc}" for name, exc in failures.items()]
        super().__init__(
            f"provisioning of stack {result.stack} failed for {len(failures)} resource(s):\n"
            + "\n".join(lines),
            hint="fix the cause above and re-run: completed resources are not redone")


def apply_plan(plan: Plan, client: PveClient, *, parallelism: int = 4,
               reboot_policy: Literal["never", "when-required"] = "never",
               task_timeout_s: float = 900.0, record: ProvisionRecord | None = None,
               progress: Callable[[str, str], None] | None = None,
               prune: bool = True) -> ApplyResult:
    """Apply a plan directly: mappings (preflight first), then VMs in parallel, then pruning.

    The hardware preflight runs before anything changes. Running VMs that use a mapping whose
    devices changed are reported as pending reboot (PVE resolves a mapping at VM start). Pruning
    (VMs tagged for the stack but no longer planned, mappings the record lists but the plan does
    not) runs only when every VM succeeded.

    Args:
        plan: The stack's plan.
        client: The PVE session (its call counters are reset).
        parallelism: VMs reconciled at once (at least 1).
        reboot_policy: ``never`` reports pending reboots; ``when-required`` reboots through the
            API, one VM at a time.
        task_timeout_s: Timeout of each PVE task, in seconds.
        record: The provisioning record to read and update, or ``None``.
        progress: Called as ``progress(resource_name, step)``.
        prune: Whether to delete what the stack owns but no longer plans.

    Returns:
        What was done, with API call counts and elapsed seconds.

    Raises:
        PreflightError: A mapping entry failed the hardware preflight; nothing was changed.
        OwnershipError: A planned mapping exists and is not this stack's.
        ProxmoxError: A mapping or prune call failed.
        ApplyFailed: One or more VMs failed (its ``result`` holds what the others did).
        KeyboardInterrupt: Ctrl-C during the VMs: none is started any more, those in flight
            finish their PVE task, the others are reported "not started"; a re-run converges.
    """
    started = time.monotonic()
    client.reset_counts()
    result = ApplyResult(stack=plan.stack, path="direct")
    report = progress or (lambda _n, _s: None)
    mr = MappingReconciler(client, recorded=record.mappings() if record is not None else ())
    measured = mr.measure(plan.pci_mappings)  # PreflightError before anything changes
    remapped: list[str] = []
    for spec in plan.pci_mappings:
        out = mr.ensure(spec, measured[spec.id])
        key = f"pci-mapping/{spec.id}"
        {"created": result.created, "updated": result.updated,
         "unchanged": result.unchanged}[out.action].append(key)
        if out.changes and out.action == "updated":
            result.details[key] = out.changes
            if "map" in out.changes:
                remapped.append(spec.id)
        if record is not None:
            record.put_mapping(spec.id)
    vr = VmReconciler(client, task_timeout_s=task_timeout_s, reboot_policy=reboot_policy,
                      progress=report)
    if record is not None:
        vr.before_clone = record.put_vm
    vr.index(refresh=True)
    failures: dict[str, Exception] = {}

    def one(spec: GpuVmSpec) -> VmOutcome:
        recorded = record.vm(spec.vmid) if record is not None else None
        try:
            out = vr.ensure(spec, recorded=recorded)
        except OwnershipError:
            raise  # someone else's VM at that vmid: never recorded as ours
        except Exception:
            if record is not None and recorded is None:
                record.put_vm(spec)
            raise
        if record is not None:
            record.put_vm(spec)
        return out

    def done(vm: GpuVmSpec, fut: Future[VmOutcome]) -> None:
        try:
            result.record_vm(fut.result())
        except Exception as exc:
            failures[f"vm/{vm.name}"] = exc
            report(vm.name, f"failed: {str(exc).splitlines()[0]}")

    _run_parallel(plan.vms, one, parallelism, done,
                  cancelled=lambda vm: report(vm.name, "not started (interrupted)"))
    if remapped:
        _mapping_reboots(remapped, vr, mr, result, report)
    if prune and not failures:
        _prune(plan, vr, mr, record, result, report)
    result.api_calls = client.call_counts()
    result.elapsed_s = time.monotonic() - started
    for lst in (result.created, result.updated, result.replaced, result.unchanged):
        lst.sort()
    if failures:
        raise ApplyFailed(failures, result)
    return result


def _mapping_reboots(remapped: list[str], vr: VmReconciler, mr: MappingReconciler,
                     result: ApplyResult, report: Callable[[str, str], None]) -> None:
    """Report running VMs that use a remapped mapping as pending reboot.

    They keep the old device until they restart (PVE resolves a mapping at VM start).
    """
    running = {int(v): str(e.get("status")) for v, e in vr.index(refresh=True).items()}
    for mid in remapped:
        for name, vmid, _node in mr.user_vms(mid):
            if running.get(vmid) != "running":
                continue
            if name not in result.pending_reboot:
                result.pending_reboot.append(name)
            result.details.setdefault(f"vm/{name}", []).append(
                f"pending reboot: PCI mapping {mid} changed")
            report(name, f"pending reboot: PCI mapping {mid} changed")


def _delete_mapping(mr: MappingReconciler, mid: str, tag: str, result: ApplyResult,
                    record: ProvisionRecord | None) -> None:
    """Delete one mapping if this stack owns it and no VM uses it; otherwise say why not."""
    key = f"pci-mapping/{mid}"
    try:
        if mr.delete(mid, tag):
            result.deleted.append(key)
    except OwnershipError as exc:
        result.details.setdefault(key, []).append(f"left alone: {exc.message}")
    except ProxmoxError as exc:
        if "still used by" not in exc.message:
            raise
        result.details.setdefault(key, []).append(f"kept: {exc.message}")
        return  # still ours: stays in the record, a later run deletes it
    if record is not None:
        record.drop_mapping(mid)


def _prune(plan: Plan, vr: VmReconciler, mr: MappingReconciler,
           record: ProvisionRecord | None, result: ApplyResult,
           report: Callable[[str, str], None]) -> None:
    """Delete VMs the stack owns but no longer wants, then mappings it made and left."""
    wanted = {s.vmid for s in plan.vms}
    tag = plan.owner_tag
    for vmid, entry in sorted(vr.index().items()):
        if vmid in wanted or tag.lower() not in parse_tags(entry.get("tags")):
            continue
        name = str(entry.get("name", vmid))
        report(name, "delete (left the stack)")
        vr.delete(vmid, tag, name=name)
        result.deleted.append(f"vm/{name}")
        if record is not None:
            record.drop_vm(vmid)
    if record is not None:
        keep = {m.id for m in plan.pci_mappings}
        for mid in record.mappings():
            if mid not in keep:
                _delete_mapping(mr, mid, tag, result, record)


def destroy_plan(plan: Plan, client: PveClient, *, parallelism: int = 4,
                 task_timeout_s: float = 900.0, record: ProvisionRecord | None = None,
                 progress: Callable[[str, str], None] | None = None) -> ApplyResult:
    """Delete every VM the stack owns (graceful shutdown → stop → destroy/purge), then its mappings.

    VMs at planned VMIDs that the stack does not own are left alone and reported as unchanged;
    mappings are deleted only when every VM was, and only those the stack owns and no VM uses.

    Args:
        plan: The stack's plan.
        client: The PVE session (its call counters are reset).
        parallelism: VMs deleted at once (at least 1).
        task_timeout_s: Timeout of each PVE task, in seconds.
        record: The provisioning record to read and update, or ``None``.
        progress: Called as ``progress(resource_name, step)``.

    Returns:
        What was deleted and left alone, with API call counts and elapsed seconds.

    Raises:
        ProxmoxError: A mapping delete failed for another reason than "still used".
        ApplyFailed: One or more VMs could not be deleted.
        KeyboardInterrupt: Ctrl-C during the deletes: none is started any more, those in flight
            finish their PVE task, the others are reported "not started".
    """
    started = time.monotonic()
    client.reset_counts()
    result = ApplyResult(stack=plan.stack, path="direct")
    report = progress or (lambda _n, _s: None)
    vr = VmReconciler(client, task_timeout_s=task_timeout_s, progress=report)
    tag = plan.owner_tag
    descriptions = {s.vmid: str(s.config.get("description", "")) for s in plan.vms}
    names = {s.vmid: s.name for s in plan.vms}
    targets: dict[int, str] = {}
    for vmid, entry in vr.index(refresh=True).items():
        if tag.lower() in parse_tags(entry.get("tags")) or vmid in names:
            targets[vmid] = names.get(vmid, str(entry.get("name", vmid)))
    failures: dict[str, Exception] = {}

    def one(vmid: int) -> bool:
        try:
            return vr.delete(vmid, tag, descriptions.get(vmid), name=targets[vmid],
                             recorded=record is not None and record.vm(vmid) is not None)
        except OwnershipError as exc:
            key = f"vm/{targets[vmid]}"
            result.unchanged.append(key)
            result.details[key] = [f"not owned by stack {plan.stack}; left alone ({exc.message})"]
            return False

    def done(vmid: int, fut: Future[bool]) -> None:
        try:
            if fut.result():
                result.deleted.append(f"vm/{targets[vmid]}")
                report(targets[vmid], "deleted")
            if record is not None:
                record.drop_vm(vmid)
        except Exception as exc:
            failures[f"vm/{targets[vmid]}"] = exc

    _run_parallel(list(targets), one, parallelism, done,
                  cancelled=lambda vmid: report(targets[vmid], "not started (interrupted)"))
    if not failures:
        mr = MappingReconciler(client, recorded=record.mappings() if record else ())
        ids = [m.id for m in plan.pci_mappings] + (record.mappings() if record else [])
        for mid in dict.fromkeys(ids):
            _delete_mapping(mr, mid, tag, result, record)
    result.deleted.sort()
    result.api_calls = client.call_counts()
    result.elapsed_s = time.monotonic() - started
    if failures:
        raise ApplyFailed(failures, result)
    return result


def _run_parallel(items: Iterable[T], fn: Callable[[T], R], parallelism: int,
                  done: Callable[[T, Future[R]], None], *,
                  cancelled: Callable[[T], None]) -> None:
    """Run ``fn`` over ``items`` on at most ``parallelism`` threads.

    ``done`` is called per item as it finishes (in the calling thread). On an interrupt (Ctrl-C)
    or any other exception in the calling thread nothing new starts: items not yet begun are
    dropped (``cancelled`` is called for each, so the caller can say they were left), the ones
    already running finish their PVE task (a task PVE has started cannot be taken back half-way;
    this waits for them), and the exception propagates. A re-run converges.
    """
    todo = list(items)
    state = threading.Condition()
    began: set[int] = set()
    running = 0
    stop = False

    def guarded(i: int) -> R | None:
        nonlocal running
        with state:
            if stop:
                return None
            began.add(i)
            running += 1
        try:
            return fn(todo[i])
        finally:
            with state:
                running -= 1
                state.notify_all()

    pool = ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="skyrig-pve")
    futures: dict[Future[R], int] = {}
    try:
        for i in range(len(todo)):
            futures[pool.submit(guarded, i)] = i  # type: ignore[arg-type]
        for fut in as_completed(futures):
            done(todo[futures[fut]], fut)
    except BaseException:
        with state:
            stop = True
        pool.shutdown(wait=False, cancel_futures=True)
        with state:
            state.wait_for(lambda: running == 0)
        for i, item in enumerate(todo):
            if i not in began:
                cancelled(item)
        raise
    pool.shutdown(wait=True)


def preview_plan(plan: Plan, client: PveClient) -> dict[str, list[str]]:
    """Return a read-only drift view: what an apply would change, per resource.

    Args:
        plan: The stack's plan.
        client: The PVE session; only reads are sent.

    Returns:
        ``pci-mapping/<id>`` / ``vm/<name>`` → changes: changed fields (``["*"]`` for a missing
        mapping), ``["create"]`` for a missing VM, ``"<key> (<kind>)"`` per VM change and a
        ``pending reboot: ...`` note; an empty list means in sync.

    Raises:
        PreflightError: A mapping entry failed the hardware preflight.
        ProxmoxError: A read failed.
    """
    out: dict[str, list[str]] = {}
    mr = MappingReconciler(client)
    measured = mr.measure(plan.pci_mappings)
    for spec in plan.pci_mappings:
        out[f"pci-mapping/{spec.id}"] = mr.diff(spec, measured[spec.id])
    vr = VmReconciler(client)
    vr.index(refresh=True)
    for vm in plan.vms:
        state = vr.read(vm.vmid)
        d = vr.plan(vm, state)
        if d is None:
            out[f"vm/{vm.name}"] = ["create"]
        else:
            out[f"vm/{vm.name}"] = [f"{c.key} ({c.kind})" for c in d.changes] + (
                [f"pending reboot: {', '.join(state.pending_keys)}"]
                if state is not None and state.running and state.pending_keys else [])
    return out
