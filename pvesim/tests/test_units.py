"""Fast unit tests of pvesim's building blocks (no server)."""

from __future__ import annotations

import pytest
from proxmoxer.tools import Tasks

from pvesim.auth import (
    Caller,
    effective_privs,
    make_csrf,
    make_ticket,
    verify_csrf,
    verify_ticket,
)
from pvesim.formats import FormatError, check_ssh_keys
from pvesim.tasks import is_error_status, upid_decode, upid_encode
from pvesim.validation import parse_property_string, print_property_string
from pvesim.vmconfig import config_text, drive_format, format_size, size_bytes

pytestmark = pytest.mark.unit


def test_upid_matches_pve_and_proxmoxer() -> None:
    upid = upid_encode("pve", 0x1A2B3, 0xC0FFEE, 0x6720B1C4, "qmclone", "9000", "root@pam!tf")
    assert upid == "UPID:pve:0001A2B3:00C0FFEE:6720B1C4:qmclone:9000:root@pam!tf:"
    decoded = Tasks.decode_upid(upid)
    assert decoded["type"] == "qmclone" and decoded["user"] == "root@pam"
    parsed = upid_decode(upid)
    assert parsed is not None and parsed.user == "root@pam!tf" and parsed.id == "9000"
    assert upid_decode("UPID:pve:1:2:3:x:y:z") is None
    assert upid_decode("UPID:pve1:0020C066:042DF204:69C26EB0:vzdump::root@pam:") is not None


def test_exit_status_classification() -> None:
    assert not is_error_status("OK") and not is_error_status("WARNINGS: 3")
    assert is_error_status("unexpected status") and is_error_status("WARNINGS: x")


def test_ticket_and_csrf_lifetime() -> None:
    secret = "s" * 64
    ticket = make_ticket(secret, "root@pam", now=1_000_000)
    assert ticket.startswith("PVE:root@pam:000F4240::")
    assert verify_ticket(secret, ticket, now=1_000_000 + 7199) == "root@pam"
    assert verify_ticket(secret, ticket, now=1_000_000 + 7201) is None
    assert verify_ticket("other" * 10, ticket, now=1_000_000) is None
    assert verify_ticket(secret, ticket.replace("root@pam", "evil@pve"), now=1_000_000) is None
    csrf = make_csrf(secret, "root@pam", now=1_000_000)
    assert verify_csrf(secret, csrf, "root@pam", now=1_000_100)
    assert not verify_csrf(secret, csrf, "other@pve", now=1_000_100)


def test_privileges_deepest_path_privsep_and_propagate() -> None:
    state = {
        "users": {"u@pve": {"tokens": {"t": {"privsep": 1}, "full": {"privsep": 0}}},
                  "root@pam": {"tokens": {"x": {"privsep": 1}}}},
        "roles": {},
        "acl": [
            {"path": "/", "ugid": "u@pve", "type": "user", "roleid": "PVEAuditor",
             "propagate": 1},
            {"path": "/vms/100", "ugid": "u@pve", "type": "user", "roleid": "PVEVMAdmin",
             "propagate": 1},
            {"path": "/vms", "ugid": "u@pve", "type": "user", "roleid": "NoAccess",
             "propagate": 0},
            {"path": "/vms", "ugid": "u@pve!t", "type": "token", "roleid": "PVEVMUser",
             "propagate": 1},
        ],
    }
    user = Caller("u@pve")
    assert "VM.Allocate" in effective_privs(state, user, "/vms/100")
    assert effective_privs(state, user, "/vms/101") == {
        "Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit"}
    assert effective_privs(state, user, "/vms") == set()        # NoAccess, exact path only
    token = Caller("u@pve", "t")
    assert effective_privs(state, token, "/vms/100") == {
        "VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console",
        "VM.PowerMgmt"}
    assert "VM.Allocate" in effective_privs(state, Caller("u@pve", "full"), "/vms/100")
    assert effective_privs(state, Caller("root@pam", "x"), "/vms/1") == set()
    assert not Caller("root@pam", "x").is_root and Caller("root@pam").is_root


def test_property_strings_round_trip() -> None:
    fmt = drive_format("scsi0")
    parsed = parse_property_string(fmt, "local-lvm:vm-100-disk-0,iothread=on,size=32G", "scsi0")
    assert parsed["file"] == "local-lvm:vm-100-disk-0" and parsed["iothread"] == 1
    assert print_property_string(fmt, parsed) == "local-lvm:vm-100-disk-0,iothread=1,size=32G"
    with pytest.raises(FormatError, match="duplicate key in comma-separated list property: "
                                          "size"):
        parse_property_string(fmt, "local-lvm:1,size=1G,size=2G", "scsi0")


def test_sizes_and_ssh_keys() -> None:
    assert size_bytes("3G") == 3 * 1024**3 and size_bytes("512M") == 512 * 1024**2
    assert format_size(5 * 1024**3) == "5G" and format_size(4 * 1024**2) == "4M"
    assert check_ssh_keys("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3 a@b\n# comment\n")
    assert check_ssh_keys('from="10.0.0.0/8" ssh-rsa AAAAB3NzaC1yc2E= c')
    assert not check_ssh_keys("ssh-ed25519")


def test_config_text_has_pending_section() -> None:
    text = config_text({"name": "a", "description": "two\nlines", "cores": "2"},
                       {"cores": "4"}, {"net0": 1, "tags": 0})
    assert text == ("#two\n#lines\ncores: 2\nname: a\n\n[PENDING]\ndelete: !net0,tags\n"
                    "cores: 4\n")
