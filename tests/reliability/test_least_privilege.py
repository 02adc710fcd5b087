"""The local stack provisions with least privilege: pvesim's bootstrap (root used only for
that) creates skyrig@pve and its privilege-separated token with exactly the documented role;
a full `up`/`down` of the infra layer works with it, every PVE task runs as that token, and a
call outside the role gets PVE's 403."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from skyrig.proxmox.privileges import MINIMAL_PRIVILEGES
from support import REPO

pytestmark = pytest.mark.integration

TOKEN = "skyrig@pve!provision"


def _skyrig(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skyrig.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _grants(state: dict, ugid: str) -> dict[str, set[str]]:
    return {e["path"]: set(state["roles"][e["roleid"]]) for e in state["acl"]
            if e["ugid"] == ugid}


def test_local_stack_runs_with_the_minimal_role(tmp_path: Path) -> None:
    stack = tmp_path / "stacks" / "Pulumi.local.yaml"
    stack.parent.mkdir()
    text = (REPO / "stacks" / "Pulumi.local.yaml").read_text()
    assert f"token_id: {TOKEN}" in text  # the shipped local stack uses the token, not root
    stack.write_text(text)
    state_dir = tmp_path / "state"
    env = {**os.environ, "SKYRIG_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    pdir = state_dir / "local" / "pvesim"
    try:
        up = _skyrig("up", "--stack", str(stack), "--only", "infra", env=env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"token {TOKEN}" in up.stdout
        ep = json.loads((pdir / "endpoint.json").read_text())
        secret = ep["tokens"][TOKEN]
        state = json.loads((pdir / "state.json").read_text())
        want = {p: set(v) for p, v in MINIMAL_PRIVILEGES.items()}
        assert _grants(state, TOKEN) == want  # exactly the documented role ...
        assert _grants(state, "skyrig@pve") == want  # ... and privsep: token ∩ user
        assert state["users"]["skyrig@pve"]["tokens"]["provision"]["privsep"] == 1
        tasks = list(state["tasks"].values())
        assert tasks and {t["user"] for t in tasks} == {TOKEN}  # no call needed root
        assert secret not in (pdir / "pvesim.log").read_text()

        # A call outside the role (VM.Migrate is not in it) gets PVE's 403.
        host, port = ep["url"].split("//", 1)[1].split("/", 1)[0].split(":")
        api = ProxmoxAPI(host, port=int(port), user="skyrig@pve", token_name="provision",
                         token_value=secret, verify_ssl=ep["ca_path"], service="PVE")
        with pytest.raises(ResourceException) as info:
            api.nodes("pve1").qemu(301).migrate.post(target="pve2", online=0)
        assert info.value.status_code == 403
        assert "VM.Migrate" in str(info.value.content) or "Permission" in str(info.value)
        with pytest.raises(ResourceException) as info:
            api.nodes("pve1").qemu(301).config.put(hostpci1="0000:01:00,pcie=1")
        # raw passthrough is root-only; PVE answers it with a die (HTTP 500), as pvesim does
        assert "only root can set 'hostpci1'" in str(info.value)

        down = _skyrig("down", "--stack", str(stack), "--only", "infra", env=env)
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
        assert "4 resources deleted" in down.stdout
    finally:
        _skyrig("down", "--stack", str(stack), "--only", "infra", env=env)
    state = json.loads((pdir / "state.json").read_text())
    assert {t["user"] for t in state["tasks"].values()} == {TOKEN}
