"""Submit the pinned workload release to a Ray cluster through the Ray Jobs API and wait for it.

The job runs ``python -m qso_anomaly.pipeline`` (train → register → score → explain → report, or
score with the registered model that carries the pinned alias) and ends by printing one JSON line
that says where the report, metrics and model card are.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from skyrig.config.loader import Stack
from skyrig.errors import WorkloadError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class WorkloadResult:
    """What a finished workload job reported."""

    job_id: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    log_file: Path | None = None


def _distribution(stack: Stack) -> str:
    return stack.config.workload.name.replace("_", "-")


def check_installed_version(stack: Stack) -> str:
    """The workload the local head runs must be the release the stack pins."""
    w = stack.config.workload
    try:
        installed = md.version(_distribution(stack))
    except md.PackageNotFoundError:
        raise WorkloadError(
            f"workload {w.name} is not installed in this environment",
            hint="run `make venv` (installs workloads/qso_anomaly)",
        ) from None
    if installed != w.version:
        raise WorkloadError(
            f"the stack pins {w.name} {w.version} but {installed} is installed",
            hint=f"install {w.name}=={w.version} or change skyrig:workload.version in {stack.file}",
        )
    return installed


def entrypoint(stack: Stack, run_dir: Path) -> str:
    """The job's command line (the same one a KubeRay RayJob would run)."""
    w = stack.config.workload
    tracking = w.tracking_uri or f"sqlite:///{stack.state_dir / 'mlflow' / 'mlflow.db'}"
    args = [
        "python",
        "-m",
        "qso_anomaly.pipeline",
        "--out",
        str(run_dir),
        "--tracking-uri",
        tracking,
        "--model-alias",
        w.model_alias,
        "--n-spectra",
        str(w.n_spectra),
        "--seed",
        str(w.seed),
        "--framework",
        w.framework,
        "--expect-version",
        w.version,
        "--use-ray",  # train with Ray Train and score with Ray Data on the cluster
    ]
    if w.use_gpu:
        args.append("--use-gpu")
    return shlex.join(args)


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return {}


def _submit(client: Any, *, timeout_s: float = 120.0, **kwargs: Any) -> str:
    """Submit a job; right after a head starts its job agent may not be ready yet: retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(client.submit_job(**kwargs))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise WorkloadError(
                    f"the Ray Jobs API refused the job: {exc}",
                    hint="check the Ray head (dashboard and its log) and re-run",
                ) from exc
            time.sleep(2.0)


def submit_and_wait(
    stack: Stack, dashboard_url: str, *, console: Console, timeout_s: float = 1800.0
) -> WorkloadResult:
    """Submit the pinned workload as a Ray job, show its progress, return its outputs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    check_installed_version(stack)
    runs = stack.state_dir / "runs"
    run_dir = runs / time.strftime("%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (stack.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    client = JobSubmissionClient(dashboard_url)
    cmd = entrypoint(stack, run_dir)
    job_id = _submit(
        client,
        entrypoint=cmd,
        runtime_env={
            "env_vars": {
                "MLFLOW_ENABLE_TELEMETRY": "false",
                "DO_NOT_TRACK": "1",
                "SKYRIG_STACK": stack.name,
            }
        },
        metadata={
            "skyrig_stack": stack.name,
            "workload": stack.config.workload.name,
            "workload_version": stack.config.workload.version,
            "model_alias": stack.config.workload.model_alias,
        },
    )
    console.print(f"  submitted Ray job [bold]{job_id}[/]: {cmd}")
    start = time.monotonic()
    shown = 0
    status = JobStatus.PENDING
    log_file = run_dir / "job.log"
    while time.monotonic() - start < timeout_s:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        for line in logs[shown:].splitlines():
            if line.startswith("[qso-anomaly"):
                console.print(f"  │ {line}", highlight=False, markup=False)
        shown = len(logs)
        if str(status) in TERMINAL or status in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        ):
            break
        time.sleep(2.0)
    else:
        client.stop_job(job_id)
        raise WorkloadError(
            f"Ray job {job_id} did not finish within {timeout_s:.0f} s; stopped",
            hint=f"see the job logs at {dashboard_url}",
        )
    logs = client.get_job_logs(job_id)
    log_file.write_text(logs)
    elapsed = time.monotonic() - start
    if status != JobStatus.SUCCEEDED:
        tail = "\n".join(logs.strip().splitlines()[-25:])
        raise WorkloadError(
            f"Ray job {job_id} ended {status}:\n{tail}", hint=f"full log: {log_file}"
        )
    outputs = _last_json_line(logs)
    if not outputs:
        raise WorkloadError(
            f"Ray job {job_id} succeeded but printed no result line", hint=f"full log: {log_file}"
        )
    return WorkloadResult(
        job_id=job_id, status=str(status), outputs=outputs, elapsed_s=elapsed, log_file=log_file
    )
