"""Schema-driven parameter validation: for every covered write endpoint, a wrong type, an
unknown parameter, a missing required parameter and a bad named format are rejected like PVE
(400 ``Parameter verification failed.`` with pve-common's per-parameter texts)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from pvesim import PveSim
from pvesim.schema import endpoint_info, load_endpoint_schema
from pvesim.validation import validate_params

pytestmark = pytest.mark.integration

UNKNOWN = ("property is not defined in schema and the schema does not allow additional "
           "properties")
MISSING = "property is missing and it is not optional"

# (method, template, concrete path, valid params, wrong type, bad format, required key)
# wrong type / bad format: (param, value, expected errors[param])
CASES: list[tuple[str, str, str, dict[str, Any], tuple[str, str, str],
                  tuple[str, str, str] | None, str | None]] = [
    ("POST", "/access/ticket", "/access/ticket", {"username": "root@pam", "password": "x"},
     ("new-format", "yes", "type check ('boolean') failed - got 'yes'"),
     ("realm", "9bad realm", "invalid format - value does not look like a valid realm\n"),
     "username"),
    ("POST", "/nodes/{node}/qemu", "/nodes/pve1/qemu", {"vmid": "500"},
     ("cores", "abc", "type check ('integer') failed - got 'abc'"),
     ("name", "bad_name!", "invalid format - value does not look like a valid DNS name\n"),
     "vmid"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config", "/nodes/pve1/qemu/9001/config",
     {"cores": "2"},
     ("onboot", "True", "type check ('boolean') failed - got 'True'"),
     ("hostpci0", "host=01:00:0",
      "invalid format - format error\nhostpci0.host: value does not match the regex pattern\n"),
     None),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config", "/nodes/pve1/qemu/9001/config", {"cores": "2"},
     ("memory", "lots", "invalid format - format error\nmemory.current: type check "
                        "('integer') failed - got 'lots'\n"),
     ("sshkeys", "ssh-rsa AAAA x@y",
      "invalid format - invalid urlencoded string: ssh-rsa AAAA x@y\n"),
     None),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone", "/nodes/pve1/qemu/9001/clone",
     {"newid": "501"},
     ("full", "yes", "type check ('boolean') failed - got 'yes'"),
     ("newid", "0501", "invalid format - value does not look like a valid VM ID\n"),
     "newid"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start", "/nodes/pve1/qemu/9001/status/start",
     {}, ("timeout", "soon", "type check ('integer') failed - got 'soon'"),
     ("migratedfrom", "bad_node!", "invalid format - value does not look like a valid node "
                                   "name\n"), None),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop", "/nodes/pve1/qemu/9001/status/stop", {},
     ("skiplock", "true", "type check ('boolean') failed - got 'true'"),
     ("migratedfrom", "-x", "invalid format - value does not look like a valid node name\n"),
     None),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown",
     "/nodes/pve1/qemu/9001/status/shutdown", {},
     ("forceStop", "2", "type check ('boolean') failed - got '2'"), None, None),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reboot", "/nodes/pve1/qemu/9001/status/reboot",
     {}, ("timeout", "-x", "type check ('integer') failed - got '-x'"), None, None),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize", "/nodes/pve1/qemu/9001/resize",
     {"disk": "scsi0", "size": "+1G"},
     ("size", "big", "value does not match the regex pattern"),
     ("disk", "scsi99", None), "size"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template", "/nodes/pve1/qemu/9001/template", {},
     ("disk", "floppy0", None), None, None),
    ("DELETE", "/nodes/{node}/qemu/{vmid}", "/nodes/pve1/qemu/9001", {},
     ("purge", "yes", "type check ('boolean') failed - got 'yes'"), None, None),
    ("POST", "/nodes/{node}/qemu/{vmid}/migrate", "/nodes/pve1/qemu/9001/migrate",
     {"target": "pve2"},
     ("online", "on", "type check ('boolean') failed - got 'on'"),
     ("target", "pve_2", "invalid format - value does not look like a valid node name\n"),
     "target"),
    ("POST", "/cluster/mapping/pci", "/cluster/mapping/pci",
     {"id": "gpu9", "map": "node=pve1,path=0000:01:00,id=10de:24b0"},
     ("mdev", "maybe", "type check ('boolean') failed - got 'maybe'"),
     ("id", "9gpu", "invalid format - invalid configuration ID '9gpu'\n"), "map"),
    ("PUT", "/cluster/mapping/pci/{id}", "/cluster/mapping/pci/gpu9", {"description": "x"},
     ("live-migration-capable", "yes", "type check ('boolean') failed - got 'yes'"),
     ("delete", "9x", "invalid format - invalid configuration ID '9x'\n"), None),
    ("POST", "/nodes/{node}/storage/{storage}/content",
     "/nodes/pve1/storage/local-lvm/content",
     {"vmid": "9001", "filename": "vm-9001-disk-7", "size": "1G"},
     ("vmid", "abc", "type check ('integer') failed - got 'abc'"),
     ("vmid", "09001", "invalid format - value does not look like a valid VM ID\n"),
     "filename"),
]


def _call(sim: PveSim, method: str, path: str, params: dict[str, Any]) -> requests.Response:
    tid, secret = sim.root_token
    headers = {"Authorization": f"PVEAPIToken={tid}={secret}"}
    if method == "POST" and path == "/access/ticket":
        headers = {}
    kw: dict[str, Any] = {"params": params} if method in ("GET", "DELETE") else {"data": params}
    return requests.request(method, sim.url + path, headers=headers, verify=str(sim.ca_path),
                            timeout=10, **kw)


def _enum_message(template: str, method: str, key: str, value: str) -> str:
    schema = load_endpoint_schema(template, method)["parameters"]["properties"][key]
    return (f"value '{value}' does not have a value in the enumeration "
            f"'{', '.join(schema['enum'])}'")


def _assert_400(resp: requests.Response, errors: dict[str, str]) -> None:
    assert resp.status_code == 400, (resp.status_code, resp.reason)
    assert resp.reason == "Parameter verification failed."
    assert resp.json()["errors"] == errors


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_write_endpoint_validation(sim: PveSim, case: tuple[Any, ...]) -> None:
    method, template, path, valid, wrong, bad, required = case
    assert endpoint_info(template, method) is not None
    # unknown parameter
    _assert_400(_call(sim, method, path, {**valid, "frobnicate": "1"}), {"frobnicate": UNKNOWN})
    # wrong type
    key, value, msg = wrong
    _assert_400(_call(sim, method, path, {**valid, key: value}),
                {key: msg or _enum_message(template, method, key, value)})
    # bad named format
    if bad is not None:
        key, value, msg = bad
        _assert_400(_call(sim, method, path, {**valid, key: value}),
                    {key: msg or _enum_message(template, method, key, value)})
    # missing required parameter
    if required is not None:
        params = {k: v for k, v in valid.items() if k != required}
        _assert_400(_call(sim, method, path, params), {required: MISSING})


def test_requires_and_ranges() -> None:
    props = load_endpoint_schema("/nodes/{node}/qemu/{vmid}/config", "POST")["parameters"][
        "properties"]
    base = {"node": "pve1", "vmid": "100"}
    with pytest.raises(Exception) as info:
        validate_params(props, {**base, "force": "1"})
    assert info.value.errors == {"delete": "missing property - 'force' requires this property"}  # type: ignore[attr-defined]
    cases = {
        "hostpci16": ("0000:01:00", UNKNOWN),
        "cores": ("0", "value must have a minimum value of 1"),
        "cpulimit": ("200", "value must have a maximum value of 128"),
        "scsihw": ("fast", _enum_message("/nodes/{node}/qemu/{vmid}/config", "POST", "scsihw",
                                         "fast")),
        "net0": ("virtio,bridge=vmbr0,tag=5000",
                 "invalid format - format error\nnet0.tag: value must have a maximum value of "
                 "4094\n"),
        "hostpci1": ("0000:01:00,foo=1",
                     "invalid format - invalid key in comma-separated list property: foo\n"),
        "ipconfig0": ("ip=10.0.0.5", "invalid format - format error\nipconfig0.ip: invalid "
                                     "format - invalid IPv4 configuration: 10.0.0.5\n\n"),
        "digest": ("x" * 41, "value may only be 41 characters long".replace("41", "40")),
        "machine": ("q36", "invalid format - format error\nmachine.type: value does not "
                           "match the regex pattern\n"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(Exception) as info:
            validate_params(props, {**base, key: value})
        assert info.value.errors == {key: message}, key  # type: ignore[attr-defined]
    ok = validate_params(props, {**base, "hostpci0": "mapping=gpu0,pcie=1,x-vga=on",
                                 "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
                                 "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
                                 "onboot": True, "cores": 4})
    assert ok["onboot"] == 1 and ok["cores"] == 4


def test_load_endpoint_schema_for_the_coordinator() -> None:
    schema = load_endpoint_schema("/nodes/{node}/qemu/{vmid}/config", "post")
    props = schema["parameters"]["properties"]
    assert props["hostpci[n]"]["format"] == "pve-qm-hostpci"
    assert schema["parameters"]["additionalProperties"] == 0
    same = load_endpoint_schema("/nodes/pve1/qemu/100/config", "POST")
    assert same == schema
    with pytest.raises(KeyError):
        load_endpoint_schema("/nodes/{node}/network", "GET")
