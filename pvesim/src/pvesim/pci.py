"""PCI passthrough checks: mapping validation (``assert_valid``) and the start-time checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pvesim import vmconfig
from pvesim.apierror import TaskFailure
from pvesim.formats import FormatError
from pvesim.hardware import Node
from pvesim.schema import endpoint_info
from pvesim.validation import parse_property_string

if TYPE_CHECKING:
    from pvesim.backend import Backend

Q35_ERROR = "q35 machine model is not enabled at /usr/share/perl5/PVE/QemuServer/PCI.pm line 477."


def map_entry_format() -> dict[str, Any]:
    info = endpoint_info("/cluster/mapping/pci", "POST")
    assert info is not None
    fmt: dict[str, Any] = info["parameters"]["properties"]["map"]["items"]["format"]
    return fmt


def parse_map_entry(text: str) -> dict[str, Any]:
    return parse_property_string(map_entry_format(), text, "map")


def _strip0x(value: str) -> str:
    return value.lower().replace("0x", "")


def assert_valid(node: Node, name: str, entry: dict[str, Any]) -> None:
    """``PVE::Mapping::PCI::assert_valid``: raises ValueError with PVE's message."""
    paths = str(entry["path"]).split(";")
    for idx, path in enumerate(paths):
        dev_id = path if "." in path else f"{path}.0"
        dev = node.pci_device(dev_id)
        if dev is None:
            raise ValueError(f"pci device '{path}' not found")
        correct: dict[str, str | None] = {
            "id": f"{_strip0x(dev.vendor)}:{_strip0x(dev.device)}",
            "iommugroup": str(dev.iommugroup) if node.iommu and dev.iommugroup >= 0 else None,
            "subsystem-id": (f"{_strip0x(dev.subsystem_vendor)}:{_strip0x(dev.subsystem_device)}"
                             if dev.subsystem_vendor and dev.subsystem_device else None),
        }
        for prop in sorted(correct):
            if prop == "iommugroup" and idx > 0:
                continue
            want = correct[prop]
            have = entry.get(prop)
            if want is None and have is None:
                continue
            if want is not None and have is None:
                raise ValueError(f"no '{prop}' for device '{path}'")
            if want is None and have is not None:
                raise ValueError(f"'{prop}' configured but should not be")
            if _strip0x(str(want)) != _strip0x(str(have)):
                raise ValueError(
                    f"'{prop}' does not match for '{name}' ({want} != {_strip0x(str(have))})")


def mapping_entries_for_node(b: Backend, name: str, node: str) -> list[dict[str, Any]] | None:
    cfg = b.data["mappings"]["pci"].get(name)
    if cfg is None:
        return None
    out = []
    for text in cfg.get("map", []):
        try:
            entry = parse_map_entry(text)
        except FormatError:
            continue
        if entry.get("node") == node:
            out.append(entry)
    return out


def _is_q35(conf: dict[str, str]) -> bool:
    machine = conf.get("machine", "")
    mtype = machine.split(",", 1)[0]
    if mtype.startswith("type="):
        mtype = mtype[5:]
    return "q35" in mtype


def start_checks(b: Backend, node_name: str, vmid: int, conf: dict[str, str],
                 log: Any = None) -> list[str]:
    """Run the passthrough checks ``qmstart`` makes; return the PCI functions to reserve.

    Raises TaskFailure with PVE's messages (in PVE's order: parse, q35, reservation, IOMMU,
    then QEMU's own IOMMU-group viability check).
    """
    node = b.hw.nodes[node_name]
    parsed: list[tuple[str, dict[str, Any], list[str]]] = []
    for key in vmconfig.hostpci_keys(conf):
        try:
            opt = vmconfig.parse_option(key, conf[key])
        except FormatError as exc:
            raise TaskFailure(f"unable to parse {key}: {exc}") from exc
        host, mapping = opt.get("host"), opt.get("mapping")
        if host and mapping:
            raise TaskFailure("Cannot set both 'host' and 'mapping'.")
        if not host and not mapping:
            raise TaskFailure("Either 'host' or 'mapping' must be set.")
        if mapping:
            entries = mapping_entries_for_node(b, str(mapping), node_name)
            if not entries:
                raise TaskFailure(f"PCI device mapping not found for '{mapping}'")
            alternatives: list[str] = []
            for entry in entries:
                try:
                    assert_valid(node, str(mapping), entry)
                except ValueError as exc:
                    raise TaskFailure(
                        f"PCI device mapping invalid (hardware probably changed): {exc}") from exc
                alternatives.extend(str(entry["path"]).split(";"))
        else:
            alternatives = [a if a.count(":") == 2 else f"0000:{a}" for a in str(host).split(";")]
            for alt in alternatives:
                dev_id = alt if "." in alt else f"{alt}.0"
                if node.pci_device(dev_id) is None:
                    raise TaskFailure(f"no PCI device found for '{alt}'")
        if int(opt.get("pcie", 0)) and not _is_q35(conf):
            raise TaskFailure(Q35_ERROR)
        parsed.append((key, opt, alternatives))

    in_use = {dev: owner for dev, owner in b.pci_in_use(node_name).items() if owner != vmid}
    reserved: list[str] = []
    for key, _opt, alternatives in parsed:
        chosen: list[str] | None = None
        busy: tuple[str, int] | None = None
        for alt in alternatives:
            funcs = [alt] if "." in alt else [d.id for d in node.pci_functions(alt)]
            clash = [f for f in funcs if f in in_use or f in reserved]
            if clash:
                owner = in_use.get(clash[0], vmid)
                busy = busy or (clash[0], owner)
                continue
            chosen = funcs
            break
        if chosen is None:
            if len(alternatives) == 1 and busy is not None:
                raise TaskFailure(f"PCI device '{busy[0]}' already in use by VMID '{busy[1]}'")
            raise TaskFailure(f"could not find a free device for '{key}'")
        reserved.extend(chosen)
    if reserved and not node.iommu:
        raise TaskFailure("cannot prepare PCI pass-through, IOMMU not present")
    for dev_id in reserved:
        dev = node.pci_device(dev_id)
        if dev is None:
            continue
        others = [d for d in node.pci if d.iommugroup == dev.iommugroup and d.id not in reserved
                  and not d.klass.lower().removeprefix("0x").startswith("06")]
        if others:
            if log is not None:
                log(f"kvm: -device vfio-pci,host={dev_id},id=hostpci0.0,bus=ich9-pcie-port-1,"
                    f"addr=0x0.0: vfio {dev_id}: group {dev.iommugroup} is not viable")
                log("Please ensure all devices within the iommu_group are bound to their vfio "
                    "bus driver.")
            raise TaskFailure("start failed: QEMU exited with code 1")
    return reserved
