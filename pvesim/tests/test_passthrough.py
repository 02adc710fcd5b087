"""PCI hardware, cluster mappings, hostpci rules, start-time checks and migration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI

from pvesim import PveSim
from pvesim.testing import proxmox_client, running_sim

from .conftest import FAST, clone, raises, wait, wait_ok

pytestmark = pytest.mark.integration
GPU_MAP = "node={node},path=0000:01:00,id=10de:24b0,subsystem-id=10de:14ad,iommugroup=14"


def _map(prox: ProxmoxAPI, mid: str = "gpu0", nodes: tuple[str, ...] = ("pve1", "pve2"),
         **kw: object) -> None:
    prox.cluster.mapping.pci.post(id=mid, map=[GPU_MAP.format(node=n) for n in nodes], **kw)


def test_hardware_pci_inventory(prox: ProxmoxAPI) -> None:
    devs = {d["id"]: d for d in prox.nodes("pve1").hardware.pci.get()}
    assert "0000:00:00.0" not in devs                       # bridges hidden (05;06;0b)
    gpu, audio = devs["0000:01:00.0"], devs["0000:01:00.1"]
    assert (gpu["vendor"], gpu["device"], gpu["class"]) == ("0x10de", "0x24b0", "0x030000")
    assert (audio["device"], audio["class"]) == ("0x228b", "0x040300")
    assert gpu["subsystem_vendor"] == "0x10de" and gpu["subsystem_device"] == "0x14ad"
    assert gpu["iommugroup"] == audio["iommugroup"]
    assert devs["0000:02:00.0"]["iommugroup"] not in (gpu["iommugroup"],
                                                      devs["0000:03:00.0"]["iommugroup"])
    assert gpu["device_name"] == "GA104GL [RTX A4000]"
    every = prox.nodes("pve1").hardware.pci.get(**{"pci-class-blacklist": ""})
    assert "0000:00:00.0" in {d["id"] for d in every}


def test_mapping_crud(prox: ProxmoxAPI) -> None:
    _map(prox, description="A4000")
    exc = raises(_map, prox)
    assert exc.content == "create hardware mapping failed: pci ID 'gpu0' already defined"
    listed = prox.cluster.mapping.pci.get()
    assert [m["id"] for m in listed] == ["gpu0"] and len(listed[0]["digest"]) == 40
    one = prox.cluster.mapping.pci("gpu0").get()
    assert one["map"][0] == GPU_MAP.format(node="pve1") and one["description"] == "A4000"
    checks = prox.cluster.mapping.pci.get(**{"check-node": "pve1"})[0]["checks"]
    assert checks == []
    prox.cluster.mapping.pci("gpu0").put(description="changed", digest=listed[0]["digest"])
    exc = raises(prox.cluster.mapping.pci("gpu0").put, description="x",
                 digest=listed[0]["digest"])
    assert exc.content == ("update hardware mapping failed: detected modified configuration - "
                           "file changed by other user? Try again.")
    exc = raises(prox.cluster.mapping.pci("nope").put, description="x")
    assert exc.content == "update hardware mapping failed: pci ID 'nope' does not exist"
    exc = raises(prox.cluster.mapping.pci("nope").get)
    assert exc.content == "mapping 'nope' not found"
    prox.cluster.mapping.pci("gpu0").put(delete="description")
    assert "description" not in prox.cluster.mapping.pci("gpu0").get()
    assert prox.cluster.mapping.pci("gpu0").delete() is None
    assert prox.cluster.mapping.pci("gpu0").delete() is None       # idempotent
    exc = raises(prox.cluster.mapping.pci.post, id="bad",
                 map=["node=pve1,path=0000:01:00,id=0x10de:24b0"])
    assert exc.status_code == 400
    assert exc.errors == {"map[0]": "invalid format - format error\nmap[0].id: value does not "
                                    "match the regex pattern\n"}


def test_mapping_check_node_reports_mismatch(prox: ProxmoxAPI) -> None:
    prox.cluster.mapping.pci.post(id="wrong", map=[
        "node=pve1,path=0000:01:00,id=10de:2204,subsystem-id=10de:14ad,iommugroup=14"])
    checks = prox.cluster.mapping.pci.get(**{"check-node": "pve1"})[0]["checks"]
    assert checks == [{"severity": "error",
                       "message": "'id' does not match for 'wrong' (10de:24b0 != 10de:2204)"}]
    checks = prox.cluster.mapping.pci.get(**{"check-node": "pve2"})[0]["checks"]
    assert checks == [{"severity": "warning", "message": "No mapping for node pve2."}]


def test_raw_hostpci_needs_root_ticket(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    clone(prox, 100)
    exc = raises(prox.nodes("pve1").qemu(100).config.put, hostpci0="0000:01:00,pcie=1")
    assert (exc.status_code, exc.content) == (
        500, "only root can set 'hostpci0' config for non-mapped devices")
    exc = raises(prox.nodes("pve1").qemu.post, vmid=101, hostpci0="host=0000:01:00")
    assert exc.content == "only root can set 'hostpci0' config for non-mapped devices"
    root.nodes("pve1").qemu(100).config.put(hostpci0="0000:01:00,pcie=1")
    _map(prox)
    prox.nodes("pve1").qemu(100).config.put(hostpci1="mapping=gpu0")  # tokens use mappings
    exc = raises(prox.nodes("pve1").qemu(100).config.put, hostpci2="pcie=1")
    assert exc.content == "either 'host' or 'mapping' must be set."
    exc = raises(prox.nodes("pve1").qemu(100).config.put, delete="hostpci0")
    assert exc.content == "only root can set 'hostpci0' config for non-mapped devices"


def test_start_checks_fail_the_start_task(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    clone(prox, 100)
    vm = prox.nodes("pve1").qemu(100)
    _map(prox)
    vm.config.put(hostpci0="mapping=gpu0,pcie=1")           # accepted at config time
    st = wait(prox, vm.status.start.post())
    assert st["exitstatus"] == ("q35 machine model is not enabled at "
                                "/usr/share/perl5/PVE/QemuServer/PCI.pm line 477.")
    log = prox.nodes("pve1").tasks(st["upid"]).log.get()
    assert log[-1]["t"].startswith("TASK ERROR: q35 machine model is not enabled")
    vm.config.put(machine="q35")
    wait_ok(prox, vm.status.start.post())
    # second VM wanting the same GPU
    clone(prox, 101)
    root.nodes("pve1").qemu(101).config.put(hostpci0="0000:01:00", machine="q35")
    st = wait(prox, prox.nodes("pve1").qemu(101).status.start.post())
    assert st["exitstatus"] == "PCI device '0000:01:00.0' already in use by VMID '100'"
    # mapping without an entry for the node / not matching the hardware
    clone(prox, 102)
    prox.cluster.mapping.pci.post(id="other", map=[GPU_MAP.format(node="pve2")])
    prox.nodes("pve1").qemu(102).config.put(hostpci0="mapping=other")
    st = wait(prox, prox.nodes("pve1").qemu(102).status.start.post())
    assert st["exitstatus"] == "PCI device mapping not found for 'other'"
    prox.cluster.mapping.pci.post(id="stale", map=[
        "node=pve1,path=0000:01:00,id=10de:2204,subsystem-id=10de:14ad,iommugroup=14"])
    prox.nodes("pve1").qemu(102).config.put(hostpci0="mapping=stale")
    st = wait(prox, prox.nodes("pve1").qemu(102).status.start.post())
    assert st["exitstatus"] == ("PCI device mapping invalid (hardware probably changed): "
                                "'id' does not match for 'stale' (10de:24b0 != 10de:2204)")
    prox.cluster.mapping.pci.post(id="nosub", map=["node=pve1,path=0000:01:00,id=10de:24b0"])
    prox.nodes("pve1").qemu(102).config.put(hostpci0="mapping=nosub")
    st = wait(prox, prox.nodes("pve1").qemu(102).status.start.post())
    assert st["exitstatus"].endswith("no 'iommugroup' for device '0000:01:00'")
    root.nodes("pve1").qemu(102).config.put(hostpci0="0000:05:00")
    st = wait(prox, prox.nodes("pve1").qemu(102).status.start.post())
    assert st["exitstatus"] == "no PCI device found for '0000:05:00'"


def test_hostpci_change_on_running_vm_is_pending(prox: ProxmoxAPI) -> None:
    clone(prox, 100)
    vm = prox.nodes("pve1").qemu(100)
    _map(prox)
    wait_ok(prox, vm.status.start.post())
    vm.config.put(hostpci0="mapping=gpu0")
    assert "hostpci0" not in vm.config.get(current=1)
    assert vm.config.get()["hostpci0"] == "mapping=gpu0"
    wait_ok(prox, vm.status.reboot.post())
    assert vm.config.get(current=1)["hostpci0"] == "mapping=gpu0"


def test_migration_with_passthrough(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    _map(prox)
    clone(prox, 100)
    vm = prox.nodes("pve1").qemu(100)
    vm.config.put(hostpci0="mapping=gpu0")
    wait_ok(prox, vm.status.start.post())
    exc = raises(vm.migrate.post, target="pve2", online=1)
    assert exc.content == ("can't live migrate running VM which uses following mapped devices: "
                           "hostpci0:gpu0")
    exc = raises(vm.migrate.post, target="pve2")
    assert exc.content == "can't migrate running VM without --online"
    wait_ok(prox, vm.status.stop.post())
    wait_ok(prox, vm.migrate.post(target="pve2"))           # offline, mapping exists there
    assert prox.nodes("pve2").qemu(100).config.get()["hostpci0"] == "mapping=gpu0"
    prox.cluster.mapping.pci.post(id="only1", map=[GPU_MAP.format(node="pve1")])
    clone(prox, 101)
    prox.nodes("pve1").qemu(101).config.put(hostpci0="mapping=only1")
    exc = raises(prox.nodes("pve1").qemu(101).migrate.post, target="pve2")
    assert exc.content == "can't migrate to 'pve2': missing mapped devices hostpci0"
    clone(prox, 102)
    root.nodes("pve1").qemu(102).config.put(hostpci0="0000:01:00")
    st = wait(root, root.nodes("pve1").qemu(102).migrate.post(target="pve2"))
    assert st["exitstatus"] == "can't migrate VM which uses local devices: hostpci0"


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[PveSim]:
    with running_sim(tmp_path, hardware="faulty", task_durations=FAST) as s:
        yield s


def test_faulty_profile_hosts(faulty: PveSim) -> None:
    prox = proxmox_client(faulty)
    root = proxmox_client(faulty, password=("root@pam", faulty.root_password))
    assert {d["iommugroup"] for d in prox.nodes("pve-noiommu").hardware.pci.get()} == {-1}
    shared = {d["id"]: d["iommugroup"] for d in prox.nodes("pve-shared").hardware.pci.get()}
    assert shared["0000:01:00.0"] == shared["0000:02:00.0"]
    for node, tpl, newid in (("pve-noiommu", 9002, 100), ("pve-shared", 9001, 101),
                             ("pve-ok", 9003, 102)):
        wait_ok(prox, prox.nodes(node).qemu(tpl).clone.post(newid=newid))
        root.nodes(node).qemu(newid).config.put(hostpci0="0000:01:00,pcie=1", machine="q35")
    st = wait(prox, prox.nodes("pve-noiommu").qemu(100).status.start.post())
    assert st["exitstatus"] == "cannot prepare PCI pass-through, IOMMU not present"
    st = wait(prox, prox.nodes("pve-shared").qemu(101).status.start.post())
    assert st["exitstatus"] == "start failed: QEMU exited with code 1"
    log = [e["t"] for e in prox.nodes("pve-shared").tasks(st["upid"]).log.get()]
    assert any("group 12 is not viable" in line for line in log)
    wait_ok(prox, prox.nodes("pve-ok").qemu(102).status.start.post())


def test_lab_profile_shape(tmp_path: Path) -> None:
    with running_sim(tmp_path, hardware="lab") as s:
        prox = proxmox_client(s)
        nodes = {n["node"]: n for n in prox.nodes.get()}
        assert sorted(nodes) == [f"pve0{i}" for i in range(1, 8)]
        assert nodes["pve01"]["maxcpu"] == 64 and nodes["pve01"]["maxmem"] == 512 * 1024**3
        gpus = [d for d in prox.nodes("pve07").hardware.pci.get() if d["class"] == "0x030000"]
        assert [g["id"] for g in gpus] == ["0000:01:00.0", "0000:41:00.0"]
        assert {g["subsystem_vendor"] for g in gpus} == {"0x1028"}
        assert not [d for d in prox.nodes("pve01").hardware.pci.get()
                    if d["class"] == "0x030000"]
        assert prox.nodes("pve05").qemu(9005).config.get()["template"] == 1


def test_custom_hardware_file(tmp_path: Path) -> None:
    hw = tmp_path / "hw.yaml"
    hw.write_text("""
nodes:
  edge1:
    cpus: 8
    memory_gib: 32
    iommu: true
    storages:
      local-lvm: {type: lvmthin, content: [images], size_gib: 10}
    pci:
      - {id: "0000:07:00.0", class: "0x030000", vendor: "0x10de", device: "0x2204",
         iommugroup: 3}
""")
    with running_sim(tmp_path, hardware=hw) as s:
        prox = proxmox_client(s)
        assert [n["node"] for n in prox.nodes.get()] == ["edge1"]
        assert prox.nodes("edge1").hardware.pci.get()[0]["device"] == "0x2204"
        assert prox.nodes("edge1").qemu.get() == []                    # no template
        st = wait(prox, prox.nodes("edge1").qemu.post(vmid=100, scsi0="local-lvm:20"))
        assert st["exitstatus"].startswith("unable to create VM 100 - local-lvm: not enough free "
                                           "space")
        assert raises(prox.nodes("edge1").qemu(100).config.get).status_code == 500
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  x: {memory_gib: 1}\n")
    from pvesim.apierror import PveSimError
    from pvesim.hardware import load_hardware

    with pytest.raises(PveSimError, match=r"invalid hardware profile .*nodes\.x"):
        load_hardware(bad)


def test_migrate_preconditions(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    prox.cluster.mapping.pci.post(id="only1", map=[GPU_MAP.format(node="pve1")])
    clone(prox, 100)
    root.nodes("pve1").qemu(100).config.put(hostpci0="0000:01:00", hostpci1="mapping=only1")
    pre = prox.nodes("pve1").qemu(100).migrate.get()
    assert pre["running"] == 0 and pre["allowed_nodes"] == []
    assert pre["not_allowed_nodes"] == {"pve2": {"unavailable-resources": ["hostpci1"]}}
    assert pre["local_resources"] == ["hostpci0"] and pre["mapped-resources"] == ["hostpci1"]
    assert {d["drivename"] for d in pre["local_disks"]} == {"scsi0", "ide2"}
