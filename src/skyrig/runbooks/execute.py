"""Run a runbook against a stack, step by step, with checks, rollbacks and a record.

Rules (issue 11):

* variables come from the stack (:func:`stack_variables`) and from ``--var k=v`` (alert labels:
  ``node``, ``vmid``, ``instance``, ``gpu``, ``job``, ``stack``, ``model``, ``version``); a
  step's template is split with :func:`shlex.split` *first* and ``{{ var }}`` is substituted
  inside each argument, so a value is always exactly one argument and never reaches a shell;
* ``skyrig`` as the first word runs this interpreter's skyrig (``python -m skyrig.cli``) with
  ``SKYRIG_ROOT`` set to the stack's project root; any other program is looked up on ``PATH``;
* a ``check`` or ``run`` step that exits with another code than its ``expect`` stops the run and
  the ``rollback`` steps seen so far run in reverse order; a ``manual`` step asks a person;
* ``--from STEP`` skips the steps before STEP (their rollbacks stay armed);
* ``prod`` asks for confirmation unless ``yes``; ``dry_run`` prints every command and runs only
  the read-only checks;
* each run appends JSON lines to ``<state_dir>/runbooks/<id>-<time>.jsonl``: one ``start``
  line, one line per step (step, kind, command argv, start/end time, exit code, status, output
  tail, who/where) and one ``end`` line.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from skyrig.config import Stack
from skyrig.errors import ConfigIssue, SkyrigConfigError, SkyrigError
from skyrig.runbooks.parse import VAR_RE, Runbook, Step

OUTPUT_TAIL_CHARS = 4000
#: The model name the workload registers (qso_anomaly.pipeline.PipelineConfig.model_name).
DEFAULT_MODEL_NAME = "qso-ae-torch"

Confirm = Callable[[str], bool]


class RunbookAborted(SkyrigError):
    """The operator declined a confirmation (prod run or a manual step)."""


class CheckFailed(SkyrigError):
    """A command's own check failed (``--expect-...``, a failed runbook run): exit code 1.

    Raised rather than ``typer.Exit(1)`` so that the exit code survives ``skyrig.cli.main``,
    which runs the app with ``standalone_mode=False``.
    """


def tracking_uri(stack: Stack) -> str:
    """The stack's MLflow tracking URI: ``workload.tracking_uri`` or the sqlite store the local
    workload job uses (``<state_dir>/mlflow/mlflow.db``, as in :mod:`skyrig.workflows.workload`)."""
    w = stack.config.workload
    return w.tracking_uri or f"sqlite:///{stack.state_dir / 'mlflow' / 'mlflow.db'}"


def stack_variables(stack: Stack) -> dict[str, str]:
    """Variables every runbook may use: ``stack``, ``environment``, ``root``, ``state_dir``,
    ``model`` (registered model name), ``model_alias``, ``tracking_uri``, ``workload_version``."""
    w = stack.config.workload
    return {
        "stack": stack.name,
        "environment": stack.config.environment,
        "root": str(stack.root),
        "state_dir": str(stack.state_dir),
        "model": DEFAULT_MODEL_NAME,
        "model_alias": w.model_alias,
        "tracking_uri": tracking_uri(stack),
        "workload_version": w.version,
    }


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` → dict; the value is taken literally (no quoting, no expansion)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not VAR_RE.fullmatch("{{" + key + "}}"):
            raise SkyrigConfigError(f"--var {pair!r} is not NAME=VALUE (NAME: letters, digits, _)")
        out[key] = value
    return out


def render_argv(step: Step, values: Mapping[str, str]) -> list[str]:
    """Split the template with shlex, then substitute ``{{ var }}`` inside each argument.

    A value is inserted into one argument as plain text: spaces, quotes, ``;``, ``$()`` and
    the like stay literal. Raises :class:`SkyrigConfigError` for an unknown variable.
    """
    # `{{ var }}` may contain spaces: close them up first so that shlex keeps it in one word
    text = VAR_RE.sub(lambda m: "{{" + m.group(1) + "}}", step.text)
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        raise SkyrigConfigError(f"step {step.name} (line {step.line}): cannot split the command:"
                                f" {exc}") from exc

    def sub(m: Any) -> str:
        name = m.group(1)
        if name not in values:
            raise SkyrigConfigError(
                f"step {step.name} (line {step.line}) uses {{{{ {name} }}}}, which has no value",
                )
        return values[name]

    return [VAR_RE.sub(sub, w) for w in words]


def resolve_program(argv: list[str]) -> list[str]:
    """``skyrig ...`` → this interpreter's ``python -m skyrig.cli ...``; others as they are."""
    if argv and argv[0] == "skyrig":
        return [sys.executable, "-m", "skyrig.cli", *argv[1:]]
    return argv


@dataclass
class StepRecord:
    step: str
    kind: str
    status: str  # ok | failed | skipped | dry-run | confirmed | declined
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    start: str = ""
    end: str = ""
    output_tail: str = ""
    note: str = ""
    rollback_for: str | None = None


@dataclass
class RunResult:
    """What one runbook run did; ``status`` is ``succeeded``, ``failed`` or ``dry-run``."""

    runbook: str
    stack: str
    status: str
    record: Path
    steps: list[StepRecord] = field(default_factory=list)
    failed_step: str | None = None
    rolled_back: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.status in ("succeeded", "dry-run") else 1


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL_CHARS else "…" + text[-OUTPUT_TAIL_CHARS:]


class _Recorder:
    def __init__(self, path: Path, base: dict[str, Any]) -> None:
        self.path = path
        self.base = base
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **data: Any) -> None:
        line = {"event": event, "time": _now(), **self.base, **data}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, default=str) + "\n")


def _values(runbook: Runbook, stack: Stack, given: Mapping[str, str]) -> dict[str, str]:
    values = {k: v for k, v in runbook.vars.items() if v is not None}
    values.update(stack_variables(stack))
    values.update(given)
    missing = [v for v in runbook.variables if v not in values]
    missing += [k for k, v in runbook.vars.items() if v is None and k not in values
                and k not in missing]
    if missing:
        raise SkyrigConfigError(ConfigIssue(
            str(runbook.path), None, "vars",
            f"runbook {runbook.id} needs a value for: {', '.join(missing)}",
            " ".join(f"--var {m}=VALUE" for m in missing) + " (alert labels give most of them)"))
    return values


def _check_applies(runbook: Runbook, stack: Stack) -> None:
    if stack.name in runbook.stacks or stack.config.environment in runbook.stacks:
        return
    raise SkyrigConfigError(ConfigIssue(
        str(runbook.path), None, "stacks",
        f"runbook {runbook.id} does not apply to stack {stack.name} "
        f"({stack.config.environment})", f"it applies to: {', '.join(runbook.stacks)}"))


def execute(runbook: Runbook, stack: Stack, *, variables: Mapping[str, str] | None = None,
            dry_run: bool = False, yes: bool = False, start_from: str | None = None,
            confirm: Confirm | None = None, console: Console | None = None,
            env: Mapping[str, str] | None = None) -> RunResult:
    """Run ``runbook`` for ``stack``; returns the :class:`RunResult` (also written as JSON lines).

    ``confirm(question) -> bool`` asks a person (prod confirmation, manual steps); without it a
    question that ``yes`` does not answer raises :class:`RunbookAborted`. Raises
    :class:`SkyrigConfigError` (exit 2) for a runbook that does not apply to the stack, a
    missing variable or an unknown ``start_from`` step — before any step runs.
    """
    con = console or Console(stderr=True)
    _check_applies(runbook, stack)
    values = _values(runbook, stack, dict(variables or {}))
    argvs = {s.name: render_argv(s, values) for s in runbook.steps if s.kind != "manual"}
    start_index = 0
    if start_from is not None:
        target = runbook.step(start_from)
        if target.kind == "rollback":
            raise SkyrigConfigError(f"--from {start_from}: a run cannot resume at a rollback step")
        start_index = runbook.steps.index(target)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    record = stack.state_dir / "runbooks" / f"{runbook.id}-{stamp}-{os.getpid()}.jsonl"
    who = {"user": _user(), "host": socket.gethostname(), "cwd": os.getcwd()}
    rec = _Recorder(record, {"runbook": runbook.id, "stack": stack.name})

    def ask(question: str) -> bool:
        if yes:
            return True
        if confirm is None:
            raise RunbookAborted(f"{question} — no terminal to ask",
                                 hint="re-run with --yes once you have checked it")
        return bool(confirm(question))

    if stack.config.environment == "prod" and not dry_run and not ask(
            f"run runbook {runbook.id} against PROD stack {stack.name}?"):
        raise RunbookAborted(f"runbook {runbook.id} not run: prod confirmation declined")
    rec.write("start", dry_run=dry_run, start_from=start_from, variables=values,
              title=runbook.title, risk=runbook.risk, who=who)
    result = RunResult(runbook=runbook.id, stack=stack.name,
                       status="dry-run" if dry_run else "succeeded", record=record)
    con.print(f"runbook [bold]{runbook.id}[/] on stack [bold]{stack.name}[/]"
              f"{' (dry run)' if dry_run else ''}: {escape(runbook.title)}")
    for pre in runbook.preconditions:
        con.print(f"  precondition: {escape(pre)}")
    run_env = {**os.environ, **(env or {}), "SKYRIG_ROOT": str(stack.root)}
    armed: list[Step] = []
    for index, step in enumerate(runbook.steps):
        if step.kind == "rollback":
            armed.append(step)
            if index >= start_index:
                sr = StepRecord(step.name, step.kind, "armed", argvs[step.name])
                result.steps.append(sr)
                con.print(f"  {escape(f'[rollback] {step.name}')}: "
                          f"{escape(shlex.join(argvs[step.name]))}  [dim](armed: runs if a"
                          " later step fails)[/]")
            continue
        if index < start_index:
            sr = StepRecord(step.name, step.kind, "skipped", argvs.get(step.name, []),
                            note=f"before --from {start_from}")
            rec.write("step", **_asdict(sr), who=who)
            result.steps.append(sr)
            continue
        sr = _do_step(step, argvs.get(step.name, []), dry_run=dry_run, ask=ask,
                      env=run_env, con=con)
        rec.write("step", **_asdict(sr), who=who)
        result.steps.append(sr)
        if sr.status in ("failed", "declined"):
            if dry_run:
                con.print(f"  [yellow]dry run: check {step.name} fails now[/] (a real run would"
                          f" stop here and roll back: "
                          f"{', '.join(s.name for s in reversed(armed)) or 'nothing'})")
                continue
            result.status, result.failed_step = "failed", step.name
            _rollback(armed, argvs, step.name, result, rec, who, run_env, con)
            break
    rec.write("end", status=result.status, failed_step=result.failed_step,
              rolled_back=result.rolled_back)
    colour = "green" if result.exit_code == 0 else "red"
    con.print(f"[{colour}]runbook {runbook.id}: {result.status}[/]"
              f"{f' at step {result.failed_step}' if result.failed_step else ''}")
    con.print(f"record: {record}", highlight=False)
    return result


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _asdict(sr: StepRecord) -> dict[str, Any]:
    return dict(sr.__dict__)


def _do_step(step: Step, argv: list[str], *, dry_run: bool, ask: Callable[[str], bool],
             env: Mapping[str, str], con: Console) -> StepRecord:
    label = escape(f"[{step.kind}] {step.name}")
    if step.kind == "manual":
        con.print(f"  {label}: {escape(step.text)}")
        if dry_run:
            return StepRecord(step.name, step.kind, "dry-run", note=step.text)
        t0 = _now()
        ok = ask(f"manual step {step.name}: done? ({step.text.splitlines()[0]})")
        return StepRecord(step.name, step.kind, "confirmed" if ok else "declined",
                          start=t0, end=_now(), note=step.text)
    shown = shlex.join(argv)
    if dry_run and not (step.kind == "check" and step.readonly):
        con.print(f"  {label}: {escape(shown)}  [dim](dry run: not run)[/]")
        return StepRecord(step.name, step.kind, "dry-run", argv)
    con.print(f"  {label}: {escape(shown)}")
    sr = run_command(step, argv, env)
    for line in sr.output_tail.splitlines()[-15:]:
        con.print(f"    │ {escape(line)}", highlight=False)
    colour = "green" if sr.status == "ok" else "red"
    con.print(f"    [{colour}]{sr.status}[/] (exit {sr.exit_code})")
    return sr


def run_command(step: Step, argv: list[str], env: Mapping[str, str]) -> StepRecord:
    """Run one argv (never through a shell); the status is ``ok`` when the exit code matches."""
    real = resolve_program(argv)
    t0 = _now()
    if not real or shutil.which(real[0]) is None:
        return StepRecord(step.name, step.kind, "failed", argv, 127, t0, _now(),
                          note=f"program {real[0] if real else ''!r} not found on PATH")
    try:
        proc = subprocess.run(real, capture_output=True, text=True, timeout=step.timeout_s,
                              env=dict(env), stdin=subprocess.DEVNULL, check=False)
        code, out = proc.returncode, (proc.stdout or "") + (proc.stderr or "")
    except subprocess.TimeoutExpired as exc:
        code = 124
        out = _decode(exc.stdout) + _decode(exc.stderr) + f"\ntimed out after {step.timeout_s}s"
    status = "ok" if code == step.expect else "failed"
    return StepRecord(step.name, step.kind, status, argv, code, t0, _now(), _tail(out))


def _decode(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode("utf-8", "replace")


def _rollback(armed: list[Step], argvs: Mapping[str, list[str]], failed: str, result: RunResult,
              rec: _Recorder, who: dict[str, str], env: Mapping[str, str], con: Console) -> None:
    if not armed:
        con.print(f"  [red]step {failed} failed[/]; no rollback steps before it")
        return
    con.print(f"  [red]step {failed} failed[/]: rolling back "
              f"{', '.join(s.name for s in reversed(armed))}")
    for step in reversed(armed):
        con.print(f"  {escape(f'[rollback] {step.name}')}: {escape(shlex.join(argvs[step.name]))}")
        sr = run_command(step, argvs[step.name], env)
        sr.rollback_for = failed
        rec.write("step", **_asdict(sr), who=who)
        result.steps.append(sr)
        result.rolled_back.append(step.name)
        for line in sr.output_tail.splitlines()[-10:]:
            con.print(f"    │ {escape(line)}", highlight=False)
        con.print(f"    {'[green]ok' if sr.status == 'ok' else '[red]rollback failed'}[/]"
                  f" (exit {sr.exit_code})")


def read_record(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a run record."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
