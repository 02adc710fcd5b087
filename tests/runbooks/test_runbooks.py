"""Every runbook parses, names only existing skyrig commands/options and playbooks, and every
alert of the monitoring contract has the runbook its runbook_url points at."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from skyrig.cli import app
from skyrig.runbooks.parse import load_runbooks, parse_runbook

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = sorted(p for p in (ROOT / "runbooks").glob("*.md") if p.name != "README.md")

#: The contract between the alert rules and the runbooks (alert -> runbook id).
ALERTS = {
    "GpuTemperatureHigh": "gpu-health", "GpuClocksThrottled": "gpu-health",
    "GpuXidErrors": "gpu-replace", "GpuEccUncorrectable": "gpu-replace",
    "GpuRowRemapFailure": "gpu-replace", "GpuNodeMissingFromDevicePlugin": "gpu-node-missing",
    "RayHeadDown": "ray-cluster-recovery", "RayWorkerNodesLost": "ray-cluster-recovery",
    "RayJobFailed": "rayjob-failed", "RayJobPastDeadline": "rayjob-failed",
    "AnomalyScoreDrift": "score-drift", "AnomalyRejectedSpectraHigh": "score-drift",
    "AnomalyModelReleaseMismatch": "model-rollback", "ProxmoxNodeDown": "pve-node-down",
    "SkyrigVmStopped": "vm-stopped", "ScrapeTargetDown": "scrape-target-down",
}
#: Operations the lab needs a runbook for (issue 11).
OPERATIONS = ("gpu-host-prep", "add-gpu-node", "gpu-replace", "pending-reboot", "decommission",
              "ray-cluster-recovery", "rayjob-failed", "model-promotion", "model-rollback",
              "score-drift", "pve-node-down")
ROOT_CMD = typer.main.get_command(app)


def resolve(argv: list[str]) -> tuple[Any, list[str]]:
    """The click command an argv names (after ``skyrig``) and the words left for it (typer may
    vendor click, so groups are recognised by their methods, not by class)."""
    cmd: Any = ROOT_CMD
    words = list(argv)
    while hasattr(cmd, "list_commands"):
        assert words, f"`skyrig {' '.join(argv)}` names a group, not a command"
        sub = cmd.get_command(cmd.context_class(cmd), words[0])
        assert sub is not None, f"`skyrig {' '.join(argv)}`: no command {words[0]!r}"
        cmd, words = sub, words[1:]
    return cmd, words


def test_there_are_runbooks_for_every_operation() -> None:
    ids = {p.stem for p in RUNBOOKS}
    assert set(OPERATIONS) <= ids, sorted(set(OPERATIONS) - ids)


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_runbook_parses_and_its_commands_and_playbooks_exist(path: Path) -> None:
    book = parse_runbook(path)
    assert book.id == path.stem and book.steps
    text = path.read_text()
    for link in re.findall(r"\]\(([\w.-]+\.md)\)", text):
        assert (path.parent / link).is_file(), f"{path.name} links to missing {link}"
    for step in book.steps:
        if step.kind == "manual":
            continue
        argv = shlex.split(step.text)
        assert argv[0] == "skyrig", f"{path.name}:{step.line}: step {step.name} is not a skyrig" \
            " command (other tools go into manual steps)"
        cmd, rest = resolve(argv[1:])
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in known, \
                    f"{path.name}:{step.line}: `skyrig {' '.join(argv[1:3])}` has no {word}"
            elif word.endswith(".yml"):
                assert (ROOT / "playbooks" / word).is_file(), f"{path.name}: no playbook {word}"
        for var in step.variables:
            assert var in {"stack", "environment", "root", "state_dir", "model", "model_alias",
                           "tracking_uri", "workload_version"} | set(book.vars), \
                f"{path.name}:{step.line}: {{{{ {var} }}}} is neither a stack variable nor in vars"


def test_every_alert_has_the_runbook_its_url_points_at() -> None:
    books = {b.id: b for b in load_runbooks(ROOT / "runbooks")}
    for alert, rid in ALERTS.items():
        assert rid in books, f"{alert}: runbooks/{rid}.md is missing"
        assert alert in books[rid].alerts, f"runbooks/{rid}.md does not list {alert}"
    listed = {a for b in books.values() for a in b.alerts}
    assert listed <= set(ALERTS), f"runbooks answer unknown alerts: {listed - set(ALERTS)}"


def test_resolve_catches_a_missing_command_and_option() -> None:
    with pytest.raises(AssertionError, match="no command 'frobnicate'"):
        resolve(["vm", "frobnicate"])
    cmd, rest = resolve(["vm", "status", "--vmid", "1"])
    assert cmd.name == "status" and rest == ["--vmid", "1"]
    assert "--expect-no-pending" in {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
