"""Benchmark pvesim: GET /cluster/resources with 200 VMs and PUT config updates, 16 clients.

Runs the simulator as a separate process (``python -m pvesim serve``) so that client and
server do not share one GIL, drives it with 16 keep-alive HTTPS clients (``http.client``), and
prints machine-readable JSON: requests per second, p50/p99 latency per scenario.

    python benchmarks/bench_pvesim.py [--vms 200] [--clients 16] [--requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any


def _start(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    endpoint = tmp / "endpoint.json"
    cmd = [sys.executable, "-m", "pvesim", "serve", "--state", str(tmp / "state.json"),
           "--port", "0", "--endpoint-file", str(endpoint), "--task-duration", "create=0",
           "--task-duration", "config=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not endpoint.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("pvesim did not start")
        time.sleep(0.05)
    return proc, json.loads(endpoint.read_text())


class Client:
    def __init__(self, ep: dict[str, Any]) -> None:
        ctx = ssl.create_default_context(cafile=ep["ca_path"])
        self.conn = http.client.HTTPSConnection("127.0.0.1", ep["port"], context=ctx, timeout=60)
        self.headers = {"Authorization": f"PVEAPIToken={ep['token_id']}={ep['token_secret']}",
                        "Connection": "keep-alive"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             decode: bool = True) -> Any:
        data = urllib.parse.urlencode(body) if body else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, "/api2/json" + path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {resp.reason}")
        return json.loads(raw)["data"] if decode else raw


def _populate(ep: dict[str, Any], vms: int) -> list[tuple[str, int]]:
    client = Client(ep)
    out = []
    for i in range(vms):
        node = "pve1" if i % 2 else "pve2"
        vmid = 1000 + i
        client.call("POST", f"/nodes/{node}/qemu", {"vmid": vmid, "name": f"bench-{i}",
                                                    "memory": 1024, "cores": 2,
                                                    "net0": "virtio,bridge=vmbr0"})
        out.append((node, vmid))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        res = client.call("GET", "/cluster/resources?type=vm")
        if sum(1 for r in res if r.get("lock") is None and r["vmid"] >= 1000) >= vms:
            break
        time.sleep(0.2)
    return out


def _run(ep: dict[str, Any], clients: int, total: int,
         request: Any) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = total // clients
    errors: list[str] = []

    def worker(idx: int) -> None:
        client = Client(ep)
        mine = []
        for n in range(per_client):
            t0 = time.perf_counter()
            try:
                request(client, idx, n)
            except Exception as exc:
                errors.append(str(exc))
                client = Client(ep)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pvesim-") as tmp:
        proc, ep = _start(Path(tmp))
        try:
            vms = _populate(ep, args.vms)

            def get_resources(client: Client, idx: int, n: int) -> None:
                raw = client.call("GET", "/cluster/resources", decode=False)
                assert raw.count(b'"type":"qemu"') >= args.vms

            def put_config(client: Client, idx: int, n: int) -> None:
                node, vmid = vms[(idx * 7919 + n) % len(vms)]
                client.call("PUT", f"/nodes/{node}/qemu/{vmid}/config",
                            {"description": f"run {idx}-{n}", "cores": 1 + n % 4})

            results = {
                "cluster_resources_get": _run(ep, args.clients, args.requests, get_resources),
                "config_put": _run(ep, args.clients, args.requests // 2, put_config),
            }
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps({"benchmark": "pvesim", "vms": args.vms, "clients": args.clients,
                      "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                      "target_req_per_s": 300, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
