"""The dynamic provider classes called directly against a real pvesim (as the Pulumi engine
would): create → read shows no drift → diff/update → pending reboot → mapping change → delete."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skyrig.errors import OwnershipError, ProxmoxError
from skyrig.plan import build_plan
from skyrig.pulumi.providers import GpuVmProvider, PciMappingProvider
from skyrig.pulumi.providers.gpu_vm import spec_to_dict
from skyrig.pulumi.providers.pci_mapping import spec_to_dict as mapping_dict
from support import endpoint_of, make_root, stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = {"qmclone": 0.05, "qmconfig": 0.02, "qmstart": 0.05, "qmshutdown": 0.05,
        "qmreboot": 0.05, "qmdestroy": 0.02, "resize": 0.02, "agent_boot": 0.05}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Any]:
    from pvesim.testing import running_sim

    with running_sim(tmp_path, hardware="local", task_durations=FAST) as s:
        yield s


def conn(sim: Any) -> dict[str, Any]:
    ep = endpoint_of(sim)
    return {"pve_url": ep.url, "pve_token_id": ep.token_id, "pve_token_secret": ep.token_secret,
            "pve_ca_path": ep.ca_path, "pve_verify_tls": True}


def test_providers_lifecycle(sim: Any, tmp_path: Path) -> None:
    plan = build_plan(stack(make_root(tmp_path), "local"))
    mapping, vm = plan.pci_mappings[0], plan.vms[0]
    mp, vp = PciMappingProvider(), GpuVmProvider()

    m_props = {"spec": mapping_dict(mapping), **conn(sim)}
    created_m = mp.create(m_props)
    assert created_m.id == "a4000-pve1-0"
    assert created_m.outs["map"] == ["id=10de:24b0,iommugroup=14,node=pve1,path=0000:01:00,"
                                     "subsystem-id=10de:14ad"]

    props = {"spec": spec_to_dict(vm), "reboot_policy": "never", "task_timeout_s": 20,
             **conn(sim)}
    created = vp.create(props)
    assert created.id == "301" and created.outs["ip"] == "127.0.10.31"
    olds = created.outs

    # refresh: no drift right after create
    read = vp.read("301", olds)
    assert read.outs["spec"]["config"] == olds["spec"]["config"]
    assert vp.diff("301", read.outs, props).changes is False

    # drift made by hand shows up in read
    sim.backend.data["vms"]["301"]["conf"]["onboot"] = "0"
    drifted = vp.read("301", olds)
    assert str(drifted.outs["spec"]["config"]["onboot"]) == "0"
    assert vp.diff("301", drifted.outs, props).changes is True

    # cores on the running VM: update leaves it pending under `never`
    more = {**props, "spec": spec_to_dict(replace(vm, config={**vm.config, "cores": 6}))}
    d = vp.diff("301", olds, more)
    assert d.changes and not d.replaces
    upd = vp.update("301", olds, more)
    assert upd.outs["pending_reboot"] == ["cores"]
    # switching to when-required is a change that reboots
    reboot = {**more, "reboot_policy": "when-required"}
    assert vp.diff("301", upd.outs, reboot).changes
    done = vp.update("301", upd.outs, reboot)
    assert done.outs["pending_reboot"] == [] and sim.vm(301)["conf"]["cores"] == "6"

    # a changed GPU mapping on the running VM: pending until reboot, not ignored
    alt = replace(mapping, id="a4000-pve1-x")
    mp.create({"spec": mapping_dict(alt), **conn(sim)})
    swapped = {**more, "spec": spec_to_dict(replace(
        vm, gpus=("a4000-pve1-x",), config={**vm.config, "cores": 6,
                                            "hostpci0": "mapping=a4000-pve1-x,pcie=1"}))}
    assert vp.diff("301", done.outs, swapped).changes
    pend = vp.update("301", done.outs, swapped)
    assert pend.outs["pending_reboot"] == ["hostpci0"]
    assert sim.vm(301)["pending"]["hostpci0"] == "mapping=a4000-pve1-x,pcie=1"
    done = vp.update("301", pend.outs, {**swapped, "reboot_policy": "when-required"})
    assert sim.vm(301)["conf"]["hostpci0"] == "mapping=a4000-pve1-x,pcie=1"
    with pytest.raises(ProxmoxError, match=r"still used by gpu-w-1 \(vmid 301 on pve1\)"):
        mp.delete("a4000-pve1-x", {"spec": mapping_dict(alt), **conn(sim)})

    # node/template/vmid changes replace, deleting first (fixed vmids)
    moved = {**props, "spec": spec_to_dict(replace(vm, node="pve2", template_vmid=9002))}
    d = vp.diff("301", done.outs, moved)
    assert d.replaces == ["spec.node", "spec.template_vmid"] and d.delete_before_replace

    # mapping description change updates in place
    m_new = {**m_props, "spec": {**m_props["spec"], "description": "moved"}}
    assert mp.diff("a4000-pve1-0", created_m.outs, m_new).replaces == []
    mp.update("a4000-pve1-0", created_m.outs, m_new)
    assert mp.read("a4000-pve1-0", m_new).outs["spec"]["description"] == "moved"

    vp.delete("301", done.outs)
    assert sim.vm(301) is None
    mp.delete("a4000-pve1-x", {"spec": mapping_dict(alt), **conn(sim)})  # unused now
    assert vp.read("301", done.outs).id is None
    mp.delete("a4000-pve1-0", m_new)
    assert mp.read("a4000-pve1-0", m_new).id is None


def test_provider_delete_refuses_unowned_vm(sim: Any, tmp_path: Path) -> None:
    plan = build_plan(stack(make_root(tmp_path), "local"))
    vm = plan.vms[0]
    PciMappingProvider().create({"spec": mapping_dict(plan.pci_mappings[0]), **conn(sim)})
    vp = GpuVmProvider()
    props = {"spec": spec_to_dict(vm), "reboot_policy": "never", "task_timeout_s": 20,
             **conn(sim)}
    vp.create(props)
    sim.backend.data["vms"]["301"]["conf"]["tags"] = "someone-else"
    sim.backend.data["vms"]["301"]["conf"]["description"] = "not skyrig"
    with pytest.raises(OwnershipError):
        vp.delete("301", props)
    assert sim.vm(301) is not None
