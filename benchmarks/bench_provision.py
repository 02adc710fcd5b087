"""Benchmark: provision the prod topology (7 nodes, 8 mappings, 11 VMs) on pvesim with the `lab`
hardware profile, end to end through the direct apply, then the no-op re-run.

Prints one JSON object: wall times, API calls (client- and server-side), and the sum of pvesim
task durations that a perfectly parallel client could not avoid. Targets: no-op < 5 s;
provisioning bounded by task time, not client overhead.

    .venv/bin/python benchmarks/bench_provision.py [--parallelism N] [--task-scale X]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pvesim.tasks import DEFAULT_DURATIONS
from pvesim.testing import running_sim
from skyrig.config import load_stack
from skyrig.plan import build_plan
from skyrig.proxmox.apply import apply_plan
from skyrig.proxmox.client import PveClient
from skyrig.proxmox.endpoint import Endpoint

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parallelism", type=int, default=None)
    ap.add_argument("--task-scale", type=float, default=1.0,
                    help="multiply pvesim's task durations (shows overhead stays constant)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="skyrig-bench-"))
    try:
        st = load_stack("prod", REPO)  # read only: apply_plan keeps no state here
        plan = build_plan(st)
        par = args.parallelism or st.config.proxmox.parallelism
        d = {k: v * args.task_scale for k, v in DEFAULT_DURATIONS.items()}
        with running_sim(tmp, hardware="lab", task_durations=d) as sim:
            token_id, secret = sim.root_token
            client = PveClient(Endpoint(url=sim.url.removesuffix("/api2/json"),
                                        token_id=token_id, token_secret=secret,
                                        ca_path=str(sim.ca_path)), pool_size=2 * par)
            t0 = time.perf_counter()
            first = apply_plan(plan, client, parallelism=par, task_timeout_s=120)
            t_create = time.perf_counter() - t0
            server_create = sum(sim.request_counts().values())
            sim.reset_request_counts()
            t0 = time.perf_counter()
            again = apply_plan(plan, client, parallelism=par, task_timeout_s=120)
            t_noop = time.perf_counter() - t0
            server_noop = dict(sim.request_counts())
        per_vm = d["qmclone"] + d["qmconfig"] + d["resize"] + d["qmstart"] + d["agent_boot"]
        waves = -(-len(plan.vms) // par)
        out = {
            "stack": "prod", "hardware": "lab", "nodes": len(st.config.nodes),
            "mappings": len(plan.pci_mappings), "vms": len(plan.vms), "parallelism": par,
            "task_scale": args.task_scale,
            "provision_wall_s": round(t_create, 2),
            "provision_api_calls": first.api_calls, "provision_server_requests": server_create,
            "task_time_per_vm_s": round(per_vm, 2),
            "task_time_lower_bound_s": round(per_vm * waves, 2),
            "client_overhead_s": round(t_create - per_vm * waves, 2),
            "noop_wall_s": round(t_noop, 3), "noop_changed": again.changed,
            "noop_api_calls": again.api_calls,
            "noop_server_methods": sorted({m for m, _ in server_noop}),
            "noop_target_s": 5.0, "noop_ok": t_noop < 5.0 and not again.changed,
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if out["noop_ok"] else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
