"""Persistence: restart continues where it stopped; a kill mid-task keeps acknowledged state
and ends running tasks as failed; writes are atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvesim import PveSim
from pvesim.backend import INTERRUPTED
from pvesim.store import write_atomic
from pvesim.testing import proxmox_client

from .conftest import FAST, clone, wait, wait_ok

pytestmark = pytest.mark.integration


def test_restart_keeps_vms_users_mappings_and_tasks(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with PveSim(state, task_durations=FAST) as sim:
        prox = proxmox_client(sim)
        st = clone(prox, 100, name="kept")
        prox.nodes("pve1").qemu(100).config.put(cores=3)
        prox.cluster.mapping.pci.post(id="gpu0", map=["node=pve1,path=0000:01:00,id=10de:24b0"])
        sim.add_user("ci@pve", "pw")
        secret = sim.add_token("ci@pve", "ci", privsep=False)
        token = sim.root_token
        ca = sim.ca_path.read_bytes()
    with PveSim(state, task_durations=FAST) as sim:
        assert sim.root_token == token and sim.ca_path.read_bytes() == ca
        prox = proxmox_client(sim)
        conf = prox.nodes("pve1").qemu(100).config.get()
        assert conf["name"] == "kept" and conf["cores"] == 3
        assert prox.nodes("pve1").tasks(st["upid"]).status.get()["exitstatus"] == "OK"
        assert [m["id"] for m in prox.cluster.mapping.pci.get()] == ["gpu0"]
        assert proxmox_client(sim, token=("ci@pve!ci", secret)).version.get()
        assert prox.cluster.nextid.get() == "101"


def _serve(state: Path, endpoint: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pvesim", "serve", "--state", str(state), "--port", "0",
           "--endpoint-file", str(endpoint), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not endpoint.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "no start")
        time.sleep(0.05)
    return proc


def _client(endpoint: Path):  # type: ignore[no-untyped-def]
    from proxmoxer import ProxmoxAPI

    ep = json.loads(endpoint.read_text())
    user, name = ep["token_id"].split("!")
    return ProxmoxAPI("127.0.0.1", port=ep["port"], user=user, token_name=name,
                      token_value=ep["token_secret"], verify_ssl=ep["ca_path"], timeout=10)


def test_kill_mid_task_keeps_acknowledged_state(tmp_path: Path) -> None:
    state, endpoint = tmp_path / "state.json", tmp_path / "ep.json"
    proc = _serve(state, endpoint, "--task-duration", "clone=30", "--task-duration", "config=0")
    try:
        prox = _client(endpoint)
        prox.nodes("pve1").qemu(9001).config.put(description="acknowledged")
        upid = prox.nodes("pve1").qemu(9001).clone.post(newid=100)
        assert prox.nodes("pve1").tasks(upid).status.get()["status"] == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    endpoint.unlink()
    proc = _serve(state, endpoint)
    try:
        prox = _client(endpoint)
        st = prox.nodes("pve1").tasks(upid).status.get()
        assert st["status"] == "stopped" and st["exitstatus"] == INTERRUPTED
        log = prox.nodes("pve1").tasks(upid).log.get()
        assert log[-1]["t"] == f"TASK ERROR: {INTERRUPTED}"
        assert prox.nodes("pve1").qemu(9001).config.get()["description"] == "acknowledged"
        # the clone target was acknowledged (it exists, locked, like a real interrupted clone)
        assert prox.nodes("pve1").qemu(100).config.get()["lock"] == "clone"
        exc_content = None
        try:
            prox.nodes("pve1").qemu(100).config.put(cores=2)
        except Exception as exc:
            exc_content = getattr(exc, "content", None)
        assert exc_content == "VM is locked (clone)"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_write_atomic_never_leaves_a_torn_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "state.json"
    write_atomic(target, '{"ok": 1}')
    real_fsync = os.fsync

    def crash(fd: int) -> None:
        raise OSError("simulated crash during fsync")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomic(target, '{"ok": 2, "partial": true}')
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_every_acknowledged_change_is_on_disk(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with PveSim(state, task_durations=FAST) as sim:
        prox = proxmox_client(sim)
        st = clone(prox, 100)
        prox.nodes("pve1").qemu(100).config.put(memory=3072)
        on_disk = json.loads(state.read_text())
        assert on_disk["vms"]["100"]["conf"]["memory"] == "3072"
        assert on_disk["tasks"][st["upid"]]["exitstatus"] == "OK"
        upid = prox.nodes("pve1").qemu(100).status.start.post()
        assert upid in json.loads(state.read_text())["tasks"]
        wait(prox, upid)
        wait_ok(prox, prox.nodes("pve1").qemu(100).status.stop.post())


@pytest.mark.unit
def test_serialisation_cache_tracks_task_changes(tmp_path: Path) -> None:
    from pvesim.store import StateStore

    st = StateStore(tmp_path / "s.json")
    st.data = {"format": 1, "vms": {"1": {"a": [1, 2]}},
               "tasks": {"U1": {"status": "stopped", "log": ["x"]},
                         "U2": {"status": "running", "log": []}}}
    assert json.loads(st._serialise()) == st.data
    st.data["tasks"]["U2"]["status"] = "stopped"
    st.data["tasks"]["U2"]["log"].append("TASK OK")
    del st.data["tasks"]["U1"]
    st.data["tasks"]["U1"] = {"status": "stopped", "log": ["replaced"]}
    assert json.loads(st._serialise()) == st.data
    st.commit()
    assert json.loads((tmp_path / "s.json").read_text()) == st.data
