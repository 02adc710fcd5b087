"""`skyrig up` / `skyrig down`: the main job, layer by layer, saying which ran.

Layers, in order (``--only LAYER`` runs one; ``down`` undoes them in reverse):

1. **infra** – provision Proxmox (PCI mappings, GPU VMs) through Pulumi or the direct apply
   (:mod:`skyrig.workflows.provision`); for an embedded endpoint, start pvesim first
   (:mod:`skyrig.workflows.localsim`, the one place that starts it);
2. **os** – the ``site`` playbook through ansible-runner (real clusters only);
3. **platform** – a local Ray head (``ray.mode: local``) or the Kubernetes platform;
4. **workload** – the pinned workload release as a Ray job (local head) or a RayJob;
5. **monitor** – the state of scrape targets and alerts.

The stack is validated and the plan built once, here, and passed down to every layer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyrig.config import Stack, load_stack
from skyrig.errors import SkyrigConfigError, SkyrigError
from skyrig.fsutil import write_atomic
from skyrig.plan import Plan, build_plan
from skyrig.proxmox.endpoint import Endpoint
from skyrig.workflows.runlock import guarded_run

LAYERS = ("infra", "os", "platform", "workload", "monitor")


@dataclass
class RunContext:
    """What one `up`/`down` run shares between its layers."""

    stack: Stack
    plan: Plan
    console: Console
    summary: dict[str, Any] = field(default_factory=dict)
    endpoint: Endpoint | None = None
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Layer:
    """One layer: ``skip(ctx)`` says why it does not apply (None when it does);
    ``check_down(ctx)`` raises what ``down`` would fail on (credentials), before any layer
    of ``skyrig down`` runs."""

    name: str
    title: str
    up: Callable[[RunContext], None]
    down: Callable[[RunContext], None]
    skip: Callable[[RunContext], str | None] = lambda _ctx: None
    check_down: Callable[[RunContext], None] = lambda _ctx: None


# ---------------------------------------------------------------------------------- infra


def _pvesim(ctx: RunContext) -> None:
    if ctx.endpoint is None and ctx.stack.config.proxmox.embedded:
        from skyrig.workflows.localsim import ensure_pvesim

        ctx.endpoint = ensure_pvesim(ctx.stack, ctx.console)


def _infra_up(ctx: RunContext) -> None:
    from skyrig.workflows.provision import provision

    _pvesim(ctx)
    result = provision(ctx.stack, ctx.plan, console=ctx.console, endpoint_override=ctx.endpoint)
    ctx.summary["infra"] = {
        "path": result.path,
        "changed": result.changed,
        "created": result.created,
        "updated": result.updated,
        "replaced": result.replaced,
        "deleted": result.deleted,
        "unchanged": result.unchanged,
        "pending_reboot": result.pending_reboot,
        "rebooted": result.rebooted,
        "ips": result.ips,
        "api_calls": result.api_calls,
        "elapsed_s": round(result.elapsed_s, 2),
    }


def _infra_down(ctx: RunContext) -> None:
    from skyrig.workflows.localsim import stop_pvesim
    from skyrig.workflows.provision import deprovision

    _pvesim(ctx)
    deprovision(ctx.stack, ctx.plan, console=ctx.console, endpoint_override=ctx.endpoint)
    if stop_pvesim(ctx.stack):
        ctx.console.print("  stopped pvesim (its state is kept; `skyrig pvesim reset` clears it)")


def _infra_check_down(ctx: RunContext) -> None:
    """The PVE token the direct apply destroys with (an embedded pvesim is started by down)."""
    if not ctx.stack.config.proxmox.embedded:
        from skyrig.workflows.provision import check_deprovision

        check_deprovision(ctx.stack, ctx.endpoint)


# ------------------------------------------------------------------------------------- os


def _os_skip(ctx: RunContext) -> str | None:
    if ctx.stack.config.proxmox.embedded:
        return "the VMs of an embedded pvesim have no guest OS to configure"
    return None


def _os_up(ctx: RunContext) -> None:
    from skyrig.workflows.oslayer import run_site

    ctx.summary["os"] = run_site(ctx.stack, console=ctx.console)


def _os_down(ctx: RunContext) -> None:
    ctx.console.print("  os: nothing to undo (the VMs are removed by the infra layer)")


# ------------------------------------------------------------------------------- platform


def _platform_up(ctx: RunContext) -> None:
    ray_cfg = ctx.stack.config.ray
    if ray_cfg.mode == "local":
        from skyrig.workflows.localray import ensure_head

        head = ensure_head(ray_cfg, ctx.stack.state_dir / "ray")
        ctx.console.print(
            f"  Ray head {head.address} ({'started' if head.started else 'already running'});"
            f" dashboard {head.dashboard_url}"
        )
        ctx.summary["ray"] = {
            "address": head.address,
            "dashboard": head.dashboard_url,
            "started": head.started,
        }
        from skyrig.workflows.localmon import platform_up as monitoring_up

        _pvesim(ctx)
        ctx.summary["monitoring"] = monitoring_up(ctx.stack, ctx.endpoint, ctx.console)
        return
    from skyrig.workflows.kube_platform import platform_up as kube_platform_up

    ctx.summary["platform"] = kube_platform_up(ctx.stack, ctx.console)


def _kube_kept(ctx: RunContext, layer: str) -> None:
    """Kubernetes stacks: say what ``down`` leaves; refuse (exit 2) when only it was asked."""
    from skyrig.workflows.kube_platform import PlatformUnavailable, kept_on_down

    note = kept_on_down(ctx.stack, layer)
    if ctx.options.get("only") == layer:
        raise PlatformUnavailable(f"`skyrig down --only {layer}` does not tear down a"
                                  f" Kubernetes stack: {note}")
    ctx.summary.setdefault("kept", {})[layer] = note
    ctx.console.print(f"  [yellow]kept[/]: {note}")


def _platform_down(ctx: RunContext) -> None:
    if ctx.stack.config.ray.mode != "local":
        _kube_kept(ctx, "platform")
        return
    from skyrig.workflows.localmon import stop as stop_monitoring
    from skyrig.workflows.localray import stop_head

    if stop_monitoring(ctx.stack):
        ctx.console.print("  stopped the local monitoring stack")
    if stop_head(ctx.stack.state_dir / "ray"):
        ctx.console.print("  stopped the local Ray head")


# ------------------------------------------------------------------------------- workload


def _workload_up(ctx: RunContext) -> None:
    from skyrig.workflows.workload import submit_and_wait

    if ctx.stack.config.environment == "prod":  # AI RMF MANAGE 1.1: only released evidence
        from skyrig.governance import require_release_evidence

        require_release_evidence(ctx.stack)
    if ctx.stack.config.ray.mode == "kuberay":
        from skyrig.workflows.kube_platform import workload_up

        ctx.summary["rayjob"] = workload_up(ctx.stack, ctx.console)
        return
    ray = ctx.summary.get("ray")
    if ray is None:
        from skyrig.workflows.localray import running_head

        head = running_head(ctx.stack.state_dir / "ray")
        if head is None:
            raise SkyrigError(
                f"no Ray head runs for stack {ctx.stack.name}",
                hint=f"run `skyrig up --stack {ctx.stack.name} --only platform` first",
            )
        ray = ctx.summary["ray"] = {
            "address": head.address, "dashboard": head.dashboard_url, "started": False}
    w = ctx.stack.config.workload
    ctx.console.print(f"  workload {w.name} {w.version}, model alias {w.model_alias}")
    job = submit_and_wait(ctx.stack, ray["dashboard"], console=ctx.console,
                          replace=bool(ctx.options.get("replace_job")))
    ctx.summary["workload"] = {
        "job_id": job.job_id,
        "status": job.status,
        "elapsed_s": round(job.elapsed_s, 1),
        "log": str(job.log_file),
        **job.outputs,
    }


def _workload_down(ctx: RunContext) -> None:
    """Stop the stack's unfinished Ray jobs; results stay under the stack's state dir."""
    if ctx.stack.config.ray.mode != "local":
        _kube_kept(ctx, "workload")
        return
    from skyrig.workflows.localray import running_head
    from skyrig.workflows.workload import stop_stack_jobs

    head = running_head(ctx.stack.state_dir / "ray")
    if head is not None:
        stop_stack_jobs(ctx.stack, head.dashboard_url, ctx.console)


# -------------------------------------------------------------------------------- monitor


def _monitor_up(ctx: RunContext) -> None:
    from skyrig.workflows.localmon import monitor_up

    ctx.summary.setdefault("monitoring", {}).update(
        monitor_up(ctx.stack, ctx.summary, ctx.console))


def _monitor_down(ctx: RunContext) -> None:
    """The local monitoring processes stop with the platform layer."""


def _monitor_skip(ctx: RunContext) -> str | None:
    from skyrig.workflows.localmon import skip_reason

    return skip_reason(ctx.stack)


REGISTRY: dict[str, Layer] = {
    "infra": Layer("infra", "provision Proxmox", _infra_up, _infra_down,
                   check_down=_infra_check_down),
    "os": Layer("os", "configure guests (Ansible site)", _os_up, _os_down, _os_skip),
    "platform": Layer("platform", "platform (Ray)", _platform_up, _platform_down),
    "workload": Layer("workload", "workload", _workload_up, _workload_down),
    "monitor": Layer("monitor", "monitoring", _monitor_up, _monitor_down, _monitor_skip),
}


def _selected(only: str) -> list[Layer]:
    if only == "all":
        return [REGISTRY[n] for n in LAYERS]
    if only not in REGISTRY:
        raise SkyrigConfigError(
            f"--only {only!r} is not a layer; use one of {', '.join(LAYERS)} or `all`")
    return [REGISTRY[only]]


def _context(stack_name: str, console: Console) -> RunContext:
    stack = load_stack(stack_name)
    plan = build_plan(stack)
    return RunContext(stack=stack, plan=plan, console=console,
                      summary={"stack": stack.name, "environment": stack.config.environment})


def run_up(stack_name: str, *, only: str = "all", console: Console,
           options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the main job for a stack; returns the summary that is also printed and saved.

    ``only`` is ``all`` or one layer name (:data:`LAYERS`). Raises
    :class:`~skyrig.errors.SkyrigConfigError` for a bad stack or layer name, and the layer's
    :class:`~skyrig.errors.SkyrigError` when a layer fails (the layers before it stay done).
    """
    t0 = time.monotonic()
    layers = _selected(only)
    console.rule("[bold]validate and plan")
    ctx = _context(stack_name, console)
    ctx.options.update(options or {})
    console.print(
        f"  stack [bold]{escape(ctx.stack.name)}[/] ({escape(str(ctx.stack.file))}):"
        f" {len(ctx.plan.pci_mappings)} PCI mappings, {len(ctx.plan.vms)} VMs"
    )
    if ctx.stack.warnings:
        ctx.summary["warnings"] = [w.render() for w in ctx.stack.warnings]
    for text in ctx.summary.get("warnings", []):
        console.print(f"  [bold yellow]warning:[/] {escape(text)}", highlight=False)
    with guarded_run(ctx.stack.state_dir, f"skyrig up --stack {ctx.stack.name}",
                     [la.name for la in layers], console=console, summary=ctx.summary) as guard:
        for n, layer in enumerate(layers, start=1):
            why = layer.skip(ctx)
            if why:
                ctx.skipped[layer.name] = why
                console.print(f"[dim]{layer.name}: skipped ({why})[/]")
                guard.end(layer.name)
                continue
            console.rule(f"[bold]{n}. {layer.name}: {layer.title}")
            guard.begin(layer.name)
            layer.up(ctx)
            ctx.ran.append(layer.name)
            guard.end(layer.name)
        ctx.summary["layers"] = {"ran": ctx.ran, "skipped": ctx.skipped}
        return _finish(ctx.stack, ctx.summary, console, t0)


def _finish(stack: Stack, summary: dict[str, Any], console: Console, t0: float) -> dict[str, Any]:
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    out = stack.state_dir / "last-up.json"
    write_atomic(out, json.dumps(summary, indent=2, default=str) + "\n")
    _print_summary(summary, console)
    console.print(f"summary saved to {out}")
    return summary


def _print_summary(s: dict[str, Any], console: Console) -> None:
    t = Table(title=f"skyrig up --stack {s['stack']}", show_header=False)
    t.add_column("what", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    infra = s.get("infra", {})
    if infra:
        if infra["changed"] or infra["pending_reboot"]:
            parts = [
                f"{k}: {', '.join(infra[k])}"
                for k in ("created", "updated", "replaced", "deleted", "rebooted", "pending_reboot")
                if infra[k]
            ]
            t.add_row("infrastructure", f"[{infra['path']}] " + "; ".join(parts))
        else:
            t.add_row(
                "infrastructure",
                f"[{infra['path']}] no changes ({len(infra['unchanged'])} objects up to date)",
            )
        t.add_row("VM addresses", ", ".join(f"{k}={v}" for k, v in infra["ips"].items()) or "-")
    w = s.get("workload")
    if w:
        t.add_row("Ray", f"{s['ray']['address']} dashboard {s['ray']['dashboard']}")
        t.add_row("workload job", f"{w['job_id']} {w['status']} in {w['elapsed_s']} s")
        for label, text in _workload_lines(w):
            t.add_row(label, text)
    m = s.get("monitoring") or {}
    if "targets_up" in m:
        t.add_row("Prometheus", f"{m['prometheus']}: targets up {m['targets_up']}/"
                  f"{m['targets_total']}; alerts firing: {', '.join(m['alerts_firing']) or 'none'}")
    layers = s.get("layers") or {}
    if layers:
        t.add_row("layers", ", ".join(layers.get("ran", [])) or "-")
        for name, why in (layers.get("skipped") or {}).items():
            t.add_row(f"  skipped {name}", why)
    for text in s.get("warnings", []):
        t.add_row("warning", escape(text.replace("\n    fix: ", " → ")))
    t.add_row("elapsed", f"{s['elapsed_s']} s")
    console.print(t)
    for key, label in (("report", "report"), ("metrics", "metrics"), ("model_card", "model card")):
        if w and w.get(key):
            console.print(f"[bold]{label}:[/] {w[key]}", soft_wrap=True, highlight=False)


def _drift_text(drift: dict[str, Any], *, verdict: bool) -> str:
    """``PSI 0.018 (none), KS 0.062`` plus ``→ no drift`` / ``→ DRIFTED`` when ``verdict``."""
    text = (
        f"PSI {drift.get('psi', float('nan')):.3f}"
        f" ({drift.get('psi_band')}), KS {drift.get('ks_statistic', 0):.3f}"
    )
    if verdict:
        text += f" → {'DRIFTED' if drift.get('drifted') else 'no drift'}"
    return text


def _workload_lines(w: dict[str, Any]) -> list[tuple[str, str]]:
    """Human lines for the model, counts, drift and explanation checks of a workload run."""
    out: list[tuple[str, str]] = []
    model = w.get("model")
    if isinstance(model, dict):
        how = (
            "trained and promoted"
            if model.get("promoted")
            else (
                "trained, not promoted (release gates)" if model.get("trained") else "from registry"
            )
        )
        out.append(
            ("model", f"{model.get('name')} v{model.get('version')} @{model.get('alias')} ({how})")
        )
    if "n_scored" in w:
        out.append(("spectra", f"{w['n_scored']} scored, {w.get('n_flagged', '?')} flagged"))
    drift, normal = w.get("drift"), w.get("drift_normal")
    if isinstance(normal, dict) and normal:
        # labelled data (the synthetic survey): the normal spectra are what a drift verdict is
        # about; the injected anomalies shift the distribution of all scores by design
        out.append(("score drift", _drift_text(normal, verdict=True) + " (normal spectra)"))
        if isinstance(drift, dict) and drift:
            out.append(
                ("all scores", _drift_text(drift, verdict=False) + " (with the survey's anomalies)")
            )
    elif isinstance(drift, dict) and drift:
        out.append(("score drift", _drift_text(drift, verdict=True)))
    xai = w.get("xai")
    if isinstance(xai, dict) and xai:
        auroc = xai.get("localisation_auroc_localised_mean")
        rand = xai.get("randomisation_passed")
        out.append(
            (
                "explanations",
                f"localisation AUROC {auroc:.2f}"
                if isinstance(auroc, float)
                else "localisation AUROC n/a",
            )
        )
        out.append(
            (
                "sanity check",
                "weight randomisation "
                + ("passed" if rand else "FAILED" if rand is False else "not run"),
            )
        )
    return out


def run_down(stack_name: str, *, only: str = "all", console: Console) -> list[str]:
    """Undo the layers in reverse order (``only``: one layer); returns the layers undone."""
    layers = list(reversed(_selected(only)))
    ctx = _context(stack_name, console)
    ctx.options["only"] = only
    todo = [layer for layer in layers if not layer.skip(ctx)]
    for layer in todo:  # credentials first: nothing is stopped or reported kept without them
        layer.check_down(ctx)
    done: list[str] = []
    with guarded_run(ctx.stack.state_dir, f"skyrig down --stack {ctx.stack.name}",
                     [la.name for la in layers], console=console) as guard:
        for layer in todo:
            console.rule(f"[bold]down: {layer.name}")
            guard.begin(layer.name)
            layer.down(ctx)
            done.append(layer.name)
            guard.end(layer.name)
    return done
