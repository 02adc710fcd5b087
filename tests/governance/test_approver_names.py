"""`skyrig model approve` takes a person's name: never empty, never an automated step's,
never with a control character (a line break would forge lines of the model card and of the
approvals record). Refused before any version is read (exit 2). A version that is no
number is a usage error too (exit 2), for promote and rollback as well."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyrig.governance.approver import approver_problem
from skyrig.governance.registry import ApproverError, Registry
from support import make_root

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    db: Path = tmp_path_factory.mktemp("approver") / "mlflow.db"
    db.touch()  # an empty store: no version is ever read, the name is refused first
    return Registry(f"sqlite:///{db}", "qso-ae-torch")


@pytest.mark.parametrize("name", ["", "   ", "release-gates", "Automatic ", "RELEASE-GATES",
                                  "Eve\nrelease-gates", "Dr.\tA. Reviewer", "Bob\x00",
                                  "release gates", "Release_Gates", "ReleaseGates", "CI-bot ",
                                  "ci", "the pipeline", "deploy[bot]", "AUTO.", "--", "Eve\u200b",
                                  "github-actions[bot]", "CI/CD job", "Auto Deploy Bot",
                                  "dependabot[bot]", "Renovate[Bot] ", "pre-commit-ci[bot]",
                                  "release\u00a0gates", "ci\u3000bot", "cibot", "ci-runner-01",
                                  "DeployBot2", "runner 7", "Autobot", "jenkins2job"])
def test_no_person_is_refused_with_exit_2(reg: Registry, name: str) -> None:
    with pytest.raises(ApproverError) as err:
        reg.approve("1", name)
    assert err.value.exit_code == 2 and repr(name) in str(err.value)


@pytest.mark.parametrize("name", ["Dr. A. Reviewer", "Circe Autumn", "Ada Lovelace-Byron",
                                  "José Núñez", "Li Wei", "Ci Wang", "Jan Bot",
                                  "Auto Lindqvist", "Jean\u00a0Dupont", "山田\u3000太郎",
                                  "Ada\u2009Lovelace", "Cici Robotham", "Cid Botha", "Agent 007",
                                  "Jobst Gatesby"])
def test_a_person_is_not_an_automated_step(name: str) -> None:
    assert approver_problem(name) is None


@pytest.mark.parametrize("length", [201, 200_000])
def test_a_name_longer_than_a_persons_is_refused_with_exit_2(reg: Registry, length: int) -> None:
    """A 200,000-character name was written into release_decision.json, then refused by MLflow
    as the version's tag (over 100,000 characters): the two disagreed."""
    with pytest.raises(ApproverError) as err:
        reg.approve("1", "A" * length)
    assert err.value.exit_code == 2 and f"is {length} characters long" in str(err.value)
    assert len(str(err.value)) < 1000
    assert approver_problem(" " + "B" * 200 + " ") is None


def test_the_workload_applies_the_same_rule() -> None:
    """skyrig and the workload depend on nothing of each other: the rule module is the same
    file in both packages (the workload refuses at release time what skyrig refuses after)."""
    root = Path(__file__).resolve().parents[2]
    ours = root / "src/skyrig/governance/approver.py"
    theirs = root / "workloads/qso_anomaly/src/qso_anomaly/registry/approver.py"
    assert theirs.read_text() == ours.read_text(), f"{theirs} differs from {ours}: copy it"


def skyrig(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``skyrig ARGS`` on a fresh project root whose local stack has no registry yet."""
    return subprocess.run([sys.executable, "-m", "skyrig.cli", *args], cwd=tmp_path,
                          env={**os.environ, "SKYRIG_ROOT": str(make_root(tmp_path))},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["release gates", "CI-bot "])
def test_the_cli_refuses_an_automated_name_first_with_exit_2(tmp_path: Path, name: str) -> None:
    """Before the stack's registry is opened: a usage error, whatever the registry holds."""
    r = skyrig(tmp_path, "model", "approve", "--stack", "local", "--version", "1",
               "--approver", name)
    assert r.returncode == 2, r.stderr
    assert f"approver {name!r} is not a person" in r.stderr and "automated step" in r.stderr
    assert "give the name of the human who reviewed the release" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("command", "option", "value"), [
    ("approve", "--version", "abc"), ("approve", "--version", "0"),
    ("approve", "--version", "1.5"), ("approve", "--version", "-2"),
    ("promote", "--version", "abc"), ("rollback", "--to", "v2")])
def test_a_version_that_is_no_number_is_a_usage_error(tmp_path: Path, command: str,
                                                     option: str, value: str) -> None:
    args = ["--approver", "Dr. A. Reviewer"] if command == "approve" else []
    r = skyrig(tmp_path, "model", command, "--stack", "local", option, value, *args)
    assert r.returncode == 2, r.stderr
    assert f"{value!r} is not a model version" in r.stderr and "skyrig model show" in r.stderr
    assert "Traceback" not in r.stderr
