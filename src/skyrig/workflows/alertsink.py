"""The local Alertmanager's receiver: a loopback HTTP endpoint that appends every webhook
notification (Alertmanager webhook payload v4: ``status``, ``alerts[]`` with ``labels``,
``annotations``, ``startsAt``, ``endsAt``) as one JSON line to a file.

Run as ``python -m skyrig.workflows.alertsink --port P --out FILE``; ``GET /health`` answers
``ok``. Only 127.0.0.1 is bound.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20


def read_alerts(path: Path) -> list[dict[str, Any]]:
    """Every recorded notification, oldest first (empty when none yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def serve(port: int, out: Path) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` recording to ``out`` (call ``serve_forever`` on it)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._reply(200 if self.path == "/health" else 404, b"ok\n")

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if self.path != "/alerts" or n > MAX_BODY:
                self._reply(404 if self.path != "/alerts" else 413, b"no\n")
                return
            try:
                payload = json.loads(self.rfile.read(n))
            except ValueError:
                self._reply(400, b"not JSON\n")
                return
            with lock, out.open("a") as f:
                f.write(json.dumps(payload, sort_keys=True) + "\n")
            self._reply(200, b"ok\n")

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    serve(args.port, args.out).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
