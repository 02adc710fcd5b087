"""The VM config model: ``<vmid>.conf`` text, digest, pending section, drives and JSON types."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

from pvesim.schema import endpoint_info
from pvesim.validation import parse_property_string, print_property_string, property_schema

CONFIG_PATH = "/nodes/{node}/qemu/{vmid}/config"
DRIVE_RE = re.compile(r"^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0)$")
DISK_ALLOC_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):(\d+(?:\.\d+)?)$")
CLOUDINIT_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):cloudinit$")

#: Options applied at once on a running VM (qemu-server ``$fast_plug_option``), plus cloud-init.
FAST_PLUG = {
    "name", "description", "tags", "onboot", "protection", "hookscript", "startup", "shares",
    "lock", "migrate_downtime", "migrate_speed", "vmstatestorage", "ciuser", "cipassword",
    "citype", "cicustom", "ciupgrade", "nameserver", "searchdomain", "sshkeys",
}
CLOUDINIT_RE_KEYS = re.compile(r"^ipconfig\d+$")

#: Non-config parameters of the config/create endpoints.
CONTROL_PARAMS = {"node", "vmid", "delete", "revert", "digest", "skiplock", "force",
                  "background_delay", "start", "storage", "pool", "archive", "unique",
                  "live-restore", "bwlimit", "import-working-storage"}


@lru_cache(maxsize=1)
def config_properties() -> dict[str, Any]:
    info = endpoint_info(CONFIG_PATH, "POST")
    assert info is not None
    props: dict[str, Any] = info["parameters"]["properties"]
    return props


def option_schema(key: str) -> dict[str, Any] | None:
    return property_schema(config_properties(), key)


def is_drive(key: str) -> bool:
    return DRIVE_RE.match(key) is not None


def is_fast_plug(key: str) -> bool:
    return key in FAST_PLUG or CLOUDINIT_RE_KEYS.match(key) is not None


def typed(key: str, value: str) -> Any:
    """JSON type of a config value as qemu-server's ``check_type`` returns it (§1.5)."""
    schema = option_schema(key)
    if schema and schema.get("type") in ("integer", "boolean"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def drive_format(key: str) -> dict[str, Any]:
    schema = option_schema(key)
    assert schema is not None and isinstance(schema.get("format"), dict), key
    fmt: dict[str, Any] = schema["format"]
    return fmt


def parse_drive(key: str, value: str) -> dict[str, Any]:
    return parse_property_string(drive_format(key), value, key)


def print_drive(key: str, drive: dict[str, Any]) -> str:
    return print_property_string(drive_format(key), drive)


def parse_option(key: str, value: str) -> dict[str, Any]:
    """Parse a property-string option (net, agent, memory, hostpci, ipconfig, machine, ...)."""
    from pvesim.formats import PROPERTY_STRING_FORMATS

    schema = option_schema(key)
    fmt = schema.get("format") if schema else None
    if isinstance(fmt, str):
        fmt = PROPERTY_STRING_FORMATS.get(fmt)
    if not isinstance(fmt, dict):
        return {}
    return parse_property_string(fmt, value, key)


def config_text(conf: dict[str, str], pending: dict[str, str] | None = None,
                pending_delete: dict[str, int] | None = None) -> str:
    """Render the config file as qemu-server writes it (description as comments, sorted)."""
    lines: list[str] = []
    desc = conf.get("description")
    if desc:
        lines.extend(f"#{line}" for line in desc.split("\n"))
    lines.extend(f"{k}: {conf[k]}" for k in sorted(conf) if k != "description")
    if pending or pending_delete:
        lines.append("")
        lines.append("[PENDING]")
        pdesc = (pending or {}).get("description")
        if pdesc:
            lines.extend(f"#{line}" for line in pdesc.split("\n"))
        if pending_delete:
            lines.append("delete: " + ",".join(
                ("!" if force else "") + k for k, force in sorted(pending_delete.items())))
        lines.extend(f"{k}: {v}" for k, v in sorted((pending or {}).items()) if k != "description")
    return "\n".join(lines) + "\n"


def digest(vm: dict[str, Any]) -> str:
    text = config_text(vm["conf"], vm.get("pending"), vm.get("pending_delete"))
    return hashlib.sha1(text.encode()).hexdigest()


def merged_config(vm: dict[str, Any]) -> dict[str, str]:
    """The config with pending changes applied (GET config without ``current=1``)."""
    out = dict(vm["conf"])
    for key in vm.get("pending_delete", {}):
        out.pop(key, None)
    out.update(vm.get("pending", {}))
    return out


def volume_of(value: str) -> str | None:
    """The volid (first element) of a drive value."""
    first = value.split(",", 1)[0]
    if "=" in first:
        m = re.search(r"(?:^|,)(?:file|volume)=([^,]+)", value)
        return m.group(1) if m else None
    return first


def is_cdrom(value: str) -> bool:
    return "media=cdrom" in value.split(",") or value.split(",", 1)[0] in ("cdrom", "none")


def size_bytes(text: str) -> int:
    """``32G`` / ``512M`` / ``1024`` (bytes when unsuffixed? no: PVE sizes default to bytes)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text)
    if not m:
        raise ValueError(f"unable to parse size '{text}'")
    mult = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


def format_size(nbytes: int) -> str:
    """Render a size as PVE prints ``size=`` (largest exact unit)."""
    for unit, mult in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if nbytes % mult == 0 and nbytes >= mult:
            return f"{nbytes // mult}{unit}"
    return str(nbytes)


def memory_mib(conf: dict[str, str]) -> int:
    raw = conf.get("memory")
    if not raw:
        return 512
    m = re.search(r"(?:^|current=)(\d+)", raw)
    return int(m.group(1)) if m else 512


def cpu_count(conf: dict[str, str]) -> int:
    if "vcpus" in conf:
        return int(conf["vcpus"])
    return int(conf.get("sockets", "1")) * int(conf.get("cores", "1"))


def disk_keys(conf: dict[str, str]) -> list[str]:
    return sorted(k for k in conf if is_drive(k))


_SIZE_RE = re.compile(r"(?:^|,)size=([^,]+)")


def boot_disk_size(conf: dict[str, str]) -> int:
    """Size of the first (by name) non-cdrom disk, as ``maxdisk`` reports it."""
    best: str | None = None
    for key, value in conf.items():
        if DRIVE_RE.match(key) and (best is None or key < best) and "media=cdrom" not in value:
            best = key
    if best is None:
        return 0
    m = _SIZE_RE.search(conf[best])
    if not m:
        return 0
    try:
        return size_bytes(m.group(1))
    except ValueError:
        return 0


def hostpci_keys(conf: dict[str, str]) -> list[str]:
    return sorted((k for k in conf if re.fullmatch(r"hostpci\d+", k)), key=lambda k: int(k[7:]))


def net_mac(value: str) -> str | None:
    m = re.search(r"(?:^|,)(?:[a-z0-9-]+)=([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})", value)
    return m.group(1) if m else None
