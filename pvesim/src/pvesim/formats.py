"""PVE named formats (pve-common ``JSONSchema.pm``, qemu-server) used by the covered endpoints.

The schema file names these formats without expanding them. Each checker raises
``FormatError(<text>)``; the validator reports ``invalid format - <text>``. Property-string
formats that the schema does not expand (``pve-qm-hostpci``, ``pve-qm-ipconfig``, ...) are given
here as inline sub-schemas in the schema file's own shape.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Any


class FormatError(Exception):
    """A value does not match a named format; the text is PVE's ``die`` text."""


_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)
_NODE = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)
_DNS_LABEL = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_DNS_NAME = re.compile(rf"^(?:{_DNS_LABEL}\.)*{_DNS_LABEL}$")
_MAC = re.compile(r"^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$", re.I)
_VMID = re.compile(r"^[1-9][0-9]{2,8}$")
_URLENC = re.compile(r"^[-%a-zA-Z0-9_.!~*'()]*$")
_VOLID = re.compile(r"^(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+$")
_POOLID = re.compile(r"^[A-Za-z0-9_\-/]+$")
_TAG = re.compile(r"^(?:[a-z0-9_][a-z0-9_\-+.]*)$", re.I)
_DISK_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT])?$")
_BRIDGE = re.compile(r"^[-_.\w\d]+$")
_PCIRE = r"(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?"


def _configid(value: str) -> None:
    if not _CONFIGID.match(value):
        raise FormatError(f"invalid configuration ID '{value}'\n")


def _configid_list(value: str) -> None:
    for part in re.split(r"[,;\s]+", value):
        if part:
            _configid(part)


def _node(value: str) -> None:
    if not _NODE.match(value):
        raise FormatError("value does not look like a valid node name\n")


def _vmid(value: str) -> None:
    if not _VMID.match(str(value)):
        raise FormatError("value does not look like a valid VM ID\n")


def _storage_id(value: str) -> None:
    if not _STORAGE_ID.match(value):
        raise FormatError(f"storage ID '{value}' contains illegal characters\n")


def _dns_name(value: str) -> None:
    if not _DNS_NAME.match(value):
        raise FormatError("value does not look like a valid DNS name\n")


def _mac(value: str) -> None:
    if not _MAC.match(value):
        raise FormatError("value does not look like a valid unicast MAC address\n")


def _urlencoded(value: str) -> None:
    if not _URLENC.match(value):
        raise FormatError(f"invalid urlencoded string: {value}\n")


def _volume_id(value: str) -> None:
    if not _VOLID.match(value):
        raise FormatError(f"unable to parse volume ID '{value}'\n")


def _volume_or_path(value: str) -> None:
    if value in ("none", "cdrom") or value.startswith("/"):
        return
    _volume_id(value)


def _poolid(value: str) -> None:
    if not _POOLID.match(value):
        raise FormatError(f"pool name '{value}' contains illegal characters\n")


def _tag_list(value: str) -> None:
    for tag in re.split(r"[;,\s]+", value):
        if tag and not _TAG.match(tag):
            raise FormatError(f"invalid tag '{tag}'\n")  # pragma: no cover - simple


def _disk_size(value: str) -> None:
    if not _DISK_SIZE.match(value):
        raise FormatError(f"unable to parse size '{value}'\n")


def _bridge(value: str) -> None:
    if not _BRIDGE.match(value):
        raise FormatError(f"invalid bridge ID '{value}'\n")


def _ip(family: int, cidr: bool) -> Callable[[str], None]:
    def check(value: str) -> None:
        try:
            if cidr:
                net = ipaddress.ip_interface(value)
                if "/" not in value or str(net.ip) != value.split("/")[0]:
                    raise ValueError
            else:
                net = ipaddress.ip_address(value)  # type: ignore[assignment]
        except ValueError:
            kind = "IPv4" if family == 4 else "IPv6"
            raise FormatError(
                f"value does not look like a valid {kind}{' CIDR' if cidr else ''} address\n"
            ) from None
        if net.version != family:
            kind = "IPv4" if family == 4 else "IPv6"
            raise FormatError(f"value does not look like a valid {kind} address\n")

    return check


def _ipconfig_ip(value: str) -> None:
    if value in ("dhcp", "manual"):
        return
    try:
        _ip(4, True)(value)
    except FormatError:
        raise FormatError(f"invalid IPv4 configuration: {value}\n") from None


def _ipconfig_ip6(value: str) -> None:
    if value in ("dhcp", "auto", "manual"):
        return
    try:
        _ip(6, True)(value)
    except FormatError:
        raise FormatError(f"invalid IPv6 configuration: {value}\n") from None


_REALM = re.compile(r"^[A-Za-z][A-Za-z0-9\.\-_]+$")


def _realm(value: str) -> None:
    if not _REALM.match(value):
        raise FormatError("value does not look like a valid realm\n")


def _address_list(value: str) -> None:
    for part in re.split(r"[,;\s]+", value):
        if not part:
            continue
        try:
            ipaddress.ip_address(part)
        except ValueError:
            raise FormatError(f"unable to parse IP address '{part}'\n") from None


def _boot(value: str) -> None:
    # legacy "cdn" boot strings or order=dev;dev
    if re.fullmatch(r"[acdn]{1,4}", value):
        return
    m = re.fullmatch(r"(?:order=)?([^,]*)", value)
    if not m:
        raise FormatError("format error\n")
    for dev in filter(None, m.group(1).split(";")):
        if not re.fullmatch(r"(?:ide|sata|scsi|virtio|efidisk|tpmstate|net|hostpci|usb)\d+", dev):
            raise FormatError(f"format error\norder: invalid boot device '{dev}'\n")


HOSTPCI_FORMAT: dict[str, Any] = {
    "host": {"default_key": 1, "optional": 1, "type": "string",
             "pattern": f"{_PCIRE}(?:;{_PCIRE})*"},
    "mapping": {"optional": 1, "type": "string", "format": "pve-configid"},
    "pcie": {"optional": 1, "type": "boolean", "default": 0},
    "rombar": {"optional": 1, "type": "boolean", "default": 1},
    "romfile": {"optional": 1, "type": "string", "pattern": "[^,;]+"},
    "x-vga": {"optional": 1, "type": "boolean", "default": 0},
    "legacy-igd": {"optional": 1, "type": "boolean", "default": 0},
    "mdev": {"optional": 1, "type": "string", "pattern": r"[^/\.:]+"},
    "vendor-id": {"optional": 1, "type": "string", "pattern": r"^0x[0-9a-fA-F]{4}$"},
    "device-id": {"optional": 1, "type": "string", "pattern": r"^0x[0-9a-fA-F]{4}$"},
    "sub-vendor-id": {"optional": 1, "type": "string", "pattern": r"^0x[0-9a-fA-F]{4}$"},
    "sub-device-id": {"optional": 1, "type": "string", "pattern": r"^0x[0-9a-fA-F]{4}$"},
}

IPCONFIG_FORMAT: dict[str, Any] = {
    "ip": {"optional": 1, "type": "string", "format": "pve-ipv4-config"},
    "gw": {"optional": 1, "type": "string", "format": "ipv4"},
    "ip6": {"optional": 1, "type": "string", "format": "pve-ipv6-config"},
    "gw6": {"optional": 1, "type": "string", "format": "ipv6"},
}

CPU_FORMAT: dict[str, Any] = {
    "cputype": {"default_key": 1, "optional": 1, "type": "string",
                "pattern": r"(?:custom-)?[a-zA-Z0-9\-_.]+"},
    "flags": {"optional": 1, "type": "string",
              "pattern": r"(?:[+-][a-zA-Z0-9\-_\.]+)(?:;[+-][a-zA-Z0-9\-_\.]+)*"},
    "hidden": {"optional": 1, "type": "boolean"},
    "hv-vendor-id": {"optional": 1, "type": "string", "pattern": r"[a-zA-Z0-9]{1,12}"},
    "phys-bits": {"optional": 1, "type": "string", "pattern": r"(?:[89]|[1-5]\d|6[0-4]|host)"},
    "reported-model": {"optional": 1, "type": "string"},
}

CICUSTOM_FORMAT: dict[str, Any] = {
    k: {"optional": 1, "type": "string", "format": "pve-volume-id"}
    for k in ("meta", "network", "user", "vendor")
}

SMBIOS1_FORMAT: dict[str, Any] = {
    k: {"optional": 1, "type": "string"}
    for k in ("uuid", "base64", "family", "manufacturer", "product", "serial", "sku", "version")
}
SMBIOS1_FORMAT["base64"] = {"optional": 1, "type": "boolean"}

STARTUP_FORMAT: dict[str, Any] = {
    "order": {"optional": 1, "type": "integer", "minimum": 0, "default_key": 1},
    "up": {"optional": 1, "type": "integer", "minimum": 0},
    "down": {"optional": 1, "type": "integer", "minimum": 0},
}

#: Named formats that are property strings: name -> inline sub-schema.
PROPERTY_STRING_FORMATS: dict[str, dict[str, Any]] = {
    "pve-qm-hostpci": HOSTPCI_FORMAT,
    "pve-qm-ipconfig": IPCONFIG_FORMAT,
    "pve-vm-cpu-conf": CPU_FORMAT,
    "pve-qm-cicustom": CICUSTOM_FORMAT,
    "pve-qm-smbios1": SMBIOS1_FORMAT,
    "pve-startup-order": STARTUP_FORMAT,
}

#: Named formats checked by a function.
SIMPLE_FORMATS: dict[str, Callable[[str], None]] = {
    "pve-configid": _configid,
    "pve-configid-list": _configid_list,
    "pve-node": _node,
    "pve-vmid": _vmid,
    "pve-storage-id": _storage_id,
    "dns-name": _dns_name,
    "mac-addr": _mac,
    "urlencoded": _urlencoded,
    "pve-volume-id": _volume_id,
    "pve-volume-id-or-qm-path": _volume_or_path,
    "pve-volume-id-or-absolute-path": _volume_or_path,
    "pve-poolid": _poolid,
    "pve-tag-list": _tag_list,
    "disk-size": _disk_size,
    "pve-bridge-id": _bridge,
    "pve-ipv4-config": _ipconfig_ip,
    "pve-ipv6-config": _ipconfig_ip6,
    "ipv4": _ip(4, False),
    "ipv6": _ip(6, False),
    "address-list": _address_list,
    "pve-qm-boot": _boot,
    "pve-realm": _realm,
}


def urldecode_sshkeys(value: str) -> str:
    """``uri_unescape`` as PVE applies it to ``sshkeys`` (``+`` stays ``+``)."""
    return urllib.parse.unquote(value)


_SSH_KEY = re.compile(
    r"^(?:(?:[a-z0-9-]+=(?:\"[^\"]*\"|\S+),?)+\s+)?"
    r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-\S+)\s+"
    r"[A-Za-z0-9+/]+={0,3}(?:\s+.*)?$"
)


def check_ssh_keys(decoded: str) -> bool:
    """What ``ssh-keygen -l`` accepts, approximately: every non-comment line is a public key."""
    for line in decoded.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _SSH_KEY.match(line):
            return False
    return True
