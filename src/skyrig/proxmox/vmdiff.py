"""Diff a GPU VM's desired PVE config against the live one (pure functions).

Values are compared in a normalised form, so that what PVE writes back (MAC addresses in
``net0``, allocated volumes in ``efidisk0``, re-ordered property strings, URL-encoding variants of
``sshkeys``, tag order) is not mistaken for drift. Every change is classified (the table in
docs/provisioning.md is generated from :data:`KIND_BY_KEY` semantics):

* ``in-place``: written to the config at once, also on a running VM (PVE's fast-plug options and
  all cloud-init options; cloud-init changes reach the guest at its next boot);
* ``hot``: hot-plugged into a running VM (``netN`` with PVE's default ``hotplug``, disk grow);
* ``reboot``: PVE keeps it in ``[PENDING]`` on a running VM until a reboot through the API
  (cores, memory, cpu type, machine, bios, hostpci, ...); exposed as ``pending_reboot``;
* ``replace``: the VM must be destroyed and re-created (node, template, vmid, storage);
* ``forbidden``: PVE cannot do it at all (shrinking a disk).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from skyrig.plan.proxmox import GpuVmSpec

ChangeKind = Literal["in-place", "hot", "reboot", "replace", "forbidden"]

IN_PLACE_KEYS = {"name", "description", "tags", "onboot", "protection", "startup", "ciuser",
                 "cipassword", "citype", "ciupgrade", "cicustom", "nameserver", "searchdomain",
                 "sshkeys"}
HOT_PATTERNS = (re.compile(r"^net\d+$"),)
IN_PLACE_PATTERNS = (re.compile(r"^ipconfig\d+$"),)
REPLACE_FIELDS = ("node", "vmid", "template_vmid", "storage")
MANAGED_PATTERNS = (re.compile(r"^hostpci\d+$"),)
DEFAULT_KEY = {"net": "model", "cpu": "cputype", "agent": "enabled", "memory": "current",
               "machine": "type", "hostpci": "host", "efidisk0": "file", "scsi": "file",
               "vga": "type"}
NET_MODELS = {"virtio", "e1000", "e1000e", "vmxnet3", "rtl8139", "i82551", "i82557b", "i82559er",
              "ne2k_isa", "ne2k_pci", "pcnet"}

KIND_DOC: dict[str, tuple[ChangeKind, str]] = {
    "name, description, tags, onboot": ("in-place", "written at once, running or not"),
    "ciuser, sshkeys, ipconfigN, nameserver, searchdomain": (
        "in-place", "cloud-init: written at once; the guest applies it at its next boot"),
    "netN (bridge, tag, mtu, model)": ("hot", "hot-plugged (PVE default hotplug=network,...)"),
    "disk size (grow)": ("hot", "PUT resize, online"),
    "cores, sockets, memory, balloon, numa": ("reboot", "pending until reboot (no cpu/memory "
                                              "hotplug configured)"),
    "cpu, machine, bios, scsihw, agent, efidisk0": ("reboot", "pending until reboot"),
    "hostpciN (GPU mapping)": ("reboot", "pending until reboot; never silently ignored"),
    "node, template, vmid, storage": ("replace", "destroy (graceful) then re-create"),
    "disk size (shrink)": ("forbidden", "PVE cannot shrink disks: refused with a message"),
}


def kind_of(key: str) -> ChangeKind:
    """Say how PVE applies a change of ``key`` to a *running* VM.

    Follows pve-docs qm "Hotplug": descriptive keys (PVE's fast-plug options such as ``name``,
    ``description``, ``tags``, ``onboot``) and cloud-init keys are written at once, ``netN`` is
    hot-plugged with PVE's default ``hotplug=network,disk,usb``, everything else stays pending.

    Args:
        key: A VM config key, e.g. ``cores``, ``net0``, ``ipconfig0``, ``hostpci0``.

    Returns:
        ``"in-place"``, ``"hot"`` or ``"reboot"`` (``replace``/``forbidden`` come from elsewhere).
    """
    if key in IN_PLACE_KEYS or any(p.match(key) for p in IN_PLACE_PATTERNS):
        return "in-place"
    if any(p.match(key) for p in HOT_PATTERNS):
        return "hot"
    return "reboot"


def _family(key: str) -> str:
    return re.sub(r"\d+$", "", key) if not key.startswith("efidisk") else key


def parse_prop(key: str, value: str) -> dict[str, str]:
    """Parse a PVE property string into a dict (bare first value → the default key).

    Property strings follow PVE's ``PVE::JSONSchema`` format (``key=value,...`` with an optional
    unnamed default key first, e.g. ``virtio=BC:24:11:..,bridge=vmbr0``); for ``netN`` the
    ``<model>=<MAC>`` pair becomes ``model`` only (the MAC is PVE's, not skyrig's).

    Args:
        key: The config key; its family (``net``, ``cpu``, ``hostpci``, ...) picks the default key.
        value: The property string.

    Returns:
        Property name → value, all strings.
    """
    out: dict[str, str] = {}
    family = _family(key)
    for i, part in enumerate(p for p in str(value).split(",") if p != ""):
        if "=" in part:
            k, v = part.split("=", 1)
            if family == "net" and k in NET_MODELS:
                out["model"] = k  # virtio=<MAC>: the MAC is PVE's, not ours
                continue
            out[k.strip()] = v.strip()
        elif i == 0:
            out[DEFAULT_KEY.get(family, "value")] = part.strip()
    return out


def _storage_of(volume: str) -> str:
    return volume.split(":", 1)[0]


def normalise(key: str, value: Any) -> Any:
    """Return the comparable form of one config value.

    Drops what PVE writes back by itself: MAC addresses (``netN``), allocated volume names
    (``efidisk0``: only storage, ``efitype`` and ``pre-enrolled-keys`` count), property order,
    URL-encoding of ``sshkeys``, tag order and case, and PVE's defaults (``rombar=1``,
    ``pcie=0``, ``agent`` enabled 0).

    Args:
        key: The config key.
        value: The value as skyrig would send it or as PVE returned it (``None`` allowed).

    Returns:
        A hashable value such that two values are the same setting iff their forms are equal.
    """
    if value is None:
        return None
    text = str(value)
    family = _family(key)
    if key == "sshkeys":
        return unquote(text).strip()
    if key == "tags":
        return frozenset(t for t in re.split(r"[;,\s]+", text.lower()) if t)
    if key == "description":
        return text.strip()
    if key in ("nameserver", "searchdomain"):
        return tuple(text.split())
    if key == "efidisk0":
        d = parse_prop(key, text)
        return (_storage_of(d.get("file", "")), d.get("efitype", "2m"),
                d.get("pre-enrolled-keys", "0"))
    if family in ("net", "cpu", "agent", "memory", "machine", "hostpci", "ipconfig", "vga"):
        d = parse_prop(key, text)
        if family == "agent":
            d.setdefault("enabled", "0")
        if family == "hostpci":
            d = {k: v for k, v in d.items() if not (k == "rombar" and v == "1")}
            d.setdefault("pcie", "0")
        if family == "net":
            d.pop("macaddr", None)
        return tuple(sorted(d.items()))
    return text


def same(key: str, desired: Any, live: Any) -> bool:
    """Say whether a desired and a live config value are the same setting (see :func:`normalise`).

    Args:
        key: The config key.
        desired: The value skyrig would send.
        live: The value PVE returned.

    Returns:
        ``True`` when no change is needed.
    """
    return bool(normalise(key, desired) == normalise(key, live))


def size_bytes(text: str) -> int:
    """Parse a PVE disk size (``32G``, ``512M``, ``1.5T``, plain bytes) into bytes.

    Units are binary (K = 1024), as in PVE's ``disk-size`` format (pve-docs qm.conf ``size``).

    Args:
        text: The size; unit one of ``K``, ``M``, ``G``, ``T`` or none (bytes).

    Returns:
        The size in bytes.

    Raises:
        ValueError: ``text`` is not a size.
    """
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip())
    if not m:
        raise ValueError(f"unable to parse size {text!r}")
    return int(float(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3,
                                      "T": 1024**4}[m.group(2)])


def disk_size(value: str | None) -> int | None:
    """Return the ``size=`` of a disk property string in bytes.

    Args:
        value: A disk property, e.g. ``local-lvm:vm-301-disk-0,iothread=1,size=32G`` (or ``None``).

    Returns:
        The size in bytes, or ``None`` when there is no disk or no ``size=``.

    Raises:
        ValueError: The ``size=`` value is not a size.
    """
    if not value:
        return None
    m = re.search(r"(?:^|,)size=([^,]+)", value)
    return size_bytes(m.group(1)) if m else None


@dataclass(frozen=True)
class Change:
    """One differing setting of a VM.

    Attributes:
        key: Config key (``cores``, ``net0``, ...), ``<disk>.size`` for the boot disk, or a
            replace-forcing field (``node``, ``template_vmid``, ``storage``).
        old: Live value (``None`` when unset); disk sizes in bytes.
        new: Desired value (``None`` when the key is deleted); disk sizes as PVE writes them
            (``32G``).
        kind: How PVE can apply it (see the module docstring).
    """
    key: str
    old: Any
    new: Any
    kind: ChangeKind


@dataclass
class VmDiff:
    """What it takes to go from the live VM to the spec.

    Attributes:
        set: Config keys to write with ``POST /nodes/{node}/qemu/{vmid}/config`` (PVE wire form).
        delete: Config keys to remove (its ``delete`` parameter), e.g. a stale ``hostpci1``.
        resize: New boot disk size for ``PUT /nodes/{node}/qemu/{vmid}/resize`` (e.g. ``64G``),
            or ``None``.
        changes: Every difference with its kind, in the order found.
    """

    set: dict[str, str | int] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    resize: str | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def replace(self) -> list[str]:
        """The keys that force destroying and re-creating the VM."""
        return [c.key for c in self.changes if c.kind == "replace"]

    @property
    def forbidden(self) -> list[Change]:
        """The changes PVE cannot make at all (shrinking a disk)."""
        return [c for c in self.changes if c.kind == "forbidden"]

    @property
    def reboot_keys(self) -> list[str]:
        """The keys that stay pending on a running VM until a reboot through the API."""
        return [c.key for c in self.changes if c.kind == "reboot"]

    @property
    def empty(self) -> bool:
        """Whether the live VM already matches the spec."""
        return not self.changes


def identity_changes(spec: GpuVmSpec, recorded: dict[str, Any] | None, live_node: str | None
                     ) -> list[Change]:
    """Return the replace-forcing differences: the live node and what was recorded at creation.

    PVE cannot move a VM to another node's template or storage in place (a clone is made from
    ``template_vmid`` onto ``storage``), so these force a replacement.

    Args:
        spec: The planned VM.
        recorded: The VM's provisioning record (``template_vmid``, ``storage``), or ``None``.
        live_node: The node the VM lives on now, or ``None`` when unknown.

    Returns:
        ``replace`` changes for ``node``, ``template_vmid`` and ``storage`` that differ.
    """
    out: list[Change] = []
    if live_node is not None and live_node != spec.node:
        out.append(Change("node", live_node, spec.node, "replace"))
    for fld in ("template_vmid", "storage"):
        if recorded and fld in recorded and recorded[fld] != getattr(spec, fld):
            out.append(Change(fld, recorded[fld], getattr(spec, fld), "replace"))
    return out


def diff_config(spec: GpuVmSpec, live: dict[str, Any], *, running: bool,
                recorded: dict[str, Any] | None = None, live_node: str | None = None) -> VmDiff:
    """Diff ``spec`` against ``live`` (the config with pending changes applied).

    Keys of ``spec.config`` that differ are set (``netN`` keeps its live MAC address); live
    ``hostpciN`` keys the spec does not have are deleted; the boot disk grows when smaller than
    ``spec.disk_size`` and a larger one is a ``forbidden`` change (PVE cannot shrink disks, PVE API
    ``PUT /nodes/{node}/qemu/{vmid}/resize``). On a stopped VM every config change is ``in-place``.

    Args:
        spec: The planned VM.
        live: ``GET /nodes/{node}/qemu/{vmid}/pending`` folded into one key → value dict (pending
            value where one is pending).
        running: Whether the VM is running (decides ``hot``/``reboot`` vs ``in-place``).
        recorded: The VM's provisioning record, for replace-forcing fields.
        live_node: The node the VM lives on now.

    Returns:
        What to set, delete and resize, and every change with its kind.

    Raises:
        ValueError: A ``size=`` in ``live`` or ``spec.disk_size`` is not a size.
    """
    d = VmDiff()
    d.changes.extend(identity_changes(spec, recorded, live_node))
    desired = dict(spec.config)
    for key, value in desired.items():
        if key not in live or not same(key, value, live[key]):
            if key == "efidisk0" and key in live and _storage_of(str(value)) == _storage_of(
                    str(live[key])) and normalise(key, value) == normalise(key, live[key]):
                continue
            if key.startswith("net") and key in live:
                mac = parse_prop(key, str(live[key]))
                live_mac = next((v for k, v in (p.split("=", 1) for p in str(live[key]).split(",")
                                                if "=" in p) if k in NET_MODELS), None)
                if live_mac:
                    new = parse_prop(key, str(value))
                    model = new.pop("model", mac.get("model", "virtio"))
                    value = ",".join([f"{model}={live_mac}", *(f"{k}={v}" for k, v in
                                                               new.items())])
            d.set[key] = value
            kind = kind_of(key) if running else "in-place"
            d.changes.append(Change(key, live.get(key), value, kind))
    for key in live:
        if any(p.match(key) for p in MANAGED_PATTERNS) and key not in desired:
            d.delete.append(key)
            d.changes.append(Change(key, live[key], None, kind_of(key) if running
                                    else "in-place"))
    want = size_bytes(spec.disk_size)
    have = disk_size(live.get(spec.disk))
    if have is None or have < want:
        d.resize = spec.disk_size
        d.changes.append(Change(f"{spec.disk}.size", have, spec.disk_size, "hot"))
    elif have > want:
        d.changes.append(Change(f"{spec.disk}.size", have, spec.disk_size, "forbidden"))
    return d
