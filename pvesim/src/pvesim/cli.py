"""``skyrig pvesim serve|reset`` (a typer app; also ``python -m pvesim``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import typer

from pvesim.apierror import PveSimError
from pvesim.store import write_atomic

app = typer.Typer(help="pvesim: a local Proxmox VE 8.4 API emulator on https://127.0.0.1.",
                  no_args_is_help=True, add_completion=False)

DEFAULT_STATE = Path(".pvesim/state.json")


def _durations(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"'{item}': use TASK=SECONDS, e.g. clone=2.5") from None
    return out


@app.command()
def serve(
    state: Path = typer.Option(DEFAULT_STATE, "--state", help="state file (created if absent)"),
    hardware: str = typer.Option("local", "--hardware",
                                 help="profile (local, lab, faulty) or a YAML file"),
    faults: Path | None = typer.Option(None, "--faults", help="fault-injection YAML/JSON file"),
    port: int = typer.Option(8006, "--port", help="TCP port on 127.0.0.1 (0 = any free port)"),
    seed: int = typer.Option(0, "--seed", help="seed for MACs, UUIDs and fault decisions"),
    task_duration: list[str] = typer.Option(
        [], "--task-duration", help="TASK=SECONDS, e.g. clone=2 (repeatable)"),
    auth_failure_delay: float = typer.Option(
        0.0, "--auth-failure-delay", help="delay 401 answers like PVE (which uses 3 s)"),
    endpoint_file: Path | None = typer.Option(
        None, "--endpoint-file", help="write url/CA/token/pid as JSON (0600) once listening"),
    bootstrap_token: Path | None = typer.Option(
        None, "--bootstrap-token",
        help="JSON {userid, tokenid, acl: {path: [privileges]}}: create that user and"
             " privilege-separated token with exactly those grants (secret: endpoint file)"),
) -> None:
    """Serve the PVE API until interrupted (Ctrl-C / SIGTERM)."""
    from pvesim.sim import PveSim

    try:
        sim = PveSim(state, hardware=hardware, faults=faults, port=port, seed=seed,
                     task_durations=_durations(task_duration),
                     auth_failure_delay=auth_failure_delay).start()
    except PveSimError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    token_id, secret = sim.root_token
    tokens: dict[str, str] = {}
    if bootstrap_token is not None:
        try:
            spec = json.loads(bootstrap_token.read_text())
            tokens[f"{spec['userid']}!{spec['tokenid']}"] = sim.bootstrap_token(
                str(spec["userid"]), str(spec["tokenid"]), dict(spec["acl"]))
        except (OSError, ValueError, KeyError, TypeError, PveSimError) as exc:
            sim.stop()
            typer.echo(f"error: bootstrap token file {bootstrap_token}: {exc}", err=True)
            raise typer.Exit(2) from exc
    if endpoint_file is not None:
        write_atomic(endpoint_file, json.dumps({
            "url": sim.url, "ca_path": str(sim.ca_path), "token_id": token_id,
            "token_secret": secret, "pid": os.getpid(), "port": sim.port, "tokens": tokens,
        }), 0o600)
    typer.echo(f"pvesim listening on {sim.url}")
    typer.echo(f"CA certificate: {sim.ca_path}")
    # Never print the secret: this output usually goes to a log file.
    typer.echo(f"root token: {token_id} (secret in "
               f"{endpoint_file if endpoint_file is not None else 'the state file'}, 0600)")
    for authid in tokens:
        typer.echo(f"bootstrapped token: {authid} (privilege-separated; secret not shown)")
    typer.echo(f"state: {state}  hardware: {sim.backend.hw.source}  nodes: {', '.join(sim.nodes)}")
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not done.wait(0.5):
        pass
    sim.stop()
    typer.echo("pvesim stopped")


@app.command()
def reset(
    state: Path = typer.Option(DEFAULT_STATE, "--state", help="state file to remove"),
    keep_tls: bool = typer.Option(False, "--keep-tls", help="keep the CA and server cert"),
) -> None:
    """Forget all simulated state (VMs, tasks, users, mappings); next serve starts fresh."""
    from pvesim.sim import tls_dir_for

    removed = []
    if state.exists():
        state.unlink()
        removed.append(str(state))
    tls = tls_dir_for(state)
    if tls.exists() and not keep_tls:
        shutil.rmtree(tls)
        removed.append(str(tls))
    typer.echo("removed " + ", ".join(removed) if removed else f"nothing to reset at {state}")
