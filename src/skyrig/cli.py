"""The ``skyrig`` command line (typer + rich).

Exit codes: 0 ok, 1 failure, 2 usage or configuration error, 130 interrupted (SIGINT/SIGTERM).
Errors print one message; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyrig.errors import SkyrigConfigError, SkyrigError

app = typer.Typer(
    name="skyrig",
    help="Provision Proxmox GPU VMs, the guest GPU stack, Ray and anomaly-detection workloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
STATE: dict[str, bool] = {"debug": False}

StackOpt = Annotated[
    str, typer.Option("--stack", "-s", help="Stack name (local, dev, prod) or file.")
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug


def _mount(module: str, name: str, help_text: str) -> None:
    """Mount a sub-application if its module imports (optional parts stay optional)."""
    try:
        sub = importlib.import_module(module).app
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        missing = str(exc)

        @app.command(name, help=f"{help_text} (unavailable: {missing})")
        def _unavailable() -> None:
            raise SkyrigError(
                f"`skyrig {name}` is unavailable: {missing}",
                hint="run `make venv` to install the project's dependencies",
            )

        return
    app.add_typer(sub, name=name, help=help_text)


def _print_warnings(st: object) -> None:
    """Print the stack's warnings (valid, but likely not what is meant) on stderr."""
    for w in getattr(st, "warnings", ()):
        err_console.print(f"[bold yellow]warning:[/] {escape(w.render())}", highlight=False)


@app.command()
def validate(stack: StackOpt = "local") -> None:
    """Validate a stack file: types, cross-field rules, versions. Lists every problem at once."""
    from skyrig.config import load_stack

    st = load_stack(stack)
    c = st.config
    console.print(
        f"[green]✓[/] {escape(str(st.file))}: stack [bold]{escape(st.name)}[/] is valid "
        f"({len(c.nodes)} nodes, {len(c.pci_mappings)} PCI mappings, {len(c.vms)} VMs)"
    )
    _print_warnings(st)


@app.command()
def plan(
    stack: StackOpt = "local",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show what the stack wants: PCI mappings, VMs and their PVE configs, inventory groups."""
    from skyrig.config import load_stack
    from skyrig.plan import build_plan
    from skyrig.plan.proxmox import summary_rows

    st = load_stack(stack)
    _print_warnings(st)
    p = build_plan(st)
    from skyrig.workflows.kube_render import platform_rows

    kube_rows = platform_rows(st)
    if as_json:
        doc = {**p.to_dict(), "kubernetes": kube_rows}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    t = Table(title=f"PCI mappings ({p.stack})")
    for col in ("id", "node", "path", "vendor:device"):
        t.add_column(col)
    for m in p.pci_mappings:
        for e in m.entries:
            t.add_row(m.id, e.node, e.path, e.vendor_device)
    console.print(t)
    t = Table(title=f"VMs ({p.stack})")
    rows = summary_rows(p.vms)
    for col in ("vm", "vmid", "node", "cores", "memory_mib", "disk", "ip", "gpus"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            *(
                str(r[c])
                for c in ("vm", "vmid", "node", "cores", "memory_mib", "disk", "ip", "gpus")
            )
        )
    console.print(t)
    groups = p.inventory["all"]["children"]
    t = Table(title="Inventory groups")
    t.add_column("group")
    t.add_column("hosts")
    for g, body in groups.items():
        members = ", ".join(body.get("hosts", {})) or ", ".join(body.get("children", {}))
        t.add_row(g, members or "-")
    console.print(t)
    if kube_rows:
        t = Table(title=f"Kubernetes objects ({p.stack}; `skyrig render` writes them)")
        for col in ("component", "kind", "namespace", "name"):
            t.add_column(col)
        for row in kube_rows:
            t.add_row(*(str(row[c]) for c in ("component", "kind", "namespace", "name")))
        console.print(t)


@app.command()
def render(
    stack: StackOpt = "local",
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into.")] = Path(
        "out"
    ),
) -> None:
    """Write the plan as files: one PVE config per VM, the PCI mappings, the Ansible inventory."""
    from skyrig.config import load_stack
    from skyrig.workflows.render import render_stack

    if out.exists() and not out.is_dir():
        raise SkyrigConfigError(f"--out {out} exists and is not a directory",
                                file=str(out))
    st = load_stack(stack)
    try:
        written = render_stack(st, out)
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        raise SkyrigConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})",
                                file=str(out)) from None
    console.print(f"[green]✓[/] wrote {len(written)} files under {out}")
    for f in written:
        console.print(f"  {f}")


@app.command()
def up(
    stack: StackOpt = "local",
    only: Annotated[
        str, typer.Option(help="One layer: infra, os, platform, workload, monitor; or all.")
    ] = "all",
    replace_job: Annotated[
        bool, typer.Option("--replace-job", help="Stop the release's running Ray job and start"
                           " a new run (default: follow the running one).")
    ] = False,
) -> None:
    """Bring a stack up layer by layer: infra → os → platform → workload → monitor."""
    from skyrig.workflows.up import LAYERS, run_up

    if only not in (*LAYERS, "all"):
        raise typer.BadParameter(f"--only must be one of {', '.join(LAYERS)} or `all`")
    run_up(stack, only=only, console=console, options={"replace_job": replace_job})


@app.command()
def down(
    stack: StackOpt = "local",
    only: Annotated[
        str, typer.Option(help="One layer: infra, os, platform, workload, monitor; or all.")
    ] = "all",
) -> None:
    """Undo the layers in reverse: stop local services, remove the VMs and mappings it owns."""
    from skyrig.workflows.up import LAYERS, run_down

    if only not in (*LAYERS, "all"):
        raise typer.BadParameter(f"--only must be one of {', '.join(LAYERS)} or `all`")
    run_down(stack, only=only, console=console)


@app.command()
def doctor() -> None:
    """What is installed and reachable here: Python, Pulumi CLI, podman, Ray, torch, JAX, ..."""
    from skyrig.workflows.doctor import checks

    t = Table(title="skyrig doctor")
    for col in ("component", "status", "detail"):
        t.add_column(col)
    for name, ok, detail in checks():
        t.add_row(name, "[green]ok[/]" if ok else "[yellow]missing[/]", detail)
    console.print(t)


_mount("pvesim.cli", "pvesim", "Run the embedded Proxmox VE API emulator.")
_mount("skyrig.ansible.cli", "ansible", "Run playbooks with an inventory derived from a stack.")
_mount("skyrig.workflows.moncli", "monitor", "Monitoring: targets up, alerts firing.")
_mount("skyrig.runbooks.cli", "runbook", "List, show and run executable runbooks.")
_mount("skyrig.runbooks.vmcli", "vm", "Inspect, start, shut down or reboot one VM of a stack.")
_mount("skyrig.governance.model_cli", "model", "Show, promote or roll back the stack's model.")
_mount("skyrig.governance.cli", "governance", "NIST AI RMF evidence of released model versions.")


def _exit_code(value: object) -> int:
    """The process exit status for what click/typer returned or raised (None → 0)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return 1


def main() -> None:
    """Console-script entry point: one clear message per error, exit codes 0/1/2/130.

    With ``standalone_mode=False`` click *returns* the code of a ``typer.Exit`` instead of
    raising it, so the returned value is the exit status. SIGTERM is turned into the same
    interrupt as Ctrl-C (SIGINT): the running command stops at its next safe point and the
    process exits 130.
    """
    import signal

    from skyrig.workflows.runlock import install_signal_handlers

    debug = "--debug" in sys.argv
    install_signal_handlers()
    try:
        code = _exit_code(app(standalone_mode=False))
    except SkyrigError as exc:
        if debug:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        sys.exit(_exit_code(getattr(exc, "exit_code", getattr(exc, "code", 0))))
    except (typer.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (and our SIGTERM) outside a guarded run into Abort.
        err_console.print("[bold yellow]interrupted[/]: nothing was left half-done")
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.exit(130)
    except Exception as exc:  # click usage errors (typer may vendor click) and the unexpected
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        if debug:
            traceback.print_exc()
        else:
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}"
                " (run with --debug for the traceback)"
            )
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
