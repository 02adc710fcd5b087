"""Runbooks are executable: every skyrig command and playbook they name exists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = sorted((ROOT / "runbooks").glob("*.md"))


def _commands(text: str) -> list[list[str]]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if "skyrig " in line and not line.startswith("#"):
                words = shlex.split(line.replace('"$STACK"', "local"))
                start = next(i for i, w in enumerate(words) if w.endswith("skyrig"))
                out.append(words[start + 1 :])
    return out


def test_there_are_runbooks() -> None:
    assert len(RUNBOOKS) >= 6


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_runbook_commands_exist(runbook: Path) -> None:
    text = runbook.read_text()
    for link in re.findall(r"\]\(([\w.-]+\.md)\)", text):
        assert (runbook.parent / link).is_file(), f"{runbook.name} links to missing {link}"
    for args in _commands(text):
        words = [w for w in args if not w.startswith("-")]
        # the subcommand path (e.g. `ansible run`) answers --help
        sub = words[:2] if words and words[0] in ("ansible", "pvesim") else words[:1]
        r = subprocess.run([sys.executable, "-m", "skyrig.cli", *sub, "--help"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 0, f"{runbook.name}: `skyrig {' '.join(sub)}` does not exist"
        for w in words:
            if w.endswith(".yml"):
                assert (ROOT / "playbooks" / w).is_file(), f"{runbook.name}: no playbook {w}"
