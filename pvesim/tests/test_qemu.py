"""qemu endpoints through unmodified proxmoxer: happy paths and PVE's error texts."""

from __future__ import annotations

import hashlib
import re
import time
import urllib.parse

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.tools import Tasks

from pvesim import PveSim
from pvesim.vmconfig import config_text

from .conftest import clone, raises, wait, wait_ok

pytestmark = pytest.mark.integration
UPID_RE = re.compile(r"^UPID:[a-zA-Z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:\s/]+:"
                     r"[^:\s/]*:[^:\s/]+:$")


def test_nextid_is_a_string_and_checks_vmid(prox: ProxmoxAPI) -> None:
    assert prox.cluster.nextid.get() == "100"
    assert prox.cluster.nextid.get(vmid=555) == "555"
    exc = raises(prox.cluster.nextid.get, vmid=9001)
    assert exc.status_code == 400
    assert exc.errors == {"vmid": "VM 9001 already exists"}


def test_template_present_on_every_node(prox: ProxmoxAPI) -> None:
    for node, vmid in (("pve1", 9001), ("pve2", 9002)):
        conf = prox.nodes(node).qemu(vmid).config.get()
        assert conf["template"] == 1 and conf["name"] == "debian12-cloud"
        assert conf["scsi0"].startswith(f"local-lvm:base-{vmid}-disk-0") and "size=3G" in conf[
            "scsi0"]
        assert conf["ide2"] == f"local-lvm:vm-{vmid}-cloudinit,media=cdrom"
        assert conf["agent"] == "1" and conf["serial0"] == "socket" and conf["vga"] == "serial0"
        assert conf["scsihw"] == "virtio-scsi-single"
        assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0", conf["net0"])
        assert "vmid" not in conf and len(conf["digest"]) == 40


def test_clone_holds_lock_until_done_and_task_id_is_source(prox: ProxmoxAPI) -> None:
    upid = prox.nodes("pve1").qemu(9001).clone.post(newid=101, name="gpu-a")
    assert UPID_RE.match(upid)
    assert Tasks.decode_upid(upid)["type"] == "qmclone"
    assert Tasks.decode_upid(upid)["id"] == "9001"
    assert upid.endswith(":root@pam!skyrig:")
    conf = prox.nodes("pve1").qemu(101).config.get()
    assert conf["lock"] == "clone"
    wait_ok(prox, upid)
    conf = prox.nodes("pve1").qemu(101).config.get()
    assert "lock" not in conf and "template" not in conf
    assert conf["name"] == "gpu-a"
    assert conf["scsi0"].startswith("local-lvm:base-9001-disk-0/vm-101-disk-0")
    tpl = prox.nodes("pve1").qemu(9001).config.get()
    assert conf["net0"] != tpl["net0"] and conf["smbios1"] != tpl["smbios1"]
    log = prox.nodes("pve1").tasks(upid).log.get()
    assert log[0]["t"] == "create linked clone of drive scsi0 (local-lvm:base-9001-disk-0)"
    assert log[-1] == {"n": len(log), "t": "TASK OK"}


def test_clone_errors(prox: ProxmoxAPI) -> None:
    clone(prox, 102)
    exc = raises(prox.nodes("pve1").qemu(9001).clone.post, newid=102)
    assert (exc.status_code, exc.content) == (500, "unable to create VM 102: config file "
                                                   "already exists")
    exc = raises(prox.nodes("pve1").qemu(9001).clone.post, newid=103, storage="local-lvm")
    assert exc.content == "parameter 'storage' not allowed for linked clones"
    exc = raises(prox.nodes("pve1").qemu(9001).clone.post, newid=103, target="pve2")
    assert exc.content == "can't clone VM to node 'pve2' (VM uses local storage)"
    exc = raises(prox.nodes("pve1").qemu(555).clone.post, newid=103)
    assert exc.content == "Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist"
    # full clone
    st = clone(prox, 104, full=1, storage="local-lvm")
    log = prox.nodes("pve1").tasks(st["upid"]).log.get()
    assert log[0]["t"] == "create full clone of drive scsi0 (local-lvm:base-9001-disk-0)"
    assert prox.nodes("pve1").qemu(104).config.get()["scsi0"].startswith(
        "local-lvm:vm-104-disk-0")


def test_create_sets_defaults_and_lock(prox: ProxmoxAPI, sim: PveSim) -> None:
    sim.backend.durations["qmcreate"] = 0.5
    upid = prox.nodes("pve2").qemu.post(
        vmid=200, name="fresh", memory=2048, cores=2, scsihw="virtio-scsi-single",
        scsi0="local-lvm:8,iothread=1", ide2="local-lvm:cloudinit", net0="virtio,bridge=vmbr0",
        efidisk0="local-lvm:1,efitype=4m,pre-enrolled-keys=0", bios="ovmf", agent="enabled=1")
    assert Tasks.decode_upid(upid)["type"] == "qmcreate"
    assert prox.nodes("pve2").qemu(200).config.get()["lock"] == "create"
    wait_ok(prox, upid)
    conf = prox.nodes("pve2").qemu(200).config.get()
    assert conf["scsi0"] == "local-lvm:vm-200-disk-0,iothread=1,size=8G"
    assert conf["ide2"] == "local-lvm:vm-200-cloudinit,media=cdrom"
    assert conf["efidisk0"].startswith("local-lvm:vm-200-disk-1,") and "efitype=4m" in conf[
        "efidisk0"]
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0", conf["net0"])
    assert conf["memory"] == "2048" and conf["cores"] == 2
    assert conf["smbios1"].startswith("uuid=") and "vmgenid" in conf
    assert conf["meta"].startswith("creation-qemu=")
    assert conf["boot"] == "order=scsi0;net0"
    exc = raises(prox.nodes("pve2").qemu.post, vmid=200)
    assert exc.content == "unable to create VM 200 - VM 200 already exists on node 'pve2'"
    exc = raises(prox.nodes("pve1").qemu.post, vmid=201, scsi0="nosuch:4")
    assert exc.content == "storage 'nosuch' does not exist"
    exc = raises(prox.nodes("pve1").qemu.post, vmid=201, scsi0="local:4")
    assert exc.status_code == 400
    assert exc.errors == {"storage": "storage 'local' does not support vm images"}


def test_create_with_start_runs_in_the_same_task(prox: ProxmoxAPI) -> None:
    wait_ok(prox, prox.nodes("pve1").qemu.post(vmid=300, start=1, memory=512))
    assert prox.nodes("pve1").qemu(300).status.current.get()["status"] == "running"


def test_clone_target_flock_times_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pvesim.testing import proxmox_client, running_sim

    with running_sim(tmp_path, task_durations={"clone": 1.5}, lock_timeout=0.3) as s:
        p = proxmox_client(s)
        upid = p.nodes("pve1").qemu(9001).clone.post(newid=101)
        exc = raises(p.nodes("pve1").qemu(101).config.put, cores=2)
        assert exc.content == "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
        exc = raises(p.nodes("pve1").qemu(101).delete)
        assert exc.content in ("VM is locked (clone)",
                               "can't lock file '/var/lock/qemu-server/lock-101.conf' - got "
                               "timeout")
        wait_ok(p, upid)
        p.nodes("pve1").qemu(101).config.put(cores=2)
        assert p.nodes("pve1").qemu(101).config.get()["cores"] == 2


def test_config_digest_delete_and_types(prox: ProxmoxAPI, sim: PveSim) -> None:
    clone(prox, 110)
    vm = prox.nodes("pve1").qemu(110)
    conf = vm.config.get()
    raw = sim.vm(110)
    assert raw is not None
    assert conf["digest"] == hashlib.sha1(config_text(raw["conf"]).encode()).hexdigest()
    vm.config.put(cores=4, onboot=1, memory=4096, cpulimit="0.5", digest=conf["digest"])
    conf2 = vm.config.get()
    assert conf2["cores"] == 4 and conf2["onboot"] == 1
    assert conf2["memory"] == "4096" and conf2["cpulimit"] == "0.5"
    exc = raises(vm.config.put, cores=2, digest=conf["digest"])
    assert exc.content == "checksum mismatch (file change by other user?)"
    vm.config.put(delete="onboot")
    assert "onboot" not in vm.config.get()
    exc = raises(vm.config.put, delete="nosuch")
    assert exc.errors == {"delete": "unknown option 'nosuch'"}
    exc = raises(vm.config.put, delete="cores", cores=3)
    assert exc.errors == {"delete": "you can't use '-cores' and -delete cores' at the same time"}
    exc = raises(vm.config.put)
    assert exc.content == "no options specified"
    exc = raises(vm.config.put, skiplock=1, cores=2)
    assert exc.errors == {"skiplock": "Only root may use this option."}
    exc = raises(vm.config.put, balloon=99999)
    assert exc.content == "balloon value too large (must be smaller than assigned memory)"
    vm.config.put(cipassword="secret")
    assert vm.config.get()["cipassword"] == "**********"


def test_config_post_is_async_with_task_log(prox: ProxmoxAPI) -> None:
    clone(prox, 111)
    vm = prox.nodes("pve1").qemu(111)
    upid = vm.config.post(cores=2, cipassword="pw", delete="nosuchbutvalid" if False else
                          "tags")
    st = wait(prox, upid)
    assert st["exitstatus"] == "WARNINGS: 1"
    lines = [entry["t"] for entry in prox.nodes("pve1").tasks(upid).log.get()]
    assert lines[0] == "update VM 111: -cipassword <hidden> -cores 2 -delete tags"
    assert "WARN: cannot delete 'tags' - not set in current configuration!" in lines
    assert lines[-1] == "TASK WARNINGS: 1"
    assert vm.config.get()["cores"] == 2
    assert vm.config.post(cores=3, background_delay=5) is None


def test_pending_on_running_vm_and_reboot_applies(prox: ProxmoxAPI, root: ProxmoxAPI) -> None:
    clone(prox, 120)
    vm = root.nodes("pve1").qemu(120)
    vm.config.put(machine="q35")
    wait_ok(prox, vm.status.start.post())
    vm.config.put(name="renamed", cores=4, hostpci0="0000:01:00,pcie=1",
                  ipconfig0="ip=10.1.0.20/24,gw=10.1.0.1")
    current = vm.config.get(current=1)
    assert current["name"] == "renamed"               # fast-plug
    assert current["ipconfig0"].startswith("ip=10.1.0.20")  # cloud-init is fast-plug
    assert "hostpci0" not in current and current["cores"] == 1
    merged = vm.config.get()
    assert merged["hostpci0"] == "0000:01:00,pcie=1" and merged["cores"] == 4
    pending = {p["key"]: p for p in vm.pending.get()}
    assert pending["hostpci0"] == {"key": "hostpci0", "pending": "0000:01:00,pcie=1"}
    assert pending["cores"] == {"key": "cores", "value": 1, "pending": 4}
    vm.config.put(delete="serial0")
    assert {p["key"]: p for p in vm.pending.get()}["serial0"]["delete"] == 1
    wait_ok(prox, vm.status.reboot.post())
    after = vm.config.get(current=1)
    assert after["hostpci0"] == "0000:01:00,pcie=1" and after["cores"] == 4
    assert "serial0" not in after
    assert all("pending" not in p and "delete" not in p for p in vm.pending.get())


def test_power_actions(prox: ProxmoxAPI) -> None:
    clone(prox, 130)
    vm = prox.nodes("pve1").qemu(130)
    exc = raises(vm.status.reboot.post)
    assert exc.content == "VM 130 not running"
    wait_ok(prox, vm.status.start.post())
    cur = vm.status.current.get()
    assert cur["status"] == "running" and cur["qmpstatus"] == "running"
    assert cur["agent"] == 1 and cur["ha"] == {"managed": 0}
    st = wait(prox, vm.status.start.post())
    assert st["exitstatus"] == "VM 130 already running"
    exc = raises(prox.nodes("pve1").qemu(130).delete)
    assert exc.content == "VM 130 is running - destroy failed"
    wait_ok(prox, vm.status.shutdown.post())
    assert vm.status.current.get()["status"] == "stopped"
    wait_ok(prox, vm.status.stop.post())     # stopping a stopped VM is OK


def test_delete_purge_and_unreferenced_disks(prox: ProxmoxAPI) -> None:
    clone(prox, 140)
    prox.nodes("pve1").storage("local-lvm").content.post(vmid=140, filename="vm-140-disk-9",
                                                         size="1G")
    upid = prox.nodes("pve1").qemu(140).delete(purge=1, **{"destroy-unreferenced-disks": 1})
    assert Tasks.decode_upid(upid)["type"] == "qmdestroy"
    wait_ok(prox, upid)
    vols = [v["volid"] for v in prox.nodes("pve1").storage("local-lvm").content.get()]
    assert not [v for v in vols if "-140-" in v]
    exc = raises(prox.nodes("pve1").qemu(140).config.get)
    assert exc.content == "Configuration file 'nodes/pve1/qemu-server/140.conf' does not exist"
    clone(prox, 141)
    prox.nodes("pve1").qemu(141).config.put(protection=1)
    exc = raises(prox.nodes("pve1").qemu(141).delete)
    assert exc.content == "can't remove VM 141 - protection mode enabled"


def test_resize_and_template(prox: ProxmoxAPI) -> None:
    clone(prox, 150, full=1)
    vm = prox.nodes("pve1").qemu(150)
    upid = vm.resize.put(disk="scsi0", size="+2G")
    assert Tasks.decode_upid(upid)["type"] == "resize"
    wait_ok(prox, upid)
    assert "size=5G" in vm.config.get()["scsi0"]
    assert wait(prox, vm.resize.put(disk="scsi0", size="1G"))["exitstatus"] == \
        "shrinking disks is not supported"
    assert wait(prox, vm.resize.put(disk="scsi3", size="+1G"))["exitstatus"] == \
        "disk 'scsi3' does not exist"
    assert wait(prox, vm.resize.put(disk="ide2", size="+1G"))["exitstatus"] == \
        "you can't resize a cdrom"
    wait_ok(prox, vm.template.post())
    conf = vm.config.get()
    assert conf["template"] == 1 and conf["scsi0"].startswith("local-lvm:base-150-disk-0")
    exc = raises(vm.template.post)
    assert exc.content == "you can't convert a template to a template"


def test_cloudinit_dump_and_guest_agent(prox: ProxmoxAPI) -> None:
    clone(prox, 160)
    vm = prox.nodes("pve1").qemu(160)
    keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3zbb3yqz0XK3h0Jc8mKq2cnsK6y6n6bq3s2M1o6a7b x@y"
    vm.config.put(ciuser="astro", sshkeys=urllib.parse.quote(keys, safe=""),
                  ipconfig0="ip=192.168.50.10/24,gw=192.168.50.1", nameserver="1.1.1.1")
    user = vm.cloudinit.dump.get(type="user")
    assert user.startswith("#cloud-config\n") and "user: astro" in user and keys in user
    net = vm.cloudinit.dump.get(type="network")
    assert "address: '192.168.50.10'" in net and "gateway: '192.168.50.1'" in net
    assert vm.cloudinit.dump.get(type="meta").startswith("instance-id: ")
    exc = raises(vm.agent("network-get-interfaces").get)
    assert exc.content == "VM 160 is not running"
    wait_ok(prox, vm.status.start.post())
    ifaces = vm.agent("network-get-interfaces").get()["result"]
    eth0 = next(i for i in ifaces if i["name"] == "eth0")
    assert eth0["ip-addresses"][0]["ip-address"] == "192.168.50.10"
    vm.config.put(agent=0)       # not hot-pluggable: pending, the running agent still answers
    assert vm.agent("network-get-interfaces").get()["result"]
    wait_ok(prox, vm.status.stop.post())
    assert raises(vm.agent("network-get-interfaces").get).content == "VM 160 is not running"
    vm.config.put(agent=0)       # stopped: applied at once
    exc = raises(vm.agent("network-get-interfaces").get)
    assert exc.content == "No QEMU guest agent configured"
    exc = raises(vm.config.put, sshkeys=urllib.parse.quote("not a key", safe=""))
    assert exc.content == "SSH public key validation error"


def test_tasks_list_status_log_and_unknown(prox: ProxmoxAPI) -> None:
    st = clone(prox, 170)
    upid = st["upid"]
    assert st["type"] == "qmclone" and st["user"] == "root@pam!skyrig"
    assert set(st) >= {"upid", "node", "pid", "pstart", "starttime", "type", "id", "user",
                       "status", "exitstatus"}
    tasks = prox.nodes("pve1").tasks.get()
    entry = next(t for t in tasks if t["upid"] == upid)
    assert entry["status"] == "OK" and "endtime" in entry
    assert prox.nodes("pve1").tasks.get(vmid=9001, typefilter="qmclone")[0]["upid"] == upid
    raw = prox.nodes("pve1").tasks(upid).log.get(start=0, limit=1)
    assert raw == [{"n": 1, "t": "create linked clone of drive scsi0 (local-lvm:base-9001-disk-0)"}]
    bogus = "UPID:pve1:00000001:00000001:00000001:qmstart:100:root@pam:"
    exc = raises(prox.nodes("pve1").tasks(bogus).status.get)
    assert exc.status_code == 400 and exc.errors == {"upid": "no such task"}
    exc = raises(prox.nodes("pve1").tasks("garbage").status.get)
    assert exc.errors == {"upid": "unable to parse worker upid"}


def test_unknown_node_and_missing_vm(prox: ProxmoxAPI) -> None:
    exc = raises(prox.nodes("pve9").qemu.get)
    assert exc.content == "unable to get IP for node 'pve9' - node offline?"
    exc = raises(prox.nodes("pve2").qemu(9001).config.get)
    assert exc.content == "Configuration file 'nodes/pve2/qemu-server/9001.conf' does not exist"


def test_cluster_resources_and_storage(prox: ProxmoxAPI) -> None:
    clone(prox, 180, name="res")
    res = prox.cluster.resources.get(type="vm")
    vm = next(r for r in res if r["vmid"] == 180)
    assert vm["id"] == "qemu/180" and vm["type"] == "qemu" and vm["node"] == "pve1"
    assert vm["status"] == "stopped" and vm["template"] == 0 and vm["name"] == "res"
    assert {r["type"] for r in prox.cluster.resources.get()} == {"qemu", "node", "storage", "sdn"}
    storages = prox.nodes("pve1").storage.get()
    assert {s["storage"] for s in storages} == {"local", "local-lvm"}
    content = {c["volid"]: c for c in
               prox.nodes("pve1").storage("local-lvm").content.get(vmid=180)}
    assert set(content) == {"local-lvm:vm-180-disk-0", "local-lvm:vm-180-cloudinit"}
    assert content["local-lvm:vm-180-disk-0"]["parent"] == "base-9001-disk-0"
    assert prox.nodes("pve1").status.get()["cpuinfo"]["cpus"] == 16


def test_task_waiting_is_exercised(prox: ProxmoxAPI, sim: PveSim) -> None:
    upid = prox.nodes("pve1").qemu(9001).clone.post(newid=190)
    assert prox.nodes("pve1").tasks(upid).status.get()["status"] == "running"
    t0 = time.monotonic()
    wait_ok(prox, upid)
    assert time.monotonic() - t0 > 0.05


def test_hookscript_is_checked(prox: ProxmoxAPI, sim: PveSim) -> None:
    clone(prox, 195)
    vm = prox.nodes("pve1").qemu(195)
    exc = raises(vm.config.put, hookscript="local-lvm:vm-195-disk-0")
    assert exc.errors == {"hookscript": "'local-lvm:vm-195-disk-0' is not in the snippets "
                                        "directory\n"}
    exc = raises(vm.config.put, hookscript="local:snippets/hook.pl")
    assert exc.errors == {"hookscript": "script 'local:snippets/hook.pl' does not exist\n"}
    volid = sim.add_snippet("pve1", "local", "hook.pl")
    vm.config.put(hookscript=volid)
    assert vm.config.get()["hookscript"] == "local:snippets/hook.pl"
    snippets = prox.nodes("pve1").storage("local").content.get(content="snippets")
    assert [s["volid"] for s in snippets] == ["local:snippets/hook.pl"]


def test_cloudinit_pending_and_regenerate(prox: ProxmoxAPI) -> None:
    clone(prox, 196)
    vm = prox.nodes("pve1").qemu(196)
    vm.config.put(ciuser="astro", ipconfig0="ip=dhcp")
    assert {i["key"]: i for i in vm.cloudinit.get()}["ciuser"] == {"key": "ciuser",
                                                                    "pending": "astro"}
    wait_ok(prox, vm.status.start.post())                 # the drive is generated at start
    assert all("pending" not in i for i in vm.cloudinit.get())
    vm.config.put(ciuser="other")                          # cloud-init is fast-plug ...
    items = {i["key"]: i for i in vm.cloudinit.get()}
    assert items["ciuser"] == {"key": "ciuser", "value": "astro", "pending": "other"}
    assert vm.cloudinit.put() is None                      # ... regenerate the drive
    assert {i["key"]: i for i in vm.cloudinit.get()}["ciuser"] == {"key": "ciuser",
                                                                    "value": "other"}
