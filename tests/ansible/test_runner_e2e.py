"""`run_playbook` end to end against a podman container: success, a failing task, an
unreachable host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skyrig.ansible import AnsibleRunFailed, run_playbook
from skyrig.errors import AnsibleRunError

PLAYBOOKS = Path(__file__).parent / "playbooks"
pytestmark = [pytest.mark.roles, pytest.mark.timeout(600)]


def test_success_reports_changes_and_keeps_artifacts(
    target_vars: dict[str, str], tmp_path: Path
) -> None:
    events: list[dict[str, Any]] = []
    inventory = {"all": {"hosts": {"target": target_vars}}}
    result = run_playbook(
        str(PLAYBOOKS / "ok.yml"),
        inventory,
        private_data_dir=tmp_path / "pdd",
        extravars={"marker": "first"},
        on_event=events.append,
        quiet=True,
    )
    assert result.successful
    assert result.status == "successful" and result.rc == 0
    host = result.hosts["target"]
    assert (host.ok, host.changed, host.failed, host.unreachable) == (3, 1, 0, 0)
    assert result.failures == []
    # artifacts are kept under private_data_dir/artifacts/<ident>
    assert result.artifact_dir == tmp_path / "pdd" / "artifacts" / result.ident
    assert (result.artifact_dir / "stdout").is_file()
    assert "Write the marker" in (result.artifact_dir / "stdout").read_text()
    started = [
        e["event_data"]["task"] for e in events if e.get("event") == "playbook_on_task_start"
    ]
    assert started == ["Write the marker", "Read the marker back", "Check the marker"]

    again = run_playbook(
        str(PLAYBOOKS / "ok.yml"),
        inventory,
        private_data_dir=tmp_path / "pdd",
        extravars={"marker": "first"},
        quiet=True,
    )
    assert again.hosts["target"].changed == 0
    assert again.ident != result.ident


def test_failing_task_names_host_and_task(target_vars: dict[str, str], tmp_path: Path) -> None:
    inventory = {"all": {"hosts": {"target": target_vars}}}
    with pytest.raises(AnsibleRunFailed) as caught:
        run_playbook(str(PLAYBOOKS / "fail.yml"), inventory, private_data_dir=tmp_path, quiet=True)
    err = caught.value
    assert isinstance(err, AnsibleRunError)
    result = err.result
    assert not result.successful and result.rc != 0
    assert result.hosts["target"].failed == 1
    [failure] = result.failures
    assert (failure.host, failure.task, failure.unreachable) == ("target", "Fail on purpose", False)
    assert "disk /dev/nope is missing" in failure.message
    text = str(err)
    assert "host target" in text and "task 'Fail on purpose'" in text
    assert str(result.artifact_dir) in text


def test_unreachable_host_is_reported(
    target_vars: dict[str, str], closed_port: int, tmp_path: Path
) -> None:
    port = closed_port
    inventory = {
        "all": {
            "hosts": {
                "target": target_vars,
                "ghost": {
                    "ansible_connection": "ssh",
                    "ansible_host": "127.0.0.1",
                    "ansible_port": port,
                    "ansible_user": "nobody",
                    "ansible_ssh_common_args": "-o ConnectTimeout=5 -o StrictHostKeyChecking=no",
                },
            }
        }
    }
    with pytest.raises(AnsibleRunFailed) as caught:
        run_playbook(
            str(PLAYBOOKS / "ok.yml"),
            inventory,
            private_data_dir=tmp_path,
            extravars={"marker": "second"},
            quiet=True,
        )
    result = caught.value.result
    assert result.hosts["ghost"].unreachable == 1
    assert result.hosts["target"].successful
    [failure] = result.failures
    assert failure.host == "ghost" and failure.unreachable
    assert failure.task == "Write the marker"
    assert "UNREACHABLE: host ghost" in str(caught.value)


def test_limit_restricts_the_hosts(
    target_vars: dict[str, str], closed_port: int, tmp_path: Path
) -> None:
    port = closed_port
    inventory = {
        "all": {
            "hosts": {
                "target": target_vars,
                "ghost": {"ansible_host": "127.0.0.1", "ansible_port": port},
            }
        }
    }
    result = run_playbook(
        str(PLAYBOOKS / "ok.yml"),
        inventory,
        private_data_dir=tmp_path,
        extravars={"marker": "third"},
        limit="target",
        quiet=True,
    )
    assert set(result.hosts) == {"target"}
