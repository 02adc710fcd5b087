"""``run_playbook``: one ansible-runner call with progress, summary and artifacts."""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from skyrig.ansible.events import Event, EventCollector
from skyrig.ansible.progress import ConsoleProgress, summary_table
from skyrig.ansible.result import AnsibleRunFailed, AnsibleRunResult
from skyrig.errors import AnsibleRunError, SkyrigConfigError


def _project_root() -> Path:
    env = os.environ.get("SKYRIG_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for candidate in here.parents:
        if (candidate / "playbooks").is_dir() and (candidate / "roles").is_dir():
            return candidate
    from skyrig.config.loader import project_root

    return project_root()


def resolve_playbook(playbook: str, root: Path | None = None) -> Path:
    """``site``, ``site.yml``, ``playbooks/site.yml`` or a path → the playbook file."""
    direct = Path(playbook)
    if direct.is_file():
        return direct.resolve()
    root = root or _project_root()
    name = direct.name if direct.suffix in (".yml", ".yaml") else f"{direct.name}.yml"
    candidate = root / "playbooks" / name
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (root / "playbooks").glob("*.yml"))
    raise SkyrigConfigError(
        f"playbook '{playbook}' not found (looked for {direct} and {candidate}); "
        f"known playbooks: {', '.join(known) or 'none'}"
    )


def _ident(playbook: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{playbook.stem}-{uuid.uuid4().hex[:6]}"


def _envvars(root: Path) -> dict[str, str]:
    env = {
        "ANSIBLE_ROLES_PATH": str(root / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        # ansible-playbook and its helpers come from the same environment as this Python.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cfg = root / "ansible.cfg"
    if cfg.is_file():
        env["ANSIBLE_CONFIG"] = str(cfg)
    return env


def run_playbook(
    playbook: str,
    inventory: dict[str, Any],
    *,
    private_data_dir: Path,
    extravars: dict[str, Any] | None = None,
    extravars_files: list[Path] | None = None,
    limit: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    console: Console | None = None,
    quiet: bool = False,
    timeout: int | None = None,
) -> AnsibleRunResult:
    """Run ``playbook`` against ``inventory`` (a YAML-inventory-shaped dict) with ansible-runner.

    Progress per host and task goes to ``console`` (unless ``quiet``); every raw event is passed
    to ``on_event``. ``extravars_files`` are passed as ``-e @FILE`` (secrets such as the k3s
    token: never copied into the private data dir). The run's artifacts stay in
    ``private_data_dir/artifacts/<ident>``. Returns the summary when every host succeeded;
    raises :class:`AnsibleRunFailed` (an ``AnsibleRunError``) naming each failed host and task
    otherwise.
    """
    import ansible_runner

    root = _project_root()
    path = resolve_playbook(playbook, root)
    private_data_dir = Path(private_data_dir).resolve()
    private_data_dir.mkdir(parents=True, exist_ok=True)
    ident = _ident(path)
    console = console or Console(stderr=True)
    progress = None if quiet else ConsoleProgress(console)

    def forward(event: Event) -> None:
        if progress is not None:
            progress(event)
        if on_event is not None:
            on_event(event)

    collector = EventCollector(forward)
    kwargs: dict[str, Any] = {
        "private_data_dir": str(private_data_dir),
        "project_dir": str(root),
        "playbook": str(path),
        "inventory": inventory,
        "ident": ident,
        "envvars": _envvars(root),
        "event_handler": collector,
        "quiet": True,
        "suppress_env_files": True,
    }
    if extravars:
        kwargs["extravars"] = extravars
    if extravars_files:
        kwargs["cmdline"] = " ".join(f"-e @{shlex.quote(str(f))}" for f in extravars_files)
    if limit:
        kwargs["limit"] = limit
    if timeout:
        kwargs["timeout"] = timeout
    try:
        runner = ansible_runner.run(**kwargs)
    except Exception as exc:  # ansible-runner raises plain exceptions for setup problems
        raise AnsibleRunError(
            f"ansible-runner could not start {path.name}: {exc}",
            hint=f"see {private_data_dir / 'artifacts' / ident}; is ansible installed?",
        ) from exc

    result = AnsibleRunResult(
        playbook=path.name,
        ident=ident,
        status=str(runner.status),
        rc=int(runner.rc if runner.rc is not None else -1),
        artifact_dir=private_data_dir / "artifacts" / ident,
        hosts=collector.hosts,
        failures=collector.final_failures(),
        stats=collector.stats,
    )
    if not quiet:
        console.print(summary_table(result))
        for failure in result.failures:
            console.print(f"[red]{failure.render()}[/]", markup=True, highlight=False)
        console.print(f"artifacts: {result.artifact_dir}")
    if not result.successful:
        raise AnsibleRunFailed(result)
    return result
