"""`skyrig runbook list | show | run` as an operator types them (exit codes, record path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

BOOK = """---
id: cli-demo
title: CLI demo
alerts: [DemoAlert]
stacks: [local]
preconditions: [nothing]
risk: low
---
```bash rollback name=undo
printf undone
```
```bash run name=first
printf '%s' {{ node }}
```
```bash check name=fails
false
```
"""


def skyrig(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYRIG_ROOT": str(root), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "skyrig.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_list_show_and_run_exit_codes(root: Path, tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "cli-demo.md").write_text(BOOK)
    r = skyrig("runbook", "list", "--alert", "GpuXidErrors", "--dir", str(REPO / "runbooks"),
               root=root)
    assert r.returncode == 0 and "gpu-replace" in r.stdout and "vm-stopped" not in r.stdout
    r = skyrig("runbook", "list", "--alert", "NoSuchAlert", "--dir", str(books), root=root)
    assert r.returncode == 1 and "no runbook answers alert NoSuchAlert" in r.stderr
    r = skyrig("runbook", "show", "cli-demo", "--dir", str(books), root=root)
    assert r.returncode == 0 and "variables: node" in r.stdout and "rollback" in r.stdout

    r = skyrig("runbook", "run", "cli-demo", "--stack", "local", "--var", "node=pve1; id",
               "--dir", str(books), root=root)
    assert r.returncode == 1, r.stderr
    assert "cli-demo failed at step fails (rolled back: undo)" in r.stderr
    assert "│ pve1; id" in r.stderr and "record:" in r.stderr
    records = list((root / ".skyrig" / "local" / "runbooks").glob("cli-demo-*.jsonl"))
    assert len(records) == 1

    r = skyrig("runbook", "run", "cli-demo", "--stack", "local", "--var", "node=x", "--dry-run",
               "--dir", str(books), root=root)
    assert r.returncode == 0, r.stderr  # `false` is a check that reads: it runs and fails
    assert "dry run: check fails fails now" in r.stderr
    r = skyrig("runbook", "run", "cli-demo", "--stack", "local", "--dir", str(books), root=root)
    assert r.returncode == 2 and "needs a value for: node" in r.stderr
