"""Endpoint resolution: explicit override, $SKYRIG_PVESIM_ENDPOINT, the stack file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyrig.errors import SkyrigConfigError
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint, resolve_endpoint
from support import make_root, stack

pytestmark = pytest.mark.unit

SIM = {"url": "https://127.0.0.1:18006", "token_id": "root@pam!skyrig", "token_secret": "s3",
       "ca_path": "/state/ca.pem"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def test_override_wins(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PVESIM_ENV, json.dumps(SIM))
    ep = Endpoint(url="https://127.0.0.1:1", token_id="a@pve!b", token_secret="x")
    assert resolve_endpoint(stack(root, "prod"), ep) is ep


def test_env_points_any_stack_at_pvesim(root: Path, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv(PVESIM_ENV, json.dumps(SIM))
    assert resolve_endpoint(stack(root, "prod")) == Endpoint.from_dict(SIM)
    f = tmp_path / "sim.json"
    f.write_text(json.dumps(SIM))
    monkeypatch.setenv(PVESIM_ENV, str(f))
    assert resolve_endpoint(stack(root, "dev")).verify == "/state/ca.pem"


def test_stack_file_with_token_from_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PVESIM_ENV, raising=False)
    monkeypatch.setenv("SKYRIG_PROXMOX_TOKEN_SECRET", "tok")
    ep = resolve_endpoint(stack(root, "prod"))
    assert ep.url == "https://pve01.astro-lab.internal:8006"
    assert (ep.token_id, ep.token_secret) == ("skyrig@pve!provision", "tok")
    assert ep.verify == "/etc/skyrig/pve-root-ca.pem"


def test_embedded_stack_without_a_running_sim_is_a_clear_error(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PVESIM_ENV, raising=False)
    with pytest.raises(SkyrigConfigError, match="no running simulator"):
        resolve_endpoint(stack(root, "local"))


def test_missing_secret_is_a_clear_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PVESIM_ENV, raising=False)
    monkeypatch.delenv("SKYRIG_PROXMOX_TOKEN_SECRET", raising=False)
    with pytest.raises(SkyrigConfigError, match="SKYRIG_PROXMOX_TOKEN_SECRET"):
        resolve_endpoint(stack(root, "prod"))


def test_env_pvesim_state_gives_the_stacks_least_privilege_token(
        root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    st = stack(root, "local")
    token_id = st.config.proxmox.token_id
    assert not token_id.startswith("root@pam!")
    state = tmp_path / "pvesim"
    state.mkdir()
    (state / "endpoint.json").write_text(json.dumps(
        {**SIM, "pid": 1, "tokens": {token_id: "least", "other@pve!x": "no"}}))
    monkeypatch.setenv(PVESIM_ENV, str(state))
    ep = resolve_endpoint(st)
    assert (ep.token_id, ep.token_secret) == (token_id, "least")
    # a stack that names a token pvesim did not bootstrap still gets what the file names
    monkeypatch.setenv(PVESIM_ENV, json.dumps({**SIM, "tokens": {}}))
    assert resolve_endpoint(st).token_id == "root@pam!skyrig"
