"""Run `molecule test` (create, converge, idempotence, verify, destroy) for every role.

Roles are discovered by their roles/<role>/molecule/default scenario, so a new role is tested as
soon as it has one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, podman_env

SCENARIOS = sorted(
    p.parents[2].name for p in (REPO / "roles").glob("*/molecule/default/molecule.yml")
)

pytestmark = [pytest.mark.roles, pytest.mark.slow]


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("role", SCENARIOS)
def test_molecule_scenario(role: str, systemd_image: str, tmp_path: Path) -> None:
    log = tmp_path / f"molecule-{role}.log"
    with log.open("w") as out:
        proc = subprocess.run(
            ["molecule", "test", "--scenario-name", "default"],
            cwd=REPO / "roles" / role,
            env=podman_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1400,
            check=False,
        )
    text = log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-80:])
    assert proc.returncode == 0, f"molecule test failed for role {role} (log {log}):\n{tail}"
    # The idempotence step ran and passed (a scenario that drops it must not pass silently).
    assert "idempotence" in text.lower(), f"no idempotence step in the {role} scenario:\n{tail}"


def test_every_role_has_a_scenario() -> None:
    roles = sorted(
        p.name for p in (REPO / "roles").iterdir() if p.is_dir() and not p.name.startswith("_")
    )
    missing = [r for r in roles if r not in SCENARIOS]
    assert not missing, f"roles without a molecule/default scenario: {missing}"
