"""Benchmark: what the local monitoring stack adds to `skyrig up --stack local` (goal < 15 s),
and Prometheus' resident memory once it scrapes.

Starts a pvesim on loopback (not timed), then times what the platform layer adds for
monitoring (read-only token, configs, six processes up and answering) and the monitor layer's
status query; waits until every target is up (timed separately), lets Prometheus scrape for
``--scrape-s`` seconds at the stack's interval, reads its VmRSS, stops everything. State and
ports are private to the run. Prints one JSON object on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from skyrig.config import load_stack
from skyrig.proxmox.endpoint import Endpoint
from skyrig.workflows import localmon

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrape-s", type=float, default=30.0, help="scraping before RSS is read")
    args = ap.parse_args()
    from pvesim.testing import running_sim

    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "stacks").mkdir(parents=True)
        shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
        text = (ROOT / "stacks" / "Pulumi.local.yaml").read_text()
        base = random.randrange(40000, 60000, 10)
        text = text.replace("dcgm_exporter: false",
                            f"dcgm_exporter: false\n    local_port_base: {base}")
        (root / "stacks" / "Pulumi.local.yaml").write_text(text)
        wl = root / "workloads" / "qso_anomaly" / "release"
        wl.mkdir(parents=True)
        shutil.copy(ROOT / "workloads/qso_anomaly/CHANGELOG.md", wl.parent / "CHANGELOG.md")
        shutil.copy(ROOT / "workloads/qso_anomaly/release/thresholds.yaml", wl)
        stack = load_stack("local", root)
        with running_sim(Path(tmp)) as sim:
            ep = Endpoint.from_pvesim(sim)
            try:
                t0 = time.monotonic()
                localmon.ensure_installed(console)
                t_installed = time.monotonic() - t0
                t1 = time.monotonic()
                localmon.start(stack, ep, console, include_ray=False)
                st = localmon.status(stack)
                t_added = time.monotonic() - t1
                t2 = time.monotonic()
                while time.monotonic() - t2 < 60:
                    st = localmon.status(stack)
                    if st["targets_up"] == st["targets_total"]:
                        break
                    time.sleep(0.5)
                t_all_up = time.monotonic() - t1
                time.sleep(args.scrape_s)
                pid = int(localmon._pids(localmon.mon_dir(stack))["prometheus"]["pid"])
                rss = _rss_mib(pid)
                st = localmon.status(stack)
            finally:
                localmon.stop(stack)
    out = {
        "benchmark": "local_monitoring_stack",
        "install_check_s": round(t_installed, 3),
        "added_to_up_s": round(t_added, 2),
        "all_targets_up_s": round(t_all_up, 2),
        "targets": f"{st['targets_up']}/{st['targets_total']}",
        "scrape_interval": stack.config.monitoring.scrape_interval,
        "scraped_s": args.scrape_s,
        "prometheus_rss_mib": round(rss, 1),
        "target_s": 15.0,
        "meets_target": t_added < 15.0,
        "note": "Ray head target excluded (no Ray started by this benchmark)",
    }
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
