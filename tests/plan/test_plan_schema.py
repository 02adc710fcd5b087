"""The rendered PVE configs of every stack validate against the vendored PVE 8.4 API schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pvesim.apierror import ApiError
from pvesim.schema import load_endpoint_schema
from pvesim.validation import validate_params
from skyrig.config import load_stack
from skyrig.plan import build_plan

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _wire(params: dict[str, Any]) -> dict[str, str]:
    """What proxmoxer puts on the wire: form values are strings."""
    return {k: str(v) for k, v in params.items()}


def _props(path: str, method: str) -> dict[str, Any]:
    return load_endpoint_schema(path, method)["parameters"]["properties"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_vm_configs_validate_against_pve_schema(stack: str) -> None:
    plan = build_plan(load_stack(stack, ROOT))
    config_props = _props("/nodes/{node}/qemu/{vmid}/config", "POST")
    clone_props = _props("/nodes/{node}/qemu/{vmid}/clone", "POST")
    resize_props = _props("/nodes/{node}/qemu/{vmid}/resize", "PUT")
    for vm in plan.vms:
        validate_params(config_props, _wire({"node": vm.node, "vmid": vm.vmid, **vm.config}))
        validate_params(clone_props, _wire({"node": vm.node, "vmid": vm.template_vmid,
                                            **vm.clone_params}))
        validate_params(resize_props, _wire({"node": vm.node, "vmid": vm.vmid, "disk": vm.disk,
                                             "size": vm.disk_size}))


@pytest.mark.parametrize(("key", "value"), [
    ("hostpci0", "mapping=a4000,pcie=2"),
    ("hostpci0", "host=01:00.0:junk"),
    ("efidisk0", "local-lvm:1,efitype=5m"),
    ("balloon", "-1"),
    ("machine", "q35;rm -rf"),
    ("sshkeys", "ssh-ed25519 AAAA unencoded"),
])
def test_schema_check_catches_bad_values(key: str, value: str) -> None:
    plan = build_plan(load_stack("prod", ROOT))
    vm = next(v for v in plan.vms if v.gpus)
    params = _wire({"node": vm.node, "vmid": vm.vmid, **vm.config, key: value})
    with pytest.raises(ApiError) as info:
        validate_params(_props("/nodes/{node}/qemu/{vmid}/config", "POST"), params)
    assert info.value.status == 400
    assert key in (info.value.errors or {})
