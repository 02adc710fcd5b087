"""Cross-field validation of a stack: rules that relate several keys or sections.

Each check gets the sections that passed field validation (``None`` for one that did not) and the
source (for lines), and yields :class:`ConfigIssue` objects; a check whose sections are missing is
skipped, so every problem that can be found is reported in one run.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyrig.config.compat import gpu_model, matrix, minor, version_tuple
from skyrig.config.model import (
    Governance,
    GpuStack,
    GpuVm,
    Kubernetes,
    Network,
    Node,
    PciMapping,
    ProxmoxEndpoint,
    Ray,
    VmClass,
    Workload,
)
from skyrig.config.source import StackSource
from skyrig.errors import ConfigIssue

MAX_HOSTPCI = 16


@dataclass
class Sections:
    """Validated sections of a stack file; ``None`` where field validation failed.

    Attributes mirror the ``skyrig:`` keys of the stack file (docs/stack-reference.md):
    ``environment``, ``proxmox``, ``network``, ``nodes``, ``pci_mappings``, ``vm_classes``,
    ``vms``, ``gpu_stack``, ``kubernetes``, ``ray``, ``workload``, ``governance``, ``cloud_init``,
    ``monitoring`` and ``platform``.
    """

    environment: str | None
    proxmox: ProxmoxEndpoint | None
    network: Network | None
    nodes: list[Node] | None
    pci_mappings: list[PciMapping] | None
    vm_classes: dict[str, VmClass] | None
    vms: list[GpuVm] | None
    gpu_stack: GpuStack | None
    kubernetes: Kubernetes | None
    ray: Ray | None
    workload: Workload | None
    governance: Governance | None
    cloud_init: Any
    monitoring: Any
    platform: Any = None


Check = Callable[[Sections, StackSource, Path], Iterator[ConfigIssue]]
CHECKS: list[Check] = []
#: Warnings (:func:`advice`): checks whose issues do not fail validation.
ADVICE: list[Check] = []


def check(fn: Check) -> Check:
    """Register a cross-field check (decorator); :func:`run_checks` runs them in order.

    Args:
        fn: A :data:`Check`: ``fn(sections, source, root)`` yielding :class:`ConfigIssue`.

    Returns:
        ``fn`` itself.
    """
    CHECKS.append(fn)
    return fn


def _dupes(items: list[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    seen: dict[Any, int] = {}
    for idx, value in items:
        if value in seen:
            yield idx, value
        else:
            seen[value] = idx


@check
def unique_vms(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that VM ids, names and addresses are unique and no VM takes a template's VMID.

    VMIDs are cluster-wide in PVE (a template is a VM too).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        One issue per duplicate at ``vms[i].vmid|name|ip``, naming the first holder.
    """
    if s.vms is None:
        return
    for attr in ("vmid", "name", "ip"):
        values = [(i, getattr(vm, attr)) for i, vm in enumerate(s.vms)]
        for idx, value in _dupes(values):
            first = next(i for i, v in values if v == value)
            yield src.issue(
                ("vms", idx, attr),
                f"duplicate {attr} {value} (also vms[{first}])",
                f"give every VM its own {attr}",
            )
    if s.nodes is not None:
        templates = {n.template_vmid: n.name for n in s.nodes}
        for i, vm in enumerate(s.vms):
            if vm.vmid in templates:
                yield src.issue(
                    ("vms", i, "vmid"),
                    f"vmid {vm.vmid} is the template of node {templates[vm.vmid]}",
                    "pick a vmid that no template or VM uses",
                )


@check
def unique_nodes_and_mappings(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that nodes, templates, GPU slots and mapping ids are unique and GPUs are known.

    Also: a node with GPUs needs ``iommu: true``; GPU models must be in the compatibility matrix.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``nodes[i].name|template_vmid|iommu``, ``nodes[i].gpus[j].path|model`` and
        ``pci_mappings[i].id``.
    """
    if s.nodes is not None:
        for idx, name in _dupes([(i, n.name) for i, n in enumerate(s.nodes)]):
            yield src.issue(
                ("nodes", idx, "name"), f"duplicate node {name}", "node names are unique"
            )
        for idx, vmid in _dupes([(i, n.template_vmid) for i, n in enumerate(s.nodes)]):
            yield src.issue(
                ("nodes", idx, "template_vmid"),
                f"template vmid {vmid} is used by two nodes",
                "each node has its own template (vmids are cluster-wide)",
            )
        for i, node in enumerate(s.nodes):
            for j, path in _dupes([(j, g.path) for j, g in enumerate(node.gpus)]):
                yield src.issue(
                    ("nodes", i, "gpus", j, "path"),
                    f"GPU {path} listed twice on {node.name}",
                    "remove the duplicate",
                )
            for j, gpu in enumerate(node.gpus):
                if gpu_model(gpu.model) is None:
                    yield src.issue(
                        ("nodes", i, "gpus", j, "model"),
                        f"unknown GPU model {gpu.model!r}",
                        f"use one of {sorted(matrix()['gpu_models'])}",
                    )
            if node.gpus and not node.iommu:
                yield src.issue(
                    ("nodes", i, "iommu"),
                    f"node {node.name} has GPUs but iommu: false",
                    "passthrough needs IOMMU: run playbooks/host-prep.yml and set true",
                )
    if s.pci_mappings is not None:
        for idx, mid in _dupes([(i, m.id) for i, m in enumerate(s.pci_mappings)]):
            yield src.issue(
                ("pci_mappings", idx, "id"),
                f"duplicate mapping id {mid}",
                "mapping ids are cluster-wide and unique",
            )


@check
def mappings_match_hardware(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that every PCI mapping entry points at a declared GPU of the mapping's model.

    PVE allows one entry per node in a cluster PCI mapping (PVE API ``/cluster/mapping/pci``).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``pci_mappings[i].model`` and ``pci_mappings[i].entries[j].node|path``.
    """
    if s.pci_mappings is None or s.nodes is None:
        return
    nodes = {n.name: n for n in s.nodes}
    for i, mapping in enumerate(s.pci_mappings):
        if gpu_model(mapping.model) is None:
            yield src.issue(
                ("pci_mappings", i, "model"),
                f"unknown GPU model {mapping.model!r}",
                f"use one of {sorted(matrix()['gpu_models'])}",
            )
        for j, node_name in _dupes([(j, e.node) for j, e in enumerate(mapping.entries)]):
            yield src.issue(
                ("pci_mappings", i, "entries", j, "node"),
                f"mapping {mapping.id} has two entries for node {node_name}",
                "PVE allows one entry per node in a mapping",
            )
        for j, entry in enumerate(mapping.entries):
            node = nodes.get(entry.node)
            where = ("pci_mappings", i, "entries", j)
            if node is None:
                yield src.issue(
                    (*where, "node"),
                    f"node {entry.node} is not in skyrig:nodes",
                    f"use one of {sorted(nodes)}",
                )
                continue
            gpus = {g.path: g for g in node.gpus}
            gpu = gpus.get(entry.path)
            if gpu is None:
                yield src.issue(
                    (*where, "path"),
                    f"{node.name} has no GPU at {entry.path}",
                    f"GPUs on {node.name}: {sorted(gpus) or 'none'}",
                )
            elif gpu.model != mapping.model:
                yield src.issue(
                    (*where, "path"),
                    f"GPU at {entry.path} is a {gpu.model}, mapping says {mapping.model}",
                    "make the mapping's model match the card",
                )


@check
def vm_references(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that each VM's node, class and PCI mappings exist and fit.

    A VM may have at most 16 ``hostpciN`` devices (pve-docs qm.conf ``hostpci[n]``, n 0-15) and
    only mappings with an entry on its node.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``vms[i].node|class|gpus`` and ``vms[i].gpus[j]``.
    """
    if s.vms is None:
        return
    nodes = {n.name: n for n in s.nodes} if s.nodes is not None else None
    mappings = {m.id: m for m in s.pci_mappings} if s.pci_mappings is not None else None
    for i, vm in enumerate(s.vms):
        if nodes is not None and vm.node not in nodes:
            yield src.issue(
                ("vms", i, "node"),
                f"VM {vm.name}: node {vm.node} is not in skyrig:nodes",
                f"use one of {sorted(nodes)}",
            )
        if s.vm_classes is not None and vm.vm_class not in s.vm_classes:
            yield src.issue(
                ("vms", i, "class"),
                f"VM {vm.name}: unknown class {vm.vm_class!r}",
                f"define it under skyrig:vm_classes or use one of {sorted(s.vm_classes)}",
            )
        if len(vm.gpus) > MAX_HOSTPCI:
            yield src.issue(
                ("vms", i, "gpus"),
                f"{len(vm.gpus)} GPUs; PVE allows {MAX_HOSTPCI}",
                "split the GPUs over several VMs",
            )
        for j, mid in enumerate(vm.gpus):
            if mappings is None:
                break
            mapping = mappings.get(mid)
            if mapping is None:
                yield src.issue(
                    ("vms", i, "gpus", j),
                    f"VM {vm.name}: PCI mapping {mid!r} not defined",
                    f"define it under skyrig:pci_mappings (known: {sorted(mappings)})",
                )
            elif vm.node not in {e.node for e in mapping.entries}:
                yield src.issue(
                    ("vms", i, "gpus", j),
                    f"VM {vm.name} runs on {vm.node} but mapping {mid} has no entry there",
                    f"add an entry for {vm.node} to {mid} or use a mapping of {vm.node}",
                )


@check
def gpus_not_shared(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that each physical GPU (node and slot) is passed to one VM, once.

    A PCI device can be attached to one running VM only (pve-docs qm "PCI(e) Passthrough").

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``vms[i].gpus[j]`` naming the VM that already has the card.
    """
    if s.vms is None or s.pci_mappings is None:
        return
    mappings = {m.id: m for m in s.pci_mappings}
    owner: dict[tuple[str, str], str] = {}
    for i, vm in enumerate(s.vms):
        for j, mid in enumerate(vm.gpus):
            mapping = mappings.get(mid)
            if mapping is None:
                continue
            for entry in mapping.entries:
                if entry.node != vm.node:
                    continue
                key = (entry.node, entry.path)
                if key in owner and owner[key] != vm.name:
                    yield src.issue(
                        ("vms", i, "gpus", j),
                        f"GPU {entry.path} on {entry.node} is already assigned to {owner[key]}",
                        "assign each card to one VM only",
                    )
                elif key in owner:
                    yield src.issue(
                        ("vms", i, "gpus", j),
                        f"GPU {entry.path} on {entry.node} listed twice for {vm.name}",
                        "remove the duplicate",
                    )
                owner[key] = vm.name


def effective(vm: GpuVm, cls: VmClass) -> tuple[int, int, int]:
    """Return a VM's resources after class defaults and per-VM overrides.

    Args:
        vm: The VM.
        cls: Its VM class.

    Returns:
        ``(cores per socket, memory in MiB, boot disk in GiB)``.
    """
    return (vm.cores or cls.cores, vm.memory_mib or cls.memory_mib, vm.disk_gib or cls.disk_gib)


@check
def capacity(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that VMs fit their nodes: vCPUs per VM and pinned memory per node.

    GPU VMs pin all their RAM (VFIO), so the sum of VM memory on a node must fit its memory
    minus ``reserved_memory_mib`` (MiB).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``vms[i].cores|class`` (too many vCPUs) and at the last VM of an
        over-committed node.
    """
    if s.vms is None or s.nodes is None or s.vm_classes is None:
        return
    nodes = {n.name: n for n in s.nodes}
    used: dict[str, int] = defaultdict(int)
    last: dict[str, int] = {}
    for i, vm in enumerate(s.vms):
        node, cls = nodes.get(vm.node), s.vm_classes.get(vm.vm_class)
        if node is None or cls is None:
            continue
        cores, mem, _ = effective(vm, cls)
        if cores * cls.sockets > node.cores:
            key = "cores" if vm.cores else "class"
            yield src.issue(
                ("vms", i, key),
                f"VM {vm.name} wants {cores * cls.sockets} vCPUs, {node.name} has {node.cores}",
                "lower cores or move the VM",
            )
        used[vm.node] += mem
        last[vm.node] = i
    for name, total in used.items():
        node = nodes[name]
        free = node.memory_mib - node.reserved_memory_mib
        if total > free:
            yield src.issue(
                ("vms", last[name]),
                f"VMs on {name} need {total} MiB; {free} MiB is available"
                f" ({node.memory_mib} minus {node.reserved_memory_mib} reserved;"
                " GPU VMs pin all their RAM)",
                "lower memory_mib or move VMs to another node",
            )


@check
def passthrough_settings(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that VM classes used by GPU VMs have passthrough-capable settings.

    Per pve-docs qm "PCI(e) Passthrough": ``machine: q35`` (needed for ``pcie=1``), ``bios:
    ovmf`` with an EFI disk, ``cpu: host`` and no ballooning (VFIO pins all guest RAM).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``vm_classes.<class>.pcie|machine|bios|efi_disk|cpu|balloon_mib``.
    """
    if s.vms is None or s.vm_classes is None:
        return
    for vm in s.vms:
        cls = s.vm_classes.get(vm.vm_class)
        if cls is None:
            continue
        where = ("vm_classes", vm.vm_class)
        if cls.pcie and cls.machine != "q35" and vm.gpus:
            yield src.issue(
                (*where, "pcie"),
                f"pcie: true needs machine q35 (VM {vm.name})",
                "set machine: q35, or pcie: false",
            )
        if not vm.gpus:
            continue
        needs = [
            (cls.machine == "q35", "machine", "passthrough VMs use machine: q35"),
            (cls.bios == "ovmf", "bios", "passthrough VMs use bios: ovmf (UEFI GPU ROM)"),
            (cls.efi_disk, "efi_disk", "OVMF needs an EFI disk: set efi_disk: true"),
            (cls.cpu == "host", "cpu", "passthrough VMs use cpu: host (CUDA/JAX need it)"),
            (
                cls.balloon_mib == 0,
                "balloon_mib",
                "ballooning must be off (balloon_mib: 0): VFIO pins all guest RAM",
            ),
        ]
        for ok, key, hint in needs:
            if not ok:
                yield src.issue(
                    (*where, key),
                    f"class {vm.vm_class} is used by GPU VM {vm.name}"
                    f" but has {key}: {getattr(cls, key)}",
                    hint,
                )


@check
def network(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check the guest network: gateway and VM addresses in the subnet, no overlap with k8s ranges.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``network.gateway``, ``vms[i].ip`` (outside the subnet, or its network,
        broadcast or gateway address) and ``kubernetes.pod_cidr|service_cidr``.
    """
    if s.network is None:
        return
    net = s.network.subnet
    if s.network.gateway not in net:
        yield src.issue(
            ("network", "gateway"),
            f"gateway {s.network.gateway} is outside {net}",
            "use an address inside the subnet",
        )
    if s.vms is not None:
        for i, vm in enumerate(s.vms):
            if vm.ip not in net:
                yield src.issue(
                    ("vms", i, "ip"),
                    f"VM {vm.name}: {vm.ip} is outside {net}",
                    f"use a free address in {net}",
                )
            elif vm.ip in (net.network_address, net.broadcast_address, s.network.gateway):
                yield src.issue(
                    ("vms", i, "ip"),
                    f"VM {vm.name}: {vm.ip} is the network, broadcast or gateway address",
                    "use a host address",
                )
    if s.kubernetes is not None and s.kubernetes.enabled:
        for key in ("pod_cidr", "service_cidr"):
            cidr: ipaddress.IPv4Network = getattr(s.kubernetes, key)
            if cidr.overlaps(net):
                yield src.issue(
                    ("kubernetes", key),
                    f"{cidr} overlaps the guest subnet {net}",
                    "choose a range that does not overlap",
                )


@check
def versions(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check versions against the compatibility matrix (``compatibility.yaml``).

    Covers CUDA vs NVIDIA driver minimum (CUDA Toolkit release notes, toolkit-to-driver table),
    Debian driver branches, container toolkit, torch/jax CUDA builds, Ray vs KubeRay and KubeRay/k3s
    vs Kubernetes minor versions.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``gpu_stack.*``, ``workload.torch_version|jax_version``,
        ``ray.version|kuberay_version`` and ``kubernetes.version``.
    """
    m = matrix()
    g = s.gpu_stack
    if g is not None:
        cuda = m["cuda"].get(g.cuda_version)
        if cuda is None:
            yield src.issue(
                ("gpu_stack", "cuda_version"),
                f"CUDA {g.cuda_version} is not supported",
                f"use one of {sorted(m['cuda'])}",
            )
        elif g.driver_source == "cuda_repo" and version_tuple(g.driver_version) < version_tuple(
            cuda["min_driver"]
        ):
            yield src.issue(
                ("gpu_stack", "driver_version"),
                f"driver {g.driver_version} is older than CUDA {g.cuda_version} needs"
                f" ({cuda['min_driver']})",
                "raise the driver or lower CUDA",
            )
        if g.driver_source == "debian":
            branch = g.driver_version.split(".")[0]
            info = m["debian_driver_branches"].get(branch)
            if info is None:
                yield src.issue(
                    ("gpu_stack", "driver_version"),
                    f"Debian has no nvidia-driver branch {branch}",
                    f"use one of {sorted(m['debian_driver_branches'])} or cuda_repo",
                )
            elif version_tuple(g.cuda_version) > version_tuple(info["max_cuda"]):
                yield src.issue(
                    ("gpu_stack", "cuda_version"),
                    f"Debian driver {branch} supports CUDA up to {info['max_cuda']}",
                    "use driver_source: cuda_repo or a lower CUDA",
                )
        if g.container_toolkit_version not in m["container_toolkit"]:
            yield src.issue(
                ("gpu_stack", "container_toolkit_version"),
                f"container toolkit {g.container_toolkit_version} is not supported",
                f"use one of {m['container_toolkit']}",
            )
    w = s.workload
    if w is not None:
        for fw in ("torch", "jax"):
            ver = getattr(w, f"{fw}_version")
            info = m[fw].get(ver)
            if info is None:
                yield src.issue(
                    ("workload", f"{fw}_version"),
                    f"{fw} {ver} is not supported",
                    f"use one of {sorted(m[fw])}",
                )
            elif (
                g is not None and g.cuda_version in m["cuda"] and g.cuda_version not in info["cuda"]
            ):
                yield src.issue(
                    ("workload", f"{fw}_version"),
                    f"{fw} {ver} has no build for CUDA {g.cuda_version}",
                    f"CUDA builds of {fw} {ver}: {info['cuda']}",
                )
    r = s.ray
    if r is not None:
        rinfo = m["ray"].get(r.version)
        if rinfo is None:
            yield src.issue(
                ("ray", "version"),
                f"Ray {r.version} is not supported",
                f"use one of {sorted(m['ray'])}",
            )
        if r.mode == "kuberay":
            if r.kuberay_version not in m["kuberay"]:
                yield src.issue(
                    ("ray", "kuberay_version"),
                    f"KubeRay {r.kuberay_version} is not supported",
                    f"use one of {sorted(m['kuberay'])}",
                )
            elif rinfo is not None and r.kuberay_version not in rinfo["kuberay"]:
                yield src.issue(
                    ("ray", "kuberay_version"),
                    f"KubeRay {r.kuberay_version} does not support Ray {r.version}",
                    f"KubeRay versions for Ray {r.version}: {rinfo['kuberay']}",
                )
            k = s.kubernetes
            if k is not None and r.kuberay_version in m["kuberay"]:
                kmin = minor(k.version)
                if kmin not in m["kuberay"][r.kuberay_version]["kubernetes"]:
                    yield src.issue(
                        ("kubernetes", "version"),
                        f"Kubernetes {kmin} is not supported by KubeRay {r.kuberay_version}",
                        f"use one of {m['kuberay'][r.kuberay_version]['kubernetes']}",
                    )
    k = s.kubernetes
    if k is not None and k.enabled and minor(k.version) not in m["kubernetes"][k.distribution]:
        yield src.issue(
            ("kubernetes", "version"),
            f"{k.distribution} {minor(k.version)} is not supported",
            f"use one of {m['kubernetes'][k.distribution]}",
        )


@check
def roles(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check VM roles against Kubernetes and Ray settings.

    An odd number of control-plane VMs (etcd quorum, Kubernetes docs "Operating etcd clusters for
    Kubernetes"); exactly one ``ray_head`` for ``ray.mode: vm``; distinct Ray ports, clear of the
    two ports a local head derives from ``head_port``; GPU worker bounds that fit the GPU VMs.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``kubernetes.enabled``, ``vms[i].roles[j]`` and ``ray.*``.
    """
    if s.vms is None:
        return
    count = Counter(role for vm in s.vms for role in vm.roles)
    k, r = s.kubernetes, s.ray
    if k is not None:
        if k.enabled and not count["kube_control_plane"]:
            yield src.issue(
                ("kubernetes", "enabled"),
                "Kubernetes is enabled but no VM has role kube_control_plane",
                "give one or three VMs kube_control_plane",
            )
        if k.enabled and count["kube_control_plane"] % 2 == 0 and count["kube_control_plane"]:
            yield src.issue(
                ("kubernetes", "enabled"),
                f"{count['kube_control_plane']} control-plane"
                " VMs: etcd needs an odd number for quorum",
                "use 1, 3 or 5",
            )
        if not k.enabled:
            for i, vm in enumerate(s.vms):
                for j, role in enumerate(vm.roles):
                    if role.startswith("kube_"):
                        yield src.issue(
                            ("vms", i, "roles", j),
                            f"VM {vm.name} has role {role} but kubernetes.enabled is false",
                            "enable Kubernetes or remove the role",
                        )
    if r is not None:
        if r.mode == "kuberay" and k is not None and not k.enabled:
            yield src.issue(
                ("ray", "mode"),
                "ray.mode kuberay needs kubernetes.enabled: true",
                "enable Kubernetes or use ray.mode: local / vm",
            )
        if r.mode == "vm" and count["ray_head"] != 1:
            yield src.issue(
                ("ray", "mode"),
                f"ray.mode vm needs exactly one VM with role ray_head ({count['ray_head']} found)",
                "give one VM the ray_head role",
            )
        if r.mode != "vm" and count["ray_head"]:
            yield src.issue(
                ("ray", "mode"),
                f"ray_head VMs only make sense with ray.mode vm (mode is {r.mode})",
                "remove the role or set ray.mode: vm",
            )
        if r.gpu_workers_min > r.gpu_workers_max:
            yield src.issue(
                ("ray", "gpu_workers_min"),
                "gpu_workers_min > gpu_workers_max",
                "min must not exceed max",
            )
        ports = [
            ("head_port", r.head_port),
            ("dashboard_port", r.dashboard_port),
            ("metrics_export_port", r.metrics_export_port),
        ]
        for idx, port in _dupes(list(enumerate(p for _, p in ports))):
            yield src.issue(
                ("ray", ports[idx][0]), f"port {port} is used twice", "use distinct ports"
            )
        if r.mode == "local":
            for key, port in ports[1:]:
                if r.head_port < port <= r.head_port + 2:
                    yield src.issue(
                        ("ray", key),
                        f"port {port} collides with the ports a local head derives from"
                        f" head_port {r.head_port} (agent {r.head_port + 1}, client"
                        f" server {r.head_port + 2})",
                        "move it out of head_port..head_port+2",
                    )
        if s.vms is not None and r.mode == "kuberay":
            gpu_vms = sum(1 for vm in s.vms if vm.gpus)
            if r.gpu_workers_max > gpu_vms * max(1, r.gpus_per_worker):
                yield src.issue(
                    ("ray", "gpu_workers_max"),
                    f"{r.gpu_workers_max} GPU workers but only {gpu_vms} GPU VMs",
                    "lower gpu_workers_max or add GPU VMs",
                )


@check
def environment_rules(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check rules that depend on the environment (``local``, ``prod``).

    Prod verifies TLS and has SSH keys; local runs against the embedded pvesim.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``proxmox.verify_tls|endpoint`` and ``cloud_init.ssh_keys``.
    """
    p = s.proxmox
    if p is None:
        return
    if s.environment == "prod" and not p.verify_tls:
        yield src.issue(
            ("proxmox", "verify_tls"),
            "TLS verification is off in prod",
            "set verify_tls: true and ca_bundle: <path to the cluster CA>",
        )
    if s.environment == "local" and not p.embedded:
        yield src.issue(
            ("proxmox", "endpoint"),
            "the local stack runs against the embedded pvesim",
            "set endpoint: pvesim",
        )
    if s.environment == "prod" and s.cloud_init is not None and not s.cloud_init.ssh_keys:
        yield src.issue(
            ("cloud_init", "ssh_keys"),
            "prod VMs need at least one SSH key",
            "add the operators' public keys",
        )


@check
def workload_release(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that the pinned workload version is released and its release gates file exists.

    A release is a ``## [x.y.z]`` heading of the package's CHANGELOG.md (Keep a Changelog).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``workload.path|version`` and ``governance.release_gates``.
    """
    w = s.workload
    if w is None:
        return
    pkg = root / w.path
    changelog = pkg / "CHANGELOG.md"
    if not changelog.is_file():
        yield src.issue(
            ("workload", "path"),
            f"workload {w.name} not found at {pkg}",
            "point workload.path at the package (it has a CHANGELOG.md)",
        )
        return
    released = re.findall(r"^## \[(\d+\.\d+\.\d+[^\]]*)\]", changelog.read_text("utf-8"), re.M)
    if w.version not in released:
        yield src.issue(
            ("workload", "version"),
            f"{w.name} {w.version} is not a released version",
            f"released versions (CHANGELOG.md): {released or 'none'}",
        )
    if s.governance is not None and not (root / s.governance.release_gates).is_file():
        yield src.issue(
            ("governance", "release_gates"),
            f"release gates file {s.governance.release_gates} not found",
            "point it at the thresholds file of the workload",
        )


#: The workload's record of GPU precisions and their parity status (see the file's header).
PRECISION_RECORD = Path("release") / "precision.yaml"


def precision_status(root: Path, workload_path: str, framework: str,
                     precision: str) -> str | None:
    """Return the workload's parity record for ``precision`` under ``framework``.

    ``verified``/``unverified`` from the workload's :data:`PRECISION_RECORD`, or None when the
    workload does not implement it (or has no record: then only float32 is assumed).
    """
    if precision == "float32":
        return "verified"
    path = root / workload_path / PRECISION_RECORD
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        raw = YAML(typ="safe").load(path.read_text("utf-8"))
    except (OSError, YAMLError):
        return None
    entry = raw.get(framework) if isinstance(raw, dict) else None
    value = entry.get(precision) if isinstance(entry, dict) else None
    return str(value) if value is not None else None


def actors_per_worker(num_gpus_per_actor: float, gpus_per_worker: int) -> int:
    """Return the GPU scorer actors one Ray worker pod holds.

    ``floor(gpus_per_worker / num_gpus)`` (Ray places an actor whole on one node, so
    fractions never add up across pods).
    """
    if num_gpus_per_actor <= 0:
        return 0
    return int(gpus_per_worker / num_gpus_per_actor + 1e-9)


@check
def workload_scoring(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that ``workload.scoring`` fits the rest of the stack.

    GPU scoring needs ``use_gpu``; an
    actor fits one worker pod and all actors fit the worker group (Ray schedules an actor
    only whole on one node); reduced precision only on a GPU and only where the workload
    records parity; no JAX preallocation on a card two actors share (each would take 75 %,
    docs.jax.dev "GPU memory allocation").
    """
    w = s.workload
    if w is None:
        return
    sc = w.scoring
    key = ("workload", "scoring")
    gpus = sc.num_gpus_per_actor
    if gpus > 0 and not w.use_gpu:
        yield src.issue(
            (*key, "num_gpus_per_actor"),
            f"num_gpus_per_actor {gpus:g} asks for GPU scoring but workload.use_gpu is false",
            "set workload.use_gpu: true, or num_gpus_per_actor: 0 to score on CPUs",
        )
    if sc.precision != "float32":
        status = precision_status(root, w.path, w.framework, sc.precision)
        if gpus == 0:
            yield src.issue(
                (*key, "precision"),
                f"precision {sc.precision} applies to GPU scoring only (num_gpus_per_actor 0)",
                "use precision: float32, or score on GPUs",
            )
        elif status is None:
            yield src.issue(
                (*key, "precision"),
                f"{w.name} {w.version} does not implement {sc.precision} scoring with"
                f" {w.framework} (its {PRECISION_RECORD} has no such entry)",
                "use precision: float32",
            )
        elif status != "verified":
            yield src.issue(
                (*key, "precision"),
                f"{w.name} {w.version} has not shown {w.framework} scores at {sc.precision}"
                f" within the parity tolerance ({PRECISION_RECORD}: {status})",
                "use precision: float32, or run benchmarks/gpu_check.sh on a GPU and record"
                " `verified` in the workload's release/precision.yaml",
            )
    if sc.jax_preallocate and w.framework == "jax" and 0 < gpus < 1:
        yield src.issue(
            (*key, "jax_preallocate"),
            f"jax_preallocate with num_gpus_per_actor {gpus:g}: every actor on the card would"
            " take 75 % of its memory at start",
            "set jax_preallocate: false (memory on demand) or give each actor a whole GPU",
        )
    r = s.ray
    if r is None or r.mode != "kuberay" or gpus == 0:
        return
    if gpus > r.gpus_per_worker:
        yield src.issue(
            (*key, "num_gpus_per_actor"),
            f"num_gpus_per_actor {gpus:g} but a GPU worker pod has {r.gpus_per_worker} GPU(s);"
            " Ray places an actor on one node",
            f"lower num_gpus_per_actor to at most {r.gpus_per_worker} or raise"
            " ray.gpus_per_worker",
        )
        return
    room = actors_per_worker(gpus, r.gpus_per_worker) * r.gpu_workers_max
    if sc.concurrency != "auto" and sc.concurrency > room:
        yield src.issue(
            (*key, "concurrency"),
            f"{sc.concurrency} scorer actors x {gpus:g} GPU = {gpus * sc.concurrency:g} GPUs,"
            f" but the GPU worker group holds {room} such actors (ray.gpu_workers_max"
            f" {r.gpu_workers_max} pods x gpus_per_worker {r.gpus_per_worker})",
            f"lower concurrency to {room} or raise ray.gpu_workers_max",
        )
        return


def job_cluster_gpu_pods(s: Sections) -> int:
    """Return the GPU worker pods the RayJob's own RayCluster starts with.

    Mirrors :func:`skyrig.kube.objects.job_cluster_spec`: the worker group of
    :func:`skyrig.kube.objects.ray_cluster_spec` (``ray.gpu_workers_min`` pods) raised to the
    pods the scorer actors need at once (``concurrency: auto`` on GPUs: every pod free next
    to the always-on RayCluster's ``gpu_workers_min``), at most ``gpu_workers_max``.
    """
    r, w = s.ray, s.workload
    assert r is not None and w is not None
    need = scorer_gpu_pods(w, r, s.vms)
    return max(r.gpu_workers_min, min(need, r.gpu_workers_max))


def scorer_gpu_pods(workload: Workload, ray: Ray, vms: list[GpuVm] | None) -> int:
    """Return the GPU worker pods the RayJob's scorer actors need at once.

    ``ceil(concurrency / actors_per_worker)`` (:func:`job_gpu_pods`); 0 for CPU scoring.
    With ``concurrency: auto`` the workload sizes its pool from the resources Ray reports when
    scoring starts, which on an autoscaling cluster are only the pods already up, so the job
    asks for every GPU worker pod free next to the always-on RayCluster's
    ``ray.gpu_workers_min`` (at most ``gpu_workers_max``). The one rule behind both
    :func:`job_cluster_gpu_pods` and :func:`skyrig.plan.workload.scoring_gpu_workers`.
    """
    sc = workload.scoring
    if sc.num_gpus_per_actor > 0 and sc.concurrency == "auto":
        free = gpu_worker_pods(vms, ray.gpus_per_worker) - ray.gpu_workers_min
        return max(0, min(ray.gpu_workers_max, free))
    return job_gpu_pods(sc.concurrency, sc.num_gpus_per_actor, ray.gpus_per_worker)


@check
def rayjob_gpu_pods_fit(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that the RayJob's GPU worker pods fit next to the always-on RayCluster's.

    The RayJob brings its own RayCluster, which starts with :func:`job_cluster_gpu_pods`
    GPU worker pods (at least ``ray.gpu_workers_min``, like any RayCluster of the stack); the
    always-on RayCluster keeps ``gpu_workers_min`` meanwhile. Both draw on the same GPU worker
    VMs (:func:`gpu_worker_pods`), so the sum must fit or the job's pods stay Pending (KubeRay
    submits the job once its cluster is ready). Only for ``ray.mode: kuberay``.

    Yields:
        An issue at ``workload.scoring.concurrency`` (the actors ask for more pods than are
        free) or at ``ray.gpu_workers_min`` (the two minimums alone do not fit).
    """
    r, w = s.ray, s.workload
    if r is None or w is None or s.vms is None or r.mode != "kuberay":
        return
    sc = w.scoring
    gpus = sc.num_gpus_per_actor
    hold = gpu_worker_pods(s.vms, r.gpus_per_worker)
    per_pod = actors_per_worker(gpus, r.gpus_per_worker)
    if hold == 0 or gpus > r.gpus_per_worker or (
            sc.concurrency != "auto" and 0 < per_pod * r.gpu_workers_max < sc.concurrency):
        return  # reported elsewhere: no GPU worker pods, an actor larger than a pod, or more
        # actors than the worker group holds (:func:`workload_scoring`)
    start = job_cluster_gpu_pods(s)
    if start + r.gpu_workers_min <= hold:
        return
    need = job_gpu_pods(sc.concurrency, gpus, r.gpus_per_worker)
    free = hold - r.gpu_workers_min
    ok_min = [m for m in range(hold + 1) if max(need, m) + m <= hold]
    fixes = []
    if need > r.gpu_workers_min and free >= r.gpu_workers_min and free * per_pod > 0:
        fixes.append(f"lower concurrency to {free * per_pod}")
    if ok_min:
        fixes.append(f"lower ray.gpu_workers_min to {max(ok_min)}")
    fixes.append("add GPU worker VMs")
    if need > r.gpu_workers_min:
        yield src.issue(
            ("workload", "scoring", "concurrency"),
            f"the RayJob's {sc.concurrency} scorer actors need {need} GPU worker pod(s) at once,"
            f" next to the {r.gpu_workers_min} the always-on RayCluster keeps"
            f" (ray.gpu_workers_min), but the GPU worker VMs hold {hold} pod(s) of"
            f" {r.gpus_per_worker} GPU(s): the job's pods would stay Pending",
            " or ".join(fixes),
        )
    else:
        yield src.issue(
            ("ray", "gpu_workers_min"),
            f"the RayJob's own RayCluster starts with {start} GPU worker pod(s) (at least"
            f" ray.gpu_workers_min {r.gpu_workers_min}; scoring concurrency {sc.concurrency}),"
            f" next to the {r.gpu_workers_min} the always-on RayCluster keeps, but the GPU"
            f" worker VMs hold {hold} pod(s) of {r.gpus_per_worker} GPU(s): the job's pods"
            " would stay Pending",
            " or ".join(fixes),
        )


def job_gpu_pods(concurrency: int | str, num_gpus_per_actor: float,
                 gpus_per_worker: int) -> int:
    """Return the GPU worker pods a RayJob's scorer actors need at once.

    ``ceil(concurrency / actors_per_worker)``; 0 for CPU scoring or ``concurrency: auto``
    (then the actor pool takes what the cluster has).
    """
    per_pod = actors_per_worker(num_gpus_per_actor, gpus_per_worker)
    if concurrency == "auto" or per_pod == 0:
        return 0
    return math.ceil(int(concurrency) / per_pod)


def _duplicate_inputs(src: StackSource, key: tuple[str, ...], items: list[str],
                      kuberay: bool, root: Path) -> Iterator[ConfigIssue]:
    """Report the paths of ``items`` listed before, however written.

    ``dr1/`` and ``./dr1`` are ``dr1``; for a local job also the absolute path of, or a link
    to, the same place. The job would read their files twice and score the spectra twice.

    Args:
        src: The stack source, for file lines of key paths.
        key: Key path of the list, e.g. ``("workload", "input", "paths")``.
        items: The list's paths as written.
        kuberay: Whether a KubeRay job reads them (on the data volume, not on this machine).
        root: The project root (relative local paths resolve against it).

    Yields:
        One issue at ``key[i]`` per path listed again, naming the first listing.
    """
    def where(item: str) -> str:
        if kuberay:  # read on the data volume: compare the paths as written, normalised
            return posixpath.normpath(item)
        # read on this machine: compare what the path leads to
        path = Path(item) if item.startswith("/") else root / item
        try:
            return str(path.resolve())
        except (OSError, RuntimeError):  # a link loop: the existence check reports it
            return posixpath.normpath(path)

    places = [where(item) for item in items]
    for i, place in _dupes(list(enumerate(places))):
        item, j = items[i], places.index(place)
        same = "" if items[j] == item else f" ({items[j]!r}, the same path)"
        yield src.issue(
            (*key, i),
            f"duplicate input path {item!r}: also {key[-1]}[{j}]{same}; the job would"
            " read these files twice and score their spectra twice",
            f"remove {key[-1]}[{i}]",
        )


@check
def workload_input(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check ``workload.input``: DESI files are named, and where the job can read them.

    ``kind: desi`` needs ``paths``; ``synthetic`` takes none. A KubeRay job reads the files on
    the data volume, so its paths are relative (joined to ``platform.data.mount_path``); a
    local job reads them on this machine, so they must exist (relative to ``root`` or
    absolute).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``workload.input.kind|paths[i]|redshifts[i]`` (a path listed twice too).
    """
    w = s.workload
    if w is None:
        return
    inp = w.input
    key = ("workload", "input")
    if inp.kind == "synthetic":
        for field in ("paths", "redshifts"):
            if getattr(inp, field):
                yield src.issue(
                    (*key, field),
                    f"input.{field} is set but input.kind is synthetic (the job would ignore it)",
                    "set input.kind: desi to score these files, or remove input."
                    f"{field}",
                )
        return
    if not inp.paths:
        yield src.issue(
            (*key, "kind"),
            "input.kind desi names no files to score (input.paths is empty)",
            "list the coadd-*.fits or Parquet files or directories under input.paths",
        )
        return
    kuberay = s.ray is not None and s.ray.mode == "kuberay"
    for field in ("paths", "redshifts"):
        yield from _duplicate_inputs(src, (*key, field), getattr(inp, field), kuberay, root)
        for i, item in enumerate(getattr(inp, field)):
            if kuberay:
                if item.startswith("/"):
                    mount = s.platform.data.mount_path if s.platform else "/data"
                    yield src.issue(
                        (*key, field, i),
                        f"{item} is absolute, but a KubeRay job reads its input on the data"
                        f" volume mounted at {mount}",
                        f"give the path relative to {mount} (e.g. dr1/healpix/main/dark)",
                    )
                continue
            path = Path(item) if item.startswith("/") else root / item
            if not path.exists():
                yield src.issue(
                    (*key, field, i),
                    f"{path} does not exist on this machine (a local job reads it here)",
                    "download or move the files there, or fix the path (relative to the"
                    " project root, or absolute)",
                )


#: Hardware profiles shipped inside pvesim (``pvesim/src/pvesim/profiles``).
PVESIM_PROFILES = ("local", "lab", "faulty")
#: Hosts a Ray dashboard / Jobs API may bind to without authentication.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def pvesim_hardware_path(value: str, root: Path) -> Path | None:
    """Return the profile file named by ``proxmox.pvesim_hardware``.

    Args:
        value: A profile shipped with pvesim (:data:`PVESIM_PROFILES`) or a file path.
        root: The project root; relative paths resolve against it.

    Returns:
        The file path, or ``None`` for a profile shipped with pvesim.
    """
    if value in PVESIM_PROFILES:
        return None
    path = Path(value)
    return path if path.is_absolute() else root / path


@check
def pvesim_hardware_profile(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that an embedded pvesim's hardware profile exists and looks like one.

    A YAML map with a non-empty ``nodes`` map, at most 1 MiB (pvesim/hardware.py), so a typo
    fails at validate (exit 2), not at run time.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        At most one issue at ``proxmox.pvesim_hardware``.
    """
    p = s.proxmox
    if p is None or not p.embedded:
        return
    path = pvesim_hardware_path(p.pvesim_hardware, root)
    if path is None:
        return
    key = ("proxmox", "pvesim_hardware")
    hint = f"use one of {', '.join(PVESIM_PROFILES)} or the path of a profile YAML file"
    if not path.is_file():
        yield src.issue(key, f"hardware profile {path} does not exist or is not a file", hint)
        return
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        if path.stat().st_size > 1024 * 1024:
            raise ValueError("larger than 1 MiB")
        raw = YAML(typ="safe").load(path.read_text("utf-8"))
    except (OSError, ValueError, YAMLError) as exc:
        yield src.issue(key, f"hardware profile {path} cannot be read: {exc}", hint)
        return
    if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), dict) or not raw["nodes"]:
        yield src.issue(key, f"{path} is not a pvesim hardware profile (no `nodes:` map)", hint)


@check
def ray_exposure(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that a Ray Jobs API off loopback has token auth and an explicit acknowledgement.

    The Ray Jobs API runs arbitrary code (Ray docs, "Security"): off loopback it needs
    ``ray.auth_mode: token`` and ``ray.dashboard_exposed: true``. Applies to heads skyrig starts on
    a machine (``local``, ``vm``); under KubeRay the Service/NetworkPolicy decides exposure.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        At most one issue at ``ray.dashboard_host`` or ``ray.dashboard_exposed``.
    """
    r = s.ray
    # KubeRay: the head binds inside its pod; exposure is the Service/NetworkPolicy's business.
    if r is None or r.mode == "kuberay" or r.dashboard_host in LOOPBACK_HOSTS:
        return
    if r.auth_mode != "token":
        yield src.issue(
            ("ray", "dashboard_host"),
            f"the Ray dashboard/Jobs API would listen on {r.dashboard_host} without"
            " authentication; anyone who reaches it can run code on the cluster",
            "bind it to 127.0.0.1 (reach it through an SSH tunnel), or set ray.auth_mode: token"
            " and ray.dashboard_exposed: true",
        )
    elif not r.dashboard_exposed:
        yield src.issue(
            ("ray", "dashboard_exposed"),
            f"ray.dashboard_host {r.dashboard_host} exposes the Jobs API beyond this machine",
            "set ray.dashboard_exposed: true to acknowledge it",
        )


def advice(fn: Check) -> Check:
    """Register a warning (decorator): a valid stack that will likely not do what is meant.

    Warnings do not fail validation; :func:`run_advice` collects them into
    :attr:`skyrig.config.Stack.warnings`, which ``skyrig validate``, ``plan`` and ``up`` print.

    Args:
        fn: A :data:`Check` yielding one :class:`ConfigIssue` per warning.

    Returns:
        ``fn`` itself.
    """
    ADVICE.append(fn)
    return fn


def run_advice(sections: Sections, src: StackSource, root: Path) -> list[ConfigIssue]:
    """Run every registered warning on a stack that passed validation.

    Args:
        sections: The validated sections.
        src: The stack source, for file lines.
        root: The project root.

    Returns:
        Every warning, in registration order.
    """
    return [w for fn in ADVICE for w in fn(sections, src, root)]


@advice
def workload_full_model_on_cpu(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Warn when the full-size model would train and score on CPUs.

    ``model_size: full`` builds the GPU-sized model on the full 7,781-pixel grid (the ``ci``
    model uses a 4x downsampled grid and small channels); with ``use_gpu: false`` the job
    runs it on CPUs, as the ``local`` stack does.

    Yields:
        A warning at ``workload.model_size``.
    """
    w = s.workload
    if w is None or w.model_size != "full" or w.use_gpu:
        return
    yield src.issue(
        ("workload", "model_size"),
        "model_size full trains and scores the GPU-sized model (the full 7,781-pixel grid) on"
        " CPUs (workload.use_gpu is false): the run will be far slower than with the ci model",
        "for a CPU run set workload.model_size: ci (the default: 4x downsampled grid, small"
        " channels); keep full with use_gpu: true on GPU workers",
    )


def run_checks(sections: Sections, src: StackSource, root: Path) -> list[ConfigIssue]:
    """Run every registered check and collect all issues (one run reports every problem).

    Args:
        sections: The sections that passed field validation.
        src: The stack source, for file lines.
        root: The project root.

    Returns:
        Every issue found, in check order.
    """
    issues: list[ConfigIssue] = []
    for fn in CHECKS:
        issues.extend(fn(sections, src, root))
    return issues


# ------------------------------------------------------------------ Kubernetes platform (dev/prod)


def _gpu_worker_vms(s: Sections) -> list[tuple[int, GpuVm]]:
    return [(i, vm) for i, vm in enumerate(s.vms or []) if vm.gpus and "ray_worker" in vm.roles]


def gpu_worker_pods(vms: list[GpuVm] | None, gpus_per_worker: int) -> int:
    """Return how many Ray GPU worker pods the GPU worker VMs hold at once.

    ``Σ floor(GPUs of the VM / gpus_per_worker)`` over the VMs with GPUs and role
    ``ray_worker`` (the NVIDIA device plugin hands out whole GPUs per node).
    """
    return sum(len(vm.gpus) // max(1, gpus_per_worker)
               for vm in vms or [] if vm.gpus and "ray_worker" in vm.roles)


@check
def platform_versions(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that the Ray image CUDA variant and the device-plugin release form a supported pair.

    Only for ``ray.mode: kuberay`` with Kubernetes on. Ray images per ``rayproject/ray`` tags;
    device plugin vs Kubernetes per NVIDIA k8s-device-plugin release notes (both in the matrix).

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``ray.version``, ``gpu_stack.cuda_version``,
        ``platform.device_plugin_version`` and ``kubernetes.version``.
    """
    k, r, g, p = s.kubernetes, s.ray, s.gpu_stack, s.platform
    if k is None or r is None or p is None or not k.enabled or r.mode != "kuberay":
        return
    m = matrix()
    images = m["ray_images"].get(r.version)
    if images is None:
        yield src.issue(
            ("ray", "version"),
            f"no Ray container image is known for Ray {r.version}",
            f"use one of {sorted(m['ray_images'])}",
        )
    elif g is not None and g.cuda_version not in images["cuda"]:
        yield src.issue(
            ("gpu_stack", "cuda_version"),
            f"Ray {r.version} publishes no image for CUDA {g.cuda_version}",
            f"CUDA variants of rayproject/ray:{r.version}: {images['cuda']}",
        )
    dp = m["nvidia_device_plugin"].get(p.device_plugin_version)
    if dp is None:
        yield src.issue(
            ("platform", "device_plugin_version"),
            f"NVIDIA device plugin {p.device_plugin_version} is not supported",
            f"use one of {sorted(m['nvidia_device_plugin'])}",
        )
    elif minor(k.version) not in dp["kubernetes"]:
        yield src.issue(
            ("kubernetes", "version"),
            f"Kubernetes {minor(k.version)} is not supported by the NVIDIA device plugin"
            f" {p.device_plugin_version}",
            f"use one of {dp['kubernetes']}",
        )


@check
def gpu_workers_fit(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that Ray GPU worker pods fit their VMs and replicas fit the GPU worker VMs.

    One worker pod per GPU worker VM; each keeps ``platform.system_reserve_cpu`` and
    ``system_reserve_memory_mib`` (MiB) for the system and needs the object store plus 2048 MiB; the
    Ray head must leave 2048 MiB for k3s on the largest control-plane VM.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``ray.mode|gpu_workers_max|gpus_per_worker`` and
        ``platform.system_reserve_cpu|system_reserve_memory_mib|head_memory_mib``.
    """
    r, p, k = s.ray, s.platform, s.kubernetes
    if r is None or p is None or s.vms is None or r.mode != "kuberay":
        return
    if k is not None and not k.enabled:
        return
    workers = _gpu_worker_vms(s)
    if not workers:
        yield src.issue(
            ("ray", "mode"),
            "ray.mode kuberay needs at least one VM with GPUs and role ray_worker",
            "give the GPU VMs the ray_worker role",
        )
        return
    if r.gpu_workers_max > len(workers):
        yield src.issue(
            ("ray", "gpu_workers_max"),
            f"{r.gpu_workers_max} GPU worker replicas but {len(workers)} GPU worker VMs"
            " (one worker pod per VM)",
            f"lower gpu_workers_max to {len(workers)} or add GPU worker VMs",
        )
    fewest = min(len(vm.gpus) for _, vm in workers)
    if r.gpus_per_worker > fewest:
        yield src.issue(
            ("ray", "gpus_per_worker"),
            f"gpus_per_worker {r.gpus_per_worker} but a GPU worker VM has only {fewest} GPU(s)",
            f"lower gpus_per_worker to {fewest} or pass more GPUs to each worker VM",
        )
    if s.vm_classes is None:
        return
    for _, vm in workers:
        cls = s.vm_classes.get(vm.vm_class)
        if cls is None:
            continue
        cores, mem, _ = effective(vm, cls)
        cpu = cores * cls.sockets - p.system_reserve_cpu
        memory = mem - p.system_reserve_memory_mib
        if cpu < 1:
            yield src.issue(
                ("platform", "system_reserve_cpu"),
                f"GPU worker VM {vm.name} has {cores * cls.sockets} vCPUs; after the system"
                f" reserve of {p.system_reserve_cpu} none is left for the Ray worker",
                "lower system_reserve_cpu or give the VM more cores",
            )
        if memory < r.object_store_memory_mib + 2048:
            yield src.issue(
                ("platform", "system_reserve_memory_mib"),
                f"GPU worker VM {vm.name} leaves {memory} MiB for the Ray worker after the"
                f" {p.system_reserve_memory_mib} MiB reserve; the object store alone needs"
                f" {r.object_store_memory_mib} MiB (+2048 MiB for the worker processes)",
                "lower object_store_memory_mib or the reserve, or give the VM more memory",
            )
    heads = [
        effective(vm, s.vm_classes[vm.vm_class])
        for vm in s.vms
        if "kube_control_plane" in vm.roles and vm.vm_class in s.vm_classes
    ]
    if heads and p.head_memory_mib > max(mem for _, mem, _ in heads) - 2048:
        yield src.issue(
            ("platform", "head_memory_mib"),
            f"the Ray head wants {p.head_memory_mib} MiB; the largest CPU (control-plane) VM"
            f" has {max(mem for _, mem, _ in heads)} MiB and keeps 2048 MiB for k3s",
            "lower head_memory_mib or give the control-plane VMs more memory",
        )


@check
def platform_settings(s: Sections, src: StackSource, root: Path) -> Iterator[ConfigIssue]:
    """Check that the data volume, MLflow mode and workload image are complete and consistent.

    Args:
        s: The sections that passed field validation (``None`` where one did not).
        src: The stack source, for file lines of key paths.
        root: The project root (relative paths in the stack resolve against it).

    Yields:
        Issues at ``platform.data.*``, ``platform.results.mount_path``, ``workload.tracking_uri``
        and ``platform.image.tag|variant``.
    """
    p, w, r, k = s.platform, s.workload, s.ray, s.kubernetes
    if p is None or r is None or r.mode != "kuberay" or (k is not None and not k.enabled):
        return
    d = p.data
    if d.kind == "pvc" and not d.claim_name:
        yield src.issue(
            ("platform", "data", "claim_name"),
            "data.kind pvc needs claim_name",
            "name the PersistentVolumeClaim that holds the survey",
        )
    if d.kind == "nfs" and not (d.nfs_server and d.nfs_path):
        yield src.issue(
            ("platform", "data", "nfs_server" if not d.nfs_server else "nfs_path"),
            "data.kind nfs needs nfs_server and nfs_path",
            "name the NFS server and the exported path",
        )
    if d.kind == "pvc" and (d.nfs_server or d.nfs_path):
        yield src.issue(
            ("platform", "data", "kind"),
            "nfs_server/nfs_path are set but data.kind is pvc",
            "set kind: nfs or remove the NFS keys",
        )
    if d.mount_path == p.results.mount_path:
        yield src.issue(
            ("platform", "results", "mount_path"),
            f"data and results are both mounted at {d.mount_path}",
            "use two mount points (data is read-only, results writable)",
        )
    if w is None:
        return
    if p.mlflow.mode == "external" and not w.tracking_uri:
        yield src.issue(
            ("workload", "tracking_uri"),
            "platform.mlflow.mode is external but workload.tracking_uri is not set",
            "set workload.tracking_uri to the MLflow server, or platform.mlflow.mode: in-cluster",
        )
    if p.mlflow.mode == "in-cluster" and w.tracking_uri:
        yield src.issue(
            ("workload", "tracking_uri"),
            "platform.mlflow.mode is in-cluster, so the RayJob reports to the in-cluster server;"
            f" tracking_uri {w.tracking_uri} would be ignored",
            "remove workload.tracking_uri or use platform.mlflow.mode: external",
        )
    tag = p.image.tag
    if tag is not None and not (tag == w.version or tag.startswith(f"{w.version}-")):
        yield src.issue(
            ("platform", "image", "tag"),
            f"image tag {tag} is not the pinned workload version {w.version}",
            f"use `{w.version}-{p.image.variant}` (the tag `make image-cpu` / the Containerfile"
            " produces) or pin a digest",
        )
    if p.image.variant == "cpu" and w.use_gpu:
        yield src.issue(
            ("platform", "image", "variant"),
            "the CPU image cannot run with workload.use_gpu: true",
            "use variant: cuda or set use_gpu: false",
        )
