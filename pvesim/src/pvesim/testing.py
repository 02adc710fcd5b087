"""Pytest helpers for other suites.

Wrap as a fixture in your ``conftest.py``::

    import pytest
    from pvesim.testing import running_sim

    @pytest.fixture
    def pvesim(tmp_path):
        with running_sim(tmp_path) as sim:     # hardware="lab", task_durations={...}, ...
            yield sim

    def test_something(pvesim):
        prox = proxmox_client(pvesim)          # token auth as root@pam!skyrig
        assert prox.version.get()["release"] == "8.4"
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvesim.sim import PveSim


@contextlib.contextmanager
def running_sim(tmp_path: Path, hardware: str | Path = "local", **kw: Any) -> Iterator[PveSim]:
    """Start a PveSim with its state in ``tmp_path``; stop it afterwards."""
    state = Path(tmp_path) / kw.pop("state_name", "pvesim-state.json")
    sim = PveSim(state, hardware=hardware, **kw)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def proxmox_client(sim: PveSim, *, token: tuple[str, str] | None = None,
                   password: tuple[str, str] | None = None, timeout: int = 15) -> Any:
    """A ``proxmoxer.ProxmoxAPI`` for ``sim`` (root token by default; verifies TLS by CA)."""
    from proxmoxer import ProxmoxAPI

    common = {"port": sim.port, "verify_ssl": str(sim.ca_path), "timeout": timeout}
    if password is not None:
        return ProxmoxAPI(sim.host, user=password[0], password=password[1], **common)
    token_id, secret = token or sim.root_token
    user, name = token_id.split("!", 1)
    return ProxmoxAPI(sim.host, user=user, token_name=name, token_value=secret, **common)
