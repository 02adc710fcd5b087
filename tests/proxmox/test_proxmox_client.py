"""PveClient: wire encoding, typed errors, retries, and the raw-hostpci guard (no PVE needed)."""

from __future__ import annotations

import pytest

from skyrig.errors import ProxmoxError
from skyrig.proxmox.client import PveClient, RetryPolicy, encode_params, is_missing, is_transient
from skyrig.proxmox.endpoint import Endpoint

pytestmark = pytest.mark.unit

# Nothing listens on port 1 of loopback: connections are refused at once.
DEAD = Endpoint(url="https://127.0.0.1:1", token_id="skyrig@pve!provision",
                token_secret="not-a-secret", ca_path=None)


def test_booleans_travel_as_1_and_0_and_none_is_dropped() -> None:
    assert encode_params({"full": True, "onboot": False, "storage": None, "cores": 4,
                          "map": ["a", "b"]}) == {"full": 1, "onboot": 0, "cores": 4,
                                                  "map": ["a", "b"]}


@pytest.mark.parametrize(("status", "message", "transient"), [
    (None, "connection reset", True),
    (503, "Service Unavailable", True),
    (595, "No route to host", True),
    (500, "can't lock file '/var/lock/qemu-server/lock-301.conf' - got timeout", True),
    (500, "got no worker upid - start worker failed", True),
    (500, "unable to create VM 301 - VM 301 already exists on node 'pve1'", False),
    (400, "Parameter verification failed.", False),
    (403, "Permission check failed (/vms/301, VM.Allocate)", False),
])
def test_transient_classification(status: int | None, message: str, transient: bool) -> None:
    err = ProxmoxError("x", status=status, pve_message=message)
    assert is_transient(err) is transient


def test_missing_is_recognised_from_pve_texts() -> None:
    assert is_missing(ProxmoxError("x", status=500, pve_message=(
        "Configuration file 'nodes/pve1/qemu-server/301.conf' does not exist")))
    assert not is_missing(ProxmoxError("x", status=500, pve_message="VM is locked (clone)"))


def test_reads_are_retried_a_bounded_number_of_times_then_raise_typed_error() -> None:
    slept: list[float] = []
    client = PveClient(DEAD, retry=RetryPolicy(attempts=3, backoff_s=0.1), timeout=2,
                       sleep=slept.append)
    with pytest.raises(ProxmoxError) as info:
        client.request("GET", "nodes/pve1/qemu/301/config", node="pve1", vmid=301)
    assert info.value.status is None
    assert info.value.node == "pve1" and info.value.vmid == 301
    assert "127.0.0.1:1" in str(info.value)
    assert slept == [0.1, 0.2]  # two retries with backoff, then the error
    assert client.call_counts() == {"GET": 3}


def test_mutations_are_not_resent_after_a_lost_connection_by_default() -> None:
    slept: list[float] = []
    client = PveClient(DEAD, retry=RetryPolicy(attempts=3), timeout=2, sleep=slept.append)
    with pytest.raises(ProxmoxError):
        client.request("POST", "nodes/pve1/qemu/9001/clone", {"newid": 301})
    assert slept == []
    assert client.call_counts() == {"POST": 1}


def test_token_session_never_sends_raw_host_pci() -> None:
    client = PveClient(DEAD, retry=RetryPolicy(attempts=1))
    with pytest.raises(ProxmoxError, match="only root@pam with a ticket") as info:
        client.request("POST", "nodes/pve1/qemu/301/config", {"hostpci0": "0000:01:00,pcie=1"})
    assert "mapping" in str(info.value)
    assert client.call_counts() == {}  # refused before anything was sent


def test_http_endpoint_is_refused() -> None:
    with pytest.raises(ProxmoxError, match="HTTPS only"):
        PveClient(Endpoint(url="http://127.0.0.1:8006", token_id="a@pve!b", token_secret="s"))


def test_endpoint_repr_hides_the_secret() -> None:
    assert "not-a-secret" not in repr(DEAD)
    assert DEAD.verify is True
    assert Endpoint(url="https://x", token_id="a@pve!b", token_secret="s",
                    ca_path="/ca.pem").verify == "/ca.pem"
