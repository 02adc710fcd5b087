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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from skyrig.config.loader import Stack
from skyrig.errors import WorkloadError
from skyrig.fsutil import write_atomic
from skyrig.plan.workload import input_args, scoring_env

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
    if w.model_size == "full":
        args.append("--full-model")
    return shlex.join(args + input_args(stack, str(stack.root.resolve())))


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


def job_metadata(stack: Stack) -> dict[str, str]:
    """Ray job metadata that identifies a run of one release of one stack (no secrets)."""
    w = stack.config.workload
    return {
        "skyrig_stack": stack.name,
        "skyrig_state": str(stack.state_dir.resolve()),
        "workload": w.name,
        "workload_version": w.version,
        "model_alias": w.model_alias,
    }


def _same_run(meta: dict[str, str] | None, want: dict[str, str]) -> bool:
    meta = meta or {}
    return all(meta.get(k) == want[k] for k in ("skyrig_state", "workload", "workload_version"))


def active_jobs(client: Any, stack: Stack, *, any_release: bool = False) -> list[str]:
    """Submission ids of the stack's jobs that are not finished (this release, or any)."""
    want = job_metadata(stack)
    out: list[str] = []
    for job in client.list_jobs():
        meta = dict(job.metadata or {})
        mine = (meta.get("skyrig_state") == want["skyrig_state"] if any_release
                else _same_run(meta, want))
        if mine and str(job.status) not in TERMINAL and job.submission_id:
            out.append(str(job.submission_id))
    return sorted(out)


def _wait_terminal(client: Any, job_id: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    return status


def stop_jobs(client: Any, job_ids: list[str], console: Console) -> None:
    """Stop the given jobs and wait until Ray reports them finished."""
    for job_id in job_ids:
        client.stop_job(job_id)
    for job_id in job_ids:
        status = _wait_terminal(client, job_id)
        console.print(f"  stopped Ray job {job_id} ({status})")


def submission_id(stack: Stack) -> str:
    """``skyrig-<stack>-<workload>-<version>-<UTC time>-<6 hex>``: derived from stack and
    release (Ray keeps the ids of finished jobs, so time + a random tail keep each run's id
    unique; the running run of a release is found by its metadata, :func:`active_jobs`)."""
    w = stack.config.workload
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{stack.name}-{w.name}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"skyrig-{safe}-{w.version}-{stamp}-{uuid.uuid4().hex[:6]}"


def start_job(stack: Stack, client: Any, cmd: str, *, console: Console,
              replace: bool = False, env_vars: dict[str, str] | None = None) -> tuple[str, bool]:
    """One run of a release per stack: follow the running job of this release, or (``replace``)
    stop it and submit anew. Returns ``(submission id, submitted by this call)``."""
    running = active_jobs(client, stack)
    if running and not replace:
        console.print(
            f"  Ray job [bold]{running[0]}[/] already runs {stack.config.workload.name}"
            f" {stack.config.workload.version} for stack {stack.name}: following it"
            " (`skyrig up --replace-job` stops it and starts a new run)")
        return running[0], False
    if running:
        stop_jobs(client, running, console)
    job_id = _submit(
        client,
        entrypoint=cmd,
        submission_id=submission_id(stack),
        runtime_env={"env_vars": {
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "DO_NOT_TRACK": "1",
            "SKYRIG_STACK": stack.name,
            **scoring_env(stack),  # skyrig:workload.scoring, as the RayJob carries it
            **(env_vars or {}),
        }},
        metadata=job_metadata(stack),
    )
    console.print(f"  submitted Ray job [bold]{job_id}[/]: {cmd}", highlight=False)
    return job_id, True


def follow(client: Any, job_id: str, *, submitted: bool, console: Console, dashboard_url: str,
           timeout_s: float = 1800.0, quiet_prefix: str = "[qso-anomaly") -> tuple[str, str]:
    """Wait for the job, echoing its progress lines; returns ``(status, logs)``.

    On SIGINT/SIGTERM (KeyboardInterrupt) the job this run submitted is stopped; a job it only
    followed keeps running and the message says how to stop it. The interrupt is re-raised.
    """
    start = time.monotonic()
    shown = 0
    status = ""
    try:
        while time.monotonic() - start < timeout_s:
            status = str(client.get_job_status(job_id))
            logs = client.get_job_logs(job_id)
            for line in logs[shown:].splitlines():
                if line.startswith(quiet_prefix):
                    console.print(f"  │ {line}", highlight=False, markup=False)
            shown = len(logs)
            if status in TERMINAL:
                break
            time.sleep(1.0)
        else:
            client.stop_job(job_id)
            raise WorkloadError(
                f"Ray job {job_id} did not finish within {timeout_s:.0f} s; stopped",
                hint=f"see the job logs at {dashboard_url}",
            )
    except KeyboardInterrupt:
        if submitted:
            client.stop_job(job_id)
            console.print(f"  interrupted: stopped Ray job {job_id} that this run submitted"
                          f" ({_wait_terminal(client, job_id, 30.0)})")
        else:
            console.print(f"  interrupted: Ray job {job_id} (started by an earlier run) keeps"
                          f" running; stop it with `ray job stop --address {dashboard_url}"
                          f" {job_id}` or `skyrig down --only workload`")
        raise
    return status, client.get_job_logs(job_id)


def submit_and_wait(
    stack: Stack, dashboard_url: str, *, console: Console, timeout_s: float = 1800.0,
    replace: bool = False,
) -> WorkloadResult:
    """Run the pinned workload as a Ray job (or follow the one already running for this
    release), show its progress, return its outputs."""
    from ray.job_submission import JobSubmissionClient

    check_installed_version(stack)
    runs = stack.state_dir / "runs"
    run_dir = runs / time.strftime("%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    (stack.state_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    client = JobSubmissionClient(dashboard_url)
    job_id, submitted = start_job(stack, client, entrypoint(stack, run_dir), console=console,
                                  replace=replace)
    start = time.monotonic()
    status, logs = follow(client, job_id, submitted=submitted, console=console,
                          dashboard_url=dashboard_url, timeout_s=timeout_s)
    log_file = run_dir / "job.log"
    write_atomic(log_file, logs)
    elapsed = time.monotonic() - start
    if status != "SUCCEEDED":
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
        job_id=job_id, status=status, outputs=outputs, elapsed_s=elapsed, log_file=log_file
    )


def stop_stack_jobs(stack: Stack, dashboard_url: str, console: Console) -> list[str]:
    """Stop every unfinished job of this stack (any release); returns their ids."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(dashboard_url)
    ids = active_jobs(client, stack, any_release=True)
    stop_jobs(client, ids, console)
    return ids
