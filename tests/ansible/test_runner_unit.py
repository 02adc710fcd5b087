"""Event handling and the CLI's inventory path, without running Ansible."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skyrig.ansible import AnsibleRunFailed, AnsibleRunResult, resolve_playbook
from skyrig.ansible.events import MAX_MESSAGE, EventCollector, failure_message
from skyrig.errors import SkyrigConfigError

REPO = Path(__file__).resolve().parents[2]


def _event(kind: str, **data: object) -> dict[str, object]:
    return {"event": kind, "event_data": data}


def test_collector_keeps_only_failures_that_count() -> None:
    seen: list[str] = []
    c = EventCollector(lambda e: seen.append(str(e["event"])))
    c(_event("runner_on_failed", host="a", task="rescued one", res={"msg": "boom"}))
    c(_event("runner_on_failed", host="b", task="ignored", res={"msg": "x"}, ignore_errors=True))
    c(_event("runner_on_failed", host="b", task="Install", res={"stderr": "E: no package\n"}))
    c(_event("runner_on_unreachable", host="c", task="Gather", res={"msg": "refused"}))
    c(
        _event(
            "playbook_on_stats",
            ok={"a": 3, "b": 1},
            changed={"a": 1},
            failures={"b": 1},
            dark={"c": 1},
            rescued={"a": 1},
        )
    )
    assert len(seen) == 5
    assert c.hosts["a"].successful and c.hosts["a"].rescued == 1
    assert c.hosts["c"].unreachable == 1
    rendered = [f.render() for f in c.final_failures()]
    assert rendered == [
        "FAILED: host b, task 'Install': E: no package",
        "UNREACHABLE: host c, task 'Gather': refused",
    ]


def test_failure_message_looks_into_loop_results() -> None:
    res = {"results": [{"failed": False, "msg": "fine"}, {"failed": True, "msg": "item 2 broke"}]}
    assert failure_message(res) == "item 2 broke"
    assert failure_message({}) == "no message"
    assert len(failure_message({"msg": "x" * 5000})) == MAX_MESSAGE


def test_failed_error_names_every_failure(tmp_path: Path) -> None:
    c = EventCollector()
    c(_event("runner_on_failed", host="pve1", task="Refuse unsafe", res={"msg": "group 7"}))
    result = AnsibleRunResult(
        playbook="host-prep.yml", ident="x", status="failed", rc=2, artifact_dir=tmp_path,
        failures=c.final_failures(),
    )
    err = AnsibleRunFailed(result)
    assert "host pve1, task 'Refuse unsafe': group 7" in str(err)
    assert str(tmp_path) in str(err)


def test_resolve_playbook_by_name_and_unknown() -> None:
    assert resolve_playbook("host-prep", REPO) == REPO / "playbooks" / "host-prep.yml"
    assert resolve_playbook("site.yml", REPO) == REPO / "playbooks" / "site.yml"
    with pytest.raises(SkyrigConfigError, match=r"known playbooks: .*host-prep"):
        resolve_playbook("nope", REPO)


def test_cli_inventory_only_prints_the_stack_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from skyrig.ansible.cli import app

    monkeypatch.chdir(REPO)
    out = CliRunner().invoke(app, ["run", "site", "--stack", "local", "--inventory-only"])
    assert out.exit_code == 0, out.output
    inventory = yaml.safe_load(out.stdout)
    children = inventory["all"]["children"]
    groups = ("proxmox_hosts", "gpu_guests", "k8s_cluster", "ray_cluster", "monitoring_targets")
    for group in groups:
        assert group in children
