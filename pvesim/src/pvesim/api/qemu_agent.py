"""``/nodes/{node}/qemu/{vmid}/agent/…`` (the guest agent endpoints pvesim serves)."""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from pvesim import vmconfig
from pvesim.api import route
from pvesim.api.qemu_cloudinit import _ipconfig
from pvesim.api.qemu_common import (
    _vmid,
)
from pvesim.apierror import die
from pvesim.auth import Caller
from pvesim.backend import Backend


def _agent_enabled(conf: dict[str, str]) -> bool:
    raw = conf.get("agent")
    if raw is None:
        return False
    try:
        return bool(int(vmconfig.parse_option("agent", raw).get("enabled", 0)))
    except Exception:
        return False


@route("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces")
def agent_interfaces(b: Backend, caller: Caller, p: dict[str, Any]) -> dict[str, Any]:
    vmid = _vmid(p)
    with b.store.lock:
        vm = b.vm(p["node"], vmid)
        conf = dict(vm["conf"])
        running = vm["status"] == "running"
        started = float(vm.get("started", 0))
    if not _agent_enabled(conf):
        raise die("No QEMU guest agent configured")
    if not running:
        raise die(f"VM {vmid} is not running")
    if time.time() - started < b.durations.get("agent_boot", 0.0):
        raise die("QEMU guest agent is not running")
    result: list[dict[str, Any]] = [{
        "name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                         {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}],
        "statistics": {"rx-bytes": 0, "rx-packets": 0, "tx-bytes": 0, "tx-packets": 0,
                       "rx-errs": 0, "rx-dropped": 0, "tx-errs": 0, "tx-dropped": 0},
    }]
    for key in sorted((k for k in conf if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        idx = int(key[3:])
        ipc = _ipconfig(conf, idx)
        ip = ipc.get("ip", "dhcp")
        if ip == "dhcp":
            addr, prefix = f"10.{100 + idx}.{(vmid >> 8) & 255}.{vmid & 255 or 1}", 24
        else:
            iface = ipaddress.ip_interface(ip)
            addr, prefix = str(iface.ip), iface.network.prefixlen
        result.append({
            "name": f"eth{idx}", "hardware-address": (vmconfig.net_mac(conf[key]) or "").lower(),
            "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": addr, "prefix": prefix}],
            "statistics": {"rx-bytes": 4096, "rx-packets": 32, "tx-bytes": 2048,
                           "tx-packets": 16, "rx-errs": 0, "rx-dropped": 0, "tx-errs": 0,
                           "tx-dropped": 0},
        })
    return {"result": result}
