"""stacks/__main__.py under Pulumi mocks, for every stack: resources, GPU VM policy, outputs.

Under mocks a dynamic resource registers but its provider never runs (that is tested against
pvesim in test_pulumi_providers.py); mocked outputs turn ints into floats.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest

from support import REPO, make_root

pytestmark = pytest.mark.unit

EXPECTED = {"local": (2, 2), "dev": (1, 2), "prod": (8, 11)}  # (mappings, VMs)
VM_TYPE = "pulumi-python:dynamic/proxmox:GpuVm"
MAPPING_TYPE = "pulumi-python:dynamic/proxmox:PciMapping"


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        outs = dict(args.inputs)
        if args.typ == VM_TYPE:  # what the provider's create() would report
            outs["ip"] = outs["spec"]["ip"]
            outs["pending_reboot"] = []
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        return {}, []


def run_stack(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> tuple[Mocks, dict[str, Any]]:
    root = make_root(tmp_path)
    monkeypatch.setenv("SKYRIG_ROOT", str(root))
    monkeypatch.setenv("SKYRIG_PROXMOX_TOKEN_SECRET", "mock-token-secret")
    if name == "local":
        monkeypatch.setenv("SKYRIG_PVESIM_ENDPOINT", json.dumps({
            "url": "https://127.0.0.1:8006", "token_id": "root@pam!skyrig",
            "token_secret": "mock-token-secret", "ca_path": "/tmp/ca.pem"}))
    else:
        monkeypatch.delenv("SKYRIG_PVESIM_ENDPOINT", raising=False)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="skyrig", stack=name, preview=False)
    program = runpy.run_path(str(REPO / "stacks" / "__main__.py"))
    return mocks, program


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
@pulumi.runtime.test
def test_stack_resources_and_outputs(name: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> Any:
    mocks, program = run_stack(name, tmp_path, monkeypatch)
    cluster = program["cluster"]
    n_mappings, n_vms = EXPECTED[name]

    def check(args: list[Any]) -> None:
        inventory, ips, pending = args
        types = [t for t, _, _ in mocks.resources]
        assert types.count(MAPPING_TYPE) == n_mappings
        assert types.count(VM_TYPE) == n_vms
        assert types.count("skyrig:proxmox:GpuCluster") == 1
        vms = {n: i for t, n, i in mocks.resources if t == VM_TYPE}
        for res_name, inputs in vms.items():
            spec = inputs["spec"]
            c = spec["config"]
            assert (c["machine"], c["bios"], c["cpu"]) == ("q35", "ovmf", "host"), res_name
            assert c["balloon"] == 0 and "efitype=4m" in c["efidisk0"]
            hostpci = sorted(k for k in c if k.startswith("hostpci"))
            assert len(hostpci) == len(spec["gpus"])
            for key, gpu in zip(hostpci, spec["gpus"], strict=True):
                assert c[key] == f"mapping={gpu},pcie=1"
            assert f"skyrig-{name}" in c["tags"]
            assert inputs["pve_token_id"]
            assert int(spec["vmid"]) == spec["vmid"]  # floats under mocks, still whole
        hosts = inventory["hosts"]
        assert len(hosts) == n_vms and inventory["stack"] == name
        assert ips == {h["name"]: h["ip"] for h in hosts}
        gpu_hosts = [h for h in hosts if h["gpu_mappings"]]
        assert all(h["gpu_ids"] == ["10de:24b0"] * len(h["gpu_mappings"]) for h in gpu_hosts)
        assert pending == []
        assert "mock-token-secret" not in json.dumps(inventory)

    return pulumi.Output.all(cluster.inventory, cluster.vm_ips,
                             cluster.pending_reboot).apply(check)


@pulumi.runtime.test
def test_prod_roles_reach_the_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    _, program = run_stack("prod", tmp_path, monkeypatch)

    def check(inventory: dict[str, Any]) -> None:
        roles = {h["name"]: h["roles"] for h in inventory["hosts"]}
        assert roles["k8s-cp-01"] == ["kube_control_plane"]
        assert roles["gpu-w-08"] == ["kube_node", "ray_worker"]
        assert {h["node"] for h in inventory["hosts"]} == {f"pve0{i}" for i in range(1, 8)}

    return program["cluster"].inventory.apply(check)


@pulumi.runtime.test
def test_token_secret_is_a_secret_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    _, program = run_stack("dev", tmp_path, monkeypatch)
    vm = next(iter(program["cluster"].vms.values()))

    async def check() -> None:
        assert await program["endpoint"].is_secret()

    import asyncio

    return pulumi.Output.from_input(asyncio.ensure_future(check())).apply(lambda _: vm.urn)
