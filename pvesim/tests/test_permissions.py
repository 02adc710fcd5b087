"""Users, API tokens with privilege separation, ACLs, and PVE's check order."""

from __future__ import annotations

import pytest
from proxmoxer import ProxmoxAPI

from pvesim import PveSim
from pvesim.testing import proxmox_client

from .conftest import clone, raises, wait_ok

pytestmark = pytest.mark.integration
CONFIG_ANY = ("VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|"
              "VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit")


def _token(sim: PveSim, name: str = "ci", privsep: bool = True) -> ProxmoxAPI:
    sim.add_user("ci@pve", "pw-ci")
    secret = sim.add_token("ci@pve", name, privsep=privsep)
    return proxmox_client(sim, token=(f"ci@pve!{name}", secret))


def test_token_without_acl_is_refused(sim: PveSim) -> None:
    p = _token(sim)
    exc = raises(p.nodes("pve1").qemu(9001).config.get)
    assert (exc.status_code, exc.content) == (403, "Permission check failed (/vms/9001, VM.Audit)")
    exc = raises(p.nodes("pve1").qemu(9001).config.put, onboot="True")   # 403 wins over 400
    assert (exc.status_code, exc.content) == (
        403, f"Permission check failed (/vms/9001, {CONFIG_ANY})")
    exc = raises(p.nodes("pve1").hardware.pci.get)
    assert exc.content == "Permission check failed (/, Sys.Audit|Sys.Modify)"
    assert p.cluster.resources.get(type="vm") == []
    assert p.nodes("pve1").qemu.get() == []


def test_least_privilege_token_for_provisioning(sim: PveSim, prox: ProxmoxAPI) -> None:
    p = _token(sim)
    sim.set_acl("/", "PVEAuditor", userid="ci@pve")
    sim.set_acl("/vms", "PVEVMAdmin", userid="ci@pve")
    sim.set_acl("/vms", ["VM.Allocate", "VM.Clone", "VM.Audit", "VM.Config.CPU",
                         "VM.Config.Cloudinit", "VM.PowerMgmt", "VM.Config.HWType"],
                tokenid="ci@pve!ci")
    sim.set_acl("/", "PVEAuditor", tokenid="ci@pve!ci")
    upid = p.nodes("pve1").qemu(9001).clone.post(newid=100, name="least")
    wait_ok(p, upid)
    assert upid.endswith(":ci@pve!ci:")
    p.nodes("pve1").qemu(100).config.put(cores=2, ciuser="astro")
    exc = raises(p.nodes("pve1").qemu(100).config.put, memory=2048)
    assert exc.content == "Permission check failed (/vms/100, VM.Config.Memory)"
    exc = raises(p.nodes("pve1").qemu.post, vmid=101, scsi0="local-lvm:4")
    assert exc.content == "Permission check failed (/vms/101, VM.Config.Disk)"
    exc = raises(p.nodes("pve1").qemu(100).config.put, hostpci0="mapping=gpu0")
    assert exc.content == "Permission check failed (/mapping/pci/gpu0, Mapping.Use)"
    sim.set_acl("/mapping/pci/gpu0", "PVEMappingUser", userid="ci@pve")
    sim.set_acl("/mapping/pci/gpu0", "PVEMappingUser", tokenid="ci@pve!ci")
    p.nodes("pve1").qemu(100).config.put(hostpci0="mapping=gpu0")
    exc = raises(p.nodes("pve1").qemu(100).config.put, hostpci1="0000:01:00")
    assert exc.content == "only root can set 'hostpci1' config for non-mapped devices"
    exc = raises(p.cluster.mapping.pci.post, id="gpu1",
                 map=["node=pve1,path=0000:01:00,id=10de:24b0"])
    assert exc.content == "Permission check failed (/mapping/pci, Mapping.Modify)"
    assert [r["vmid"] for r in p.cluster.resources.get(type="vm")] == [100, 9001, 9002]
    # the token's own tasks are readable; root's are not without Sys.Audit on the node
    root_upid = prox.nodes("pve1").qemu(9001).clone.post(newid=102)
    wait_ok(prox, root_upid)
    assert p.nodes("pve1").tasks(upid).status.get()["exitstatus"] == "OK"
    assert p.nodes("pve1").tasks(root_upid).status.get()["exitstatus"] == "OK"  # PVEAuditor


def test_task_of_other_user_needs_sys_audit(sim: PveSim, prox: ProxmoxAPI) -> None:
    p = _token(sim)
    upid = prox.nodes("pve1").qemu(9001).clone.post(newid=100)
    wait_ok(prox, upid)
    exc = raises(p.nodes("pve1").tasks(upid).status.get)
    assert exc.content == "Permission check failed (/nodes/pve1, Sys.Audit)"


def test_token_without_privsep_inherits_user(sim: PveSim) -> None:
    p = _token(sim, "full", privsep=False)
    sim.set_acl("/vms/9001", "PVEAuditor", userid="ci@pve", propagate=False)
    assert p.nodes("pve1").qemu(9001).config.get()["template"] == 1
    exc = raises(p.nodes("pve2").qemu(9002).config.get)
    assert exc.content == "Permission check failed (/vms/9002, VM.Audit)"


def test_root_token_is_not_root(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    clone(prox, 100)
    exc = raises(prox.nodes("pve1").qemu(100).config.put, skiplock=1, cores=2)
    assert (exc.status_code, exc.errors) == (400, {"skiplock": "Only root may use this option."})
    root.nodes("pve1").qemu(100).config.put(skiplock=1, cores=2)
    assert root.nodes("pve1").qemu(100).config.get()["cores"] == 2


def test_ticket_user_acl_and_clone_check(sim: PveSim) -> None:
    sim.add_user("ops@pve", "ops-pw")
    p = proxmox_client(sim, password=("ops@pve", "ops-pw"))
    sim.set_acl("/vms/9001", ["VM.Clone", "VM.Audit"], userid="ops@pve")
    exc = raises(p.nodes("pve1").qemu(9001).clone.post, newid=100)
    assert (exc.status_code, exc.content) == (403, "Permission check failed")
    sim.set_acl("/vms/100", ["VM.Allocate"], userid="ops@pve")
    wait_ok(p, p.nodes("pve1").qemu(9001).clone.post(newid=100))
