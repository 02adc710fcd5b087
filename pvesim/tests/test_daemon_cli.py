"""The background daemon for the local stack and the typer CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pvesim import daemon
from pvesim.cli import app

pytestmark = pytest.mark.integration


def test_ensure_running_is_idempotent_and_stop(tmp_path: Path) -> None:
    state_dir = tmp_path / "pvesim"
    try:
        ep = daemon.ensure_running(state_dir, hardware="lab")
        assert ep.url.startswith("https://127.0.0.1:") and ep.url.endswith("/api2/json")
        assert ep.ca_path.is_file() and ep.token_id == "root@pam!skyrig"
        token_file = state_dir / "root-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token_file.read_text().strip() == f"{ep.token_id}={ep.token_secret}"
        again = daemon.ensure_running(state_dir, hardware="lab")
        assert again == ep
        from proxmoxer import ProxmoxAPI

        prox = ProxmoxAPI(ep.host, port=ep.port, user="root@pam", token_name="skyrig",
                          token_value=ep.token_secret, verify_ssl=str(ep.ca_path))
        assert len(prox.nodes.get()) == 7
    finally:
        assert daemon.stop(state_dir) is True
    assert daemon.running(state_dir) is None
    assert not (state_dir / "pvesim.pid").exists()
    assert daemon.stop(state_dir) is False
    with pytest.raises(ProcessLookupError):
        os.kill(ep.pid, 0)


def test_cli_reset_and_bad_hardware(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "s.json"
    state.write_text("{}")
    (tmp_path / "s.json.tls").mkdir()
    result = runner.invoke(app, ["reset", "--state", str(state)])
    assert result.exit_code == 0, result.output
    assert not state.exists() and not (tmp_path / "s.json.tls").exists()
    result = runner.invoke(app, ["serve", "--state", str(state), "--hardware", "nope",
                                 "--port", "0"])
    assert result.exit_code == 2  # bad input: usage/config error
    assert "hardware profile 'nope' not found" in result.output
