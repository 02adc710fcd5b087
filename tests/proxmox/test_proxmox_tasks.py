"""wait_for_task: correct where proxmoxer's blocking_status is not."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from skyrig.errors import ProxmoxError, ProxmoxTaskError
from skyrig.proxmox.tasks import Upid, WaitPolicy, wait_for_task

pytestmark = pytest.mark.unit

UPID = "UPID:pve1:0001A2B3:00C0FFEE:6720B1C4:qmclone:9001:skyrig@pve!provision:"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class FakeApi:
    """Answers status polls from a script; the log from a list of lines."""

    def __init__(self, script: list[Any], log: list[str] | None = None) -> None:
        self.script = list(script)
        self.log = log or []
        self.polls = 0

    def get(self, path: str, **params: Any) -> Any:
        if path.endswith("/log"):
            start, limit = int(params.get("start", 0)), int(params.get("limit", 50))
            return [{"n": i + 1, "t": t} for i, t in enumerate(self.log)][start:start + limit]
        self.polls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


RUNNING = {"status": "running"}
NO_SUCH_TASK = ProxmoxError("GET status failed: no such task", status=400,
                            pve_message="Parameter verification failed. (upid: no such task)")


def wait(api: FakeApi, clock: FakeClock, **kw: Any) -> Any:
    return wait_for_task(api, UPID, clock=clock, sleep=clock.sleep, **kw)


def test_ok_is_success_and_polling_backs_off() -> None:
    clock = FakeClock()
    api = FakeApi([RUNNING, RUNNING, RUNNING, {"status": "stopped", "exitstatus": "OK"}])
    res = wait(api, clock, policy=WaitPolicy(first_poll_s=0.1, factor=2, max_poll_s=0.3))
    assert res.exitstatus == "OK" and res.warnings == []
    assert clock.sleeps == [0.1, 0.2, 0.3]  # backoff, capped; no sleep after the last poll


def test_task_not_yet_visible_is_tolerated() -> None:
    clock = FakeClock()
    api = FakeApi([NO_SUCH_TASK, NO_SUCH_TASK, {"status": "stopped", "exitstatus": "OK"}])
    assert wait(api, clock).exitstatus == "OK"
    assert api.polls == 3


def test_unknown_task_after_the_grace_period_raises() -> None:
    clock = FakeClock()
    api = FakeApi([NO_SUCH_TASK])
    with pytest.raises(ProxmoxError, match="no such task"):
        wait(api, clock, policy=WaitPolicy(not_found_grace_s=1.0))


def test_warnings_are_success_with_the_warning_lines_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi([{"status": "stopped", "exitstatus": "WARNINGS: 1"}],
                  log=["create full clone of drive scsi0", "WARN: found pending changes for "
                       "'cores', discarding for clone", "TASK WARNINGS: 1"])
    with caplog.at_level(logging.WARNING):
        res = wait(api, FakeClock())
    assert res.exitstatus == "WARNINGS: 1"
    assert res.warnings == ["WARN: found pending changes for 'cores', discarding for clone"]
    assert "discarding for clone" in caplog.text


def test_error_exit_status_raises_with_log_tail_node_and_upid() -> None:
    log = [f"line {i}" for i in range(30)] + ["TASK ERROR: clone failed: injected"]
    api = FakeApi([{"status": "stopped", "exitstatus": "clone failed: injected"}], log=log)
    with pytest.raises(ProxmoxTaskError) as info:
        wait(api, FakeClock(), vmid=301)
    err = info.value
    assert err.upid == UPID and err.node == "pve1" and err.vmid == 301
    assert err.pve_message == "clone failed: injected"
    assert err.log_tail[-1] == "TASK ERROR: clone failed: injected"
    assert len(err.log_tail) == 20
    assert "clone failed: injected" in str(err)


def test_timeout_raises_never_returns_none() -> None:
    clock = FakeClock()
    api = FakeApi([RUNNING], log=["still working"])
    with pytest.raises(ProxmoxTaskError, match="did not finish within 5s") as info:
        wait(api, clock, policy=WaitPolicy(timeout_s=5))
    assert info.value.log_tail == ["still working"]
    assert clock.now == pytest.approx(5.0)


def test_upid_parsing_keeps_token_user_and_rejects_garbage() -> None:
    u = Upid.parse(UPID)
    assert (u.node, u.type, u.id, u.user) == ("pve1", "qmclone", "9001", "skyrig@pve!provision")
    with pytest.raises(ProxmoxError, match="not a PVE task id"):
        Upid.parse("UPID:pve1:bad")
