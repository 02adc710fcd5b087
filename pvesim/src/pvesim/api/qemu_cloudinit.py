"""``/nodes/{node}/qemu/{vmid}/cloudinit`` (pending, regenerate) and ``…/cloudinit/dump``."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_common import (
    _vmid,
    check_lock,
)
from pvesim.auth import Caller
from pvesim.backend import Backend
from pvesim.formats import urldecode_sshkeys


def _ipconfig(conf: dict[str, str], idx: int) -> dict[str, Any]:
    raw = conf.get(f"ipconfig{idx}")
    if not raw:
        return {}
    try:
        return vmconfig.parse_option(f"ipconfig{idx}", raw)
    except Exception:
        return {}


_CI_KEYS = ("cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver",
            "searchdomain", "sshkeys")


def cloudinit_values(conf: dict[str, str]) -> dict[str, str]:
    """The options that make up the cloud-init drive."""
    return {k: v for k, v in conf.items() if k in _CI_KEYS or re.fullmatch(r"ipconfig\d+", k)}


def regenerate_cloudinit(vm: dict[str, Any]) -> None:
    """Remember which values the cloud-init drive was generated from (start, PUT cloudinit)."""
    vm["cloudinit"] = cloudinit_values(vm["conf"])


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_pending(b: Backend, caller: Caller, p: dict[str, Any]) -> list[dict[str, Any]]:
    with b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        current = cloudinit_values(vmconfig.merged_config(vm))
        generated = dict(vm.get("cloudinit", {}))
    out = []
    for key in sorted(set(current) | set(generated)):
        item: dict[str, Any] = {"key": key}
        if key in generated:
            item["value"] = "**********" if key == "cipassword" else generated[key]
        if key in current and current[key] != generated.get(key):
            item["pending"] = "**********" if key == "cipassword" else current[key]
        if key in generated and key not in current:
            item["delete"] = 1
        out.append(item)
    return out


@route("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit")
def cloudinit_regenerate(b: Backend, caller: Caller, p: dict[str, Any]) -> None:
    with b.vm_flock(_vmid(p)), b.store.lock:
        vm = b.vm(p["node"], _vmid(p))
        check_lock(vm["conf"])
        regenerate_cloudinit(vm)
    b.store.commit()
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump")
def cloudinit_dump(b: Backend, caller: Caller, p: dict[str, Any]) -> str:
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(p["node"], vmid)
        conf = vmconfig.merged_config(vm)
    kind = p["type"]
    if kind == "meta":
        text = vmconfig.config_text(conf)
        return f"instance-id: {hashlib.sha1(text.encode()).hexdigest()}\n"
    if kind == "user":
        name = conf.get("name", f"VM{vmid}")
        lines = ["#cloud-config", f"hostname: {name}", "manage_etc_hosts: true", f"fqdn: {name}"]
        if conf.get("ciuser"):
            lines.append(f"user: {conf['ciuser']}")
        if conf.get("cipassword"):
            lines.append(f"password: {conf['cipassword']}")
        if conf.get("sshkeys"):
            lines.append("ssh_authorized_keys:")
            for key in urldecode_sshkeys(conf["sshkeys"]).splitlines():
                if key.strip():
                    lines.append(f"  - {key.strip()}")
        lines += ["chpasswd:", "  expire: False", "users:", "  - default",
                  f"package_upgrade: {'true' if conf.get('ciupgrade', '1') == '1' else 'false'}"]
        return "\n".join(lines) + "\n"
    lines = ["version: 1", "config:"]
    for key in sorted((k for k in conf if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        idx = int(key[3:])
        mac = (vmconfig.net_mac(conf[key]) or "").lower()
        lines += ["    - type: physical", f"      name: eth{idx}", f"      mac_address: '{mac}'",
                  "      subnets:"]
        ipc = _ipconfig(conf, idx)
        ip = ipc.get("ip", "dhcp")
        if ip == "dhcp":
            lines.append("      - type: dhcp4")
        else:
            iface = ipaddress.ip_interface(ip)
            lines += ["      - type: static", f"        address: '{iface.ip}'",
                      f"        netmask: '{iface.network.netmask}'"]
            if ipc.get("gw"):
                lines.append(f"        gateway: '{ipc['gw']}'")
        if ipc.get("ip6"):
            lines.append("      - type: dhcp6" if ipc["ip6"] in ("dhcp", "auto")
                         else f"      - type: static6\n        address: '{ipc['ip6']}'")
    if conf.get("nameserver") or conf.get("searchdomain"):
        lines.append("    - type: nameserver")
        if conf.get("nameserver"):
            lines.append("      address:")
            lines += [f"      - '{ns}'" for ns in conf["nameserver"].split()]
        if conf.get("searchdomain"):
            lines.append("      search:")
            lines += [f"      - '{sd}'" for sd in conf["searchdomain"].split()]
    return "\n".join(lines) + "\n"
