"""Fault injection (pvesim): every failure gives a clear error, leaves no unowned half-made VM,
and a re-run converges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skyrig.errors import ProxmoxError, ProxmoxTaskError
from skyrig.plan import build_plan
from skyrig.proxmox.apply import ApplyFailed, ApplyResult, apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.state import ProvisionRecord
from skyrig.proxmox.vms import VmReconciler, owned
from support import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CONFIG = "/nodes/{node}/qemu/{vmid}/config"


def apply(root: Path, client: PveClient) -> ApplyResult:
    st = stack(root, "local")
    return apply_plan(build_plan(st), client, parallelism=2, task_timeout_s=20,
                      record=ProvisionRecord(st.state_dir / "provision.json"))


def assert_converged(sim: Any, client: PveClient, root: Path) -> None:
    res = apply(root, client)
    assert sim.vm(301)["status"] == "running" and sim.vm(302)["status"] == "running"
    assert res.ips == {"gpu-w-1": "127.0.10.31", "gpu-w-2": "127.0.10.32"}
    assert not apply(root, client).changed


def assert_only_owned_vms(client: PveClient) -> None:
    vr = VmReconciler(client)
    spec = {s.vmid: s for s in build_plan(stack_root_cache["root"]).vms}
    for vmid in (301, 302):
        state = vr.read(vmid)
        assert state is None or owned(state, spec[vmid]), f"unowned half-made VM {vmid}"


stack_root_cache: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _remember(root: Path) -> None:
    stack_root_cache["root"] = stack(root, "local")


def test_start_failing_on_a_mapping_mismatch(sim: Any, client: PveClient, root: Path) -> None:
    msg = ("PCI device mapping invalid (hardware probably changed): 'id' does not match for "
           "'a4000-pve1-0' (10de:24b0 != 10de:2531)")
    sim.set_faults({"tasks": [{"type": "qmstart", "exitstatus": msg, "times": 1}]})
    with pytest.raises(ApplyFailed) as info:
        apply(root, client)
    (err,) = info.value.failures.values()
    assert isinstance(err, ProxmoxTaskError)
    assert "PCI device mapping invalid" in str(err) and err.upid and err.vmid in (301, 302)
    assert any("TASK ERROR" in line for line in err.log_tail)
    assert_only_owned_vms(client)
    sim.set_faults(None)
    assert_converged(sim, client, root)


def test_got_timeout_on_config_is_retried(sim: Any, client: PveClient, root: Path) -> None:
    sim.set_faults({"requests": [{"method": "POST", "path": CONFIG, "lock_timeout": True,
                                  "times": 2}]})
    res = apply(root, client)
    assert res.created[-2:] == ["vm/gpu-w-1", "vm/gpu-w-2"]
    assert sim.request_counts()[("POST", CONFIG)] == 4  # 2 VMs + 2 retried timeouts


def test_persistent_got_timeout_is_a_clear_error_and_rerun_converges(
        sim: Any, client: PveClient, root: Path) -> None:
    sim.set_faults({"requests": [{"method": "POST", "path": CONFIG, "lock_timeout": True,
                                  "times": 8}]})
    with pytest.raises(ApplyFailed) as info:
        apply(root, client)
    assert all("got timeout" in str(e) for e in info.value.failures.values())
    assert_only_owned_vms(client)  # half-made clones carry skyrig's description
    sim.set_faults(None)
    assert_converged(sim, client, root)


def test_connection_lost_while_cloning_is_recovered(sim: Any, client: PveClient,
                                                    root: Path) -> None:
    sim.set_faults({"requests": [{"method": "POST", "path": "/nodes/{node}/qemu/{vmid}/clone",
                                  "drop": True, "times": 1}]})
    res = apply(root, client)
    assert "vm/gpu-w-1" in res.created and "vm/gpu-w-2" in res.created


def test_connection_lost_mid_create_leaves_an_owned_vm_and_rerun_converges(
        sim: Any, client: PveClient, root: Path) -> None:
    sim.set_faults({"requests": [{"method": "POST", "path": CONFIG, "drop": True,
                                  "times": 2}]})
    with pytest.raises(ApplyFailed) as info:
        apply(root, client)
    assert all(isinstance(e, ProxmoxError) and "connection" in str(e)
               for e in info.value.failures.values())
    assert_only_owned_vms(client)
    sim.set_faults(None)
    assert_converged(sim, client, root)


def test_failed_clone_task_is_a_clear_error(sim: Any, client: PveClient, root: Path) -> None:
    sim.set_faults({"tasks": [{"type": "qmclone", "exitstatus": "clone failed: injected",
                               "times": 1}]})
    with pytest.raises(ApplyFailed) as info:
        apply(root, client)
    (err,) = info.value.failures.values()
    assert isinstance(err, ProxmoxTaskError)
    assert "clone failed: injected" in str(err) and "qmclone" in (err.upid or "")
    assert info.value.result.created[-1].startswith("vm/")  # the other VM went on


def test_failed_clone_leaves_no_vm_and_rerun_converges(sim: Any, client: PveClient,
                                                       root: Path) -> None:
    sim.set_faults({"tasks": [{"type": "qmclone", "exitstatus": "clone failed: injected",
                               "times": 1}]})
    with pytest.raises(ApplyFailed):
        apply(root, client)
    assert_only_owned_vms(client)
    sim.set_faults(None)
    assert_converged(sim, client, root)


def test_answer_lost_while_the_clone_goes_on_is_adopted(sim: Any, endpoint: Any,
                                                        root: Path) -> None:
    from skyrig.proxmox.client import RetryPolicy

    # the server handles the clone 3 s late; the client gave up after 2 s (read timeout)
    sim.set_faults({"requests": [{"method": "POST", "path": "/nodes/{node}/qemu/{vmid}/clone",
                                  "latency": 3.0, "times": 1}]})
    slow = PveClient(endpoint, timeout=2.0, retry=RetryPolicy(attempts=4, backoff_s=0.05))
    res = apply(root, slow)
    assert "vm/gpu-w-1" in res.created or "vm/gpu-w-2" in res.created
    sim.wait_idle()
    sim.set_faults(None)
    assert_converged(sim, client_for(endpoint), root)
    assert sorted(k for k in sim.backend.data["vms"] if not k.startswith("900")) == ["301",
                                                                                     "302"]


def client_for(endpoint: Any) -> PveClient:
    return PveClient(endpoint)
