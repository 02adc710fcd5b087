"""Fault injection: error rates and codes, latency, failing tasks, lock contention, dropped
connections; deterministic for a seed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import yaml

from pvesim import PveSim
from pvesim.testing import proxmox_client, running_sim

from .conftest import FAST, clone, raises, wait

pytestmark = pytest.mark.integration


def _pattern(sim: PveSim, n: int = 30) -> list[int]:
    tid, secret = sim.root_token
    out = []
    for _ in range(n):
        resp = requests.get(sim.url + "/version", verify=str(sim.ca_path), timeout=10,
                            headers={"Authorization": f"PVEAPIToken={tid}={secret}"})
        out.append(resp.status_code)
    return out


def test_error_rate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    spec = {"requests": [{"method": "GET", "path": "/version", "rate": 0.4, "status": 503,
                          "message": "service busy"}]}
    patterns = []
    for i, seed in enumerate((7, 7, 8)):
        with running_sim(tmp_path / str(i), seed=seed) as sim:
            sim.set_faults(spec)
            patterns.append(_pattern(sim))
    assert patterns[0] == patterns[1]
    assert patterns[0] != patterns[2]
    assert set(patterns[0]) == {200, 503}
    assert 4 <= patterns[0].count(503) <= 20


def test_error_with_reason_times_and_proxmoxer(sim: PveSim) -> None:
    prox = proxmox_client(sim)
    sim.set_faults({"requests": [{"method": "POST", "path": "/nodes/{node}/qemu/{vmid}/clone",
                                  "times": 1, "status": 500,
                                  "message": "got no worker upid - start worker failed"}]})
    exc = raises(prox.nodes("pve1").qemu(9001).clone.post, newid=100)
    assert (exc.status_code, exc.content) == (500, "got no worker upid - start worker failed")
    clone(prox, 100)                      # fired once only


def test_latency_and_595(sim: PveSim) -> None:
    prox = proxmox_client(sim)
    sim.set_faults({"requests": [{"path": "/nodes/pve2/*", "latency": 0.3, "status": 595,
                                  "message": "No route to host"}]})
    t0 = time.monotonic()
    exc = raises(prox.nodes("pve2").qemu.get)
    assert time.monotonic() - t0 >= 0.3
    assert (exc.status_code, exc.content) == (595, "No route to host")
    assert exc.status_message == "Errors during connection establishment, proxy handshake"
    assert prox.nodes("pve1").qemu.get()


def test_task_failure_after_n_seconds(sim: PveSim) -> None:
    prox = proxmox_client(sim)
    sim.set_faults({"tasks": [{"type": "qmclone", "after": 0.2, "times": 1,
                               "exitstatus": "clone failed: injected storage error"}]})
    t0 = time.monotonic()
    st = wait(prox, prox.nodes("pve1").qemu(9001).clone.post(newid=100))
    assert time.monotonic() - t0 >= 0.2
    assert st["exitstatus"] == "clone failed: injected storage error"
    log = prox.nodes("pve1").tasks(st["upid"]).log.get()
    assert log[-1]["t"] == "TASK ERROR: clone failed: injected storage error"
    # like PVE, the failed clone unlinks its placeholder config and frees its volumes
    assert raises(prox.nodes("pve1").qemu(100).config.get).content == (
        "Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist")
    assert not prox.nodes("pve1").storage("local-lvm").content.get(vmid=100)
    t0 = time.monotonic()                 # and releases the target's flock at once
    clone(prox, 100)
    assert time.monotonic() - t0 < 5
    sim.set_faults({"tasks": [{"type": "qmcreate", "exitstatus": "unable to create VM 101 - x"}]})
    st = wait(prox, prox.nodes("pve1").qemu.post(vmid=101, scsi0="local-lvm:1"))
    assert st["exitstatus"] == "unable to create VM 101 - x"
    assert 101 not in [v["vmid"] for v in prox.nodes("pve1").qemu.get()]


def test_task_ending_in_warnings_does_its_work_and_cleanup(sim: PveSim) -> None:
    """A real PVE task that ends in ``WARNINGS: n`` has done its work: the clone exists,
    its placeholder lock is gone and the target's flock is released."""
    prox = proxmox_client(sim)
    sim.set_faults({"tasks": [{"type": "qmclone", "after": 0.1, "times": 1,
                               "exitstatus": "WARNINGS: 2"}]})
    st = wait(prox, prox.nodes("pve1").qemu(9001).clone.post(newid=100, name="w"))
    assert st["exitstatus"] == "WARNINGS: 2"
    conf = prox.nodes("pve1").qemu(100).config.get()
    assert "lock" not in conf and conf["name"] == "w" and "scsi0" in conf
    log = [line["t"] for line in prox.nodes("pve1").tasks(st["upid"]).log.get()]
    assert log[-1] == "TASK WARNINGS: 2" and sum(t.startswith("WARN: ") for t in log) == 2
    prox.nodes("pve1").qemu(100).config.put(cores=2)  # not locked: usable at once


def test_lock_contention_and_dropped_connection(sim: PveSim) -> None:
    prox = proxmox_client(sim)
    clone(prox, 100)
    sim.set_faults({"requests": [
        {"method": "PUT", "path": "/nodes/{node}/qemu/{vmid}/config", "times": 1,
         "lock_timeout": True},
        {"method": "GET", "path": "/cluster/resources", "times": 1, "drop": True},
    ]})
    exc = raises(prox.nodes("pve1").qemu(100).config.put, cores=2)
    assert exc.content == "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
    prox.nodes("pve1").qemu(100).config.put(cores=2)
    with pytest.raises(requests.exceptions.ConnectionError):
        prox.cluster.resources.get()
    assert prox.cluster.resources.get()


def test_faults_file_and_admin_endpoint(tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"seed": 3, "requests": [
        {"method": "GET", "path": "/nodes", "status": 500, "message": "injected"}]}))
    with PveSim(tmp_path / "s.json", faults=faults, task_durations=FAST) as sim:
        prox = proxmox_client(sim)
        assert raises(prox.nodes.get).content == "injected"
        tid, secret = sim.root_token
        hdr = {"Authorization": f"PVEAPIToken={tid}={secret}"}
        resp = requests.put(f"https://127.0.0.1:{sim.port}/_pvesim/faults", json={},
                            headers=hdr, verify=str(sim.ca_path), timeout=10)
        assert resp.status_code == 200 and resp.json()["data"]["requests"] == []
        assert prox.nodes.get()
        counts = requests.get(f"https://127.0.0.1:{sim.port}/_pvesim/request-counts",
                              headers=hdr, verify=str(sim.ca_path), timeout=10).json()["data"]
        assert {"method": "GET", "path": "/nodes", "count": 2} in counts


def test_request_counts_per_template(sim: PveSim) -> None:
    prox = proxmox_client(sim)
    sim.reset_request_counts()
    prox.nodes("pve1").qemu(9001).config.get()
    prox.nodes("pve2").qemu(9002).config.get()
    prox.cluster.resources.get()
    assert sim.request_counts() == {("GET", "/nodes/{node}/qemu/{vmid}/config"): 2,
                                    ("GET", "/cluster/resources"): 1}
    assert all(method == "GET" for method, _ in sim.request_counts())
