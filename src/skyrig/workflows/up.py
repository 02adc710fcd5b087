"""`skyrig up` / `skyrig down`: the main job, phase by phase.

1. validate the stack and build the plan;
2. provision Proxmox (PCI mappings, GPU VMs) through the reconcile core; for an embedded endpoint
   (`pvesim`) start the emulator in the background first;
3. start the Ray head (local stacks) and submit the pinned workload as a Ray job;
4. print a summary: what changed, where the report, metrics and model card are.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from skyrig.config import Stack, load_stack
from skyrig.errors import SkyrigError
from skyrig.plan import build_plan


def _endpoint_for(stack: Stack, console: Console) -> Any:
    """For an embedded stack: start (or find) pvesim and say how to reach it."""
    if not stack.config.proxmox.embedded:
        return None
    from skyrig.proxmox.endpoint import Endpoint
    from skyrig.pvesim.daemon import ensure_running

    sim = ensure_running(stack.state_dir / "pvesim", hardware=stack.config.proxmox.pvesim_hardware)
    console.print(f"  pvesim: {sim.url} (CA {sim.ca_path}, pid {sim.pid})")
    return Endpoint(
        url=sim.url, token_id=sim.token_id, token_secret=sim.token_secret, ca_path=str(sim.ca_path)
    )


def _phase(console: Console, n: int, title: str) -> None:
    console.rule(f"[bold]{n}. {title}")


def run_up(stack_name: str, *, only: str = "all", console: Console) -> dict[str, Any]:
    """Run the main job for a stack; returns the summary that is also printed and saved."""
    t0 = time.monotonic()
    _phase(console, 1, "validate and plan")
    stack = load_stack(stack_name)
    plan = build_plan(stack)
    console.print(
        f"  stack [bold]{stack.name}[/] ({stack.file}): {len(plan.pci_mappings)} PCI"
        f" mappings, {len(plan.vms)} VMs"
    )
    summary: dict[str, Any] = {"stack": stack.name, "environment": stack.config.environment}

    _phase(console, 2, "provision Proxmox")
    from skyrig.proxmox.apply import apply_stack

    override = _endpoint_for(stack, console)
    result = apply_stack(stack, console=console, endpoint_override=override)
    summary["infra"] = {
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
    if only == "infra":
        return _finish(stack, summary, console, t0)

    ray_cfg = stack.config.ray
    if ray_cfg.mode != "local":
        raise SkyrigError(
            f"stack {stack.name} runs Ray as `{ray_cfg.mode}`; `skyrig up` drives workloads only"
            " on a local Ray head so far",
            hint=f"use `skyrig up --stack {stack.name} --only infra`, then"
            " `skyrig ansible run site.yml --stack ...` (see runbooks/)",
        )
    _phase(console, 3, "Ray and the workload")
    from skyrig.workflows.localray import ensure_head
    from skyrig.workflows.workload import submit_and_wait

    head = ensure_head(ray_cfg, stack.state_dir / "ray")
    console.print(
        f"  Ray head {head.address} ({'started' if head.started else 'already running'});"
        f" dashboard {head.dashboard_url}"
    )
    w = stack.config.workload
    console.print(f"  workload {w.name} {w.version}, model alias {w.model_alias}")
    job = submit_and_wait(stack, head.dashboard_url, console=console)
    summary["ray"] = {
        "address": head.address,
        "dashboard": head.dashboard_url,
        "started": head.started,
    }
    summary["workload"] = {
        "job_id": job.job_id,
        "status": job.status,
        "elapsed_s": round(job.elapsed_s, 1),
        "log": str(job.log_file),
        **job.outputs,
    }
    return _finish(stack, summary, console, t0)


def _finish(stack: Stack, summary: dict[str, Any], console: Console, t0: float) -> dict[str, Any]:
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    out = stack.state_dir / "last-up.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
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
    t.add_row("elapsed", f"{s['elapsed_s']} s")
    console.print(t)
    for key, label in (("report", "report"), ("metrics", "metrics"), ("model_card", "model card")):
        if w and w.get(key):
            console.print(f"[bold]{label}:[/] {w[key]}", soft_wrap=True, highlight=False)


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
    drift = w.get("drift")
    if isinstance(drift, dict) and drift:
        out.append(
            (
                "score drift",
                f"PSI {drift.get('psi', float('nan')):.3f}"
                f" ({drift.get('psi_band')}), KS {drift.get('ks_statistic', 0):.3f}"
                f" → {'DRIFTED' if drift.get('drifted') else 'no drift'}",
            )
        )
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


def run_down(stack_name: str, *, console: Console) -> None:
    """Remove what the stack owns and stop the local services skyrig started for it."""
    stack = load_stack(stack_name)
    from skyrig.proxmox.apply import destroy_stack

    override = _endpoint_for(stack, console)
    destroy_stack(stack, console=console, endpoint_override=override)
    from skyrig.workflows.localray import stop_head

    if stop_head(stack.state_dir / "ray"):
        console.print("  stopped the local Ray head")
    if stack.config.proxmox.embedded:
        from skyrig.pvesim.daemon import stop

        stop(stack.state_dir / "pvesim")
        console.print("  stopped pvesim (its state is kept; `skyrig pvesim reset` clears it)")
