"""One workload run per release per stack on a real local Ray head: a re-run follows the running
job, `--replace-job` stops it first, an interrupt stops the job the run submitted, and stopping
the stack leaves none of its processes (job drivers included) in the process list."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest
from rich.console import Console

from skyrig.workflows.localray import MARKER, ensure_head, stack_processes, stop_head
from skyrig.workflows.workload import active_jobs, follow, start_job, stop_stack_jobs
from support import edit_stack, free_port_base, make_root, stack

pytestmark = pytest.mark.integration

TINY = "python -c 'import time; print(\"tiny job\", flush=True); time.sleep(300)'"


def _free_base() -> int:
    """A port p with p..p+2 and p+10, p+11 free on loopback."""
    return free_port_base((0, 1, 2, 10, 11))


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


def test_one_run_per_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.job_submission import JobSubmissionClient

    monkeypatch.setenv("SKYRIG_STATE_DIR", str(tmp_path / "state"))
    base = _free_base()
    root = make_root(tmp_path)
    for a, b in (("head_port: 26379", f"head_port: {base}"),
                 ("dashboard_port: 28265", f"dashboard_port: {base + 10}"),
                 ("metrics_export_port: 28080", f"metrics_export_port: {base + 11}")):
        edit_stack(root, "local", a, b)
    st = stack(root, "local")
    ray_dir = st.state_dir / "ray"
    console = Console(record=True, width=200, soft_wrap=True)
    head = ensure_head(st.config.ray, ray_dir)
    try:
        client = JobSubmissionClient(head.dashboard_url)
        first, submitted = start_job(st, client, TINY, console=console)
        release = st.config.workload.version
        assert submitted and first.startswith(f"skyrig-local-qso_anomaly-{release}-")
        # A re-run finds the running job of this release and follows it.
        again, submitted = start_job(st, client, TINY, console=console)
        assert (again, submitted) == (first, False)
        assert active_jobs(client, st) == [first]
        assert "already runs" in console.export_text()
        # --replace-job: the running one is stopped first; still one at a time.
        second, submitted = start_job(st, client, TINY, console=console, replace=True)
        assert submitted and second != first
        assert str(client.get_job_status(first)) == "STOPPED"
        assert active_jobs(client, st) == [second]
        # An interrupt while following stops the job this run submitted.
        timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            follow(client, second, submitted=True, console=console,
                   dashboard_url=head.dashboard_url, timeout_s=60)
        timer.cancel()
        assert str(client.get_job_status(second)) == "STOPPED"
        assert active_jobs(client, st) == []
        # A job that was only followed keeps running on interrupt, and the message says how
        # to stop it.
        third, _ = start_job(st, client, TINY, console=console)
        timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            follow(client, third, submitted=False, console=console,
                   dashboard_url=head.dashboard_url, timeout_s=60)
        timer.cancel()
        assert active_jobs(client, st) == [third]
        assert f"ray job stop --address {head.dashboard_url} {third}" in console.export_text()
        # The job's driver is one of the stack's processes (it carries the stack's marker).
        drivers = [c for c in _cmdlines(stack_processes(ray_dir)) if "tiny job" in c]
        assert drivers, _cmdlines(stack_processes(ray_dir))
        assert stop_stack_jobs(st, head.dashboard_url, console) == [third]
    finally:
        stop_head(ray_dir)
    # Nothing of the stack is left in the process list.
    marker = f"{MARKER}={ray_dir.resolve()}".encode()
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    left.append(int(entry.name))
            except OSError:
                pass
    assert left == [], _cmdlines(left)
