"""Test helpers: a throw-away project root with copies of the real stack files (tests may edit
them), and the endpoint of a running pvesim."""

from __future__ import annotations

import random
import shutil
import socket
from pathlib import Path

from skyrig.config import Stack, load_stack
from skyrig.proxmox.endpoint import Endpoint

REPO = Path(__file__).resolve().parents[1]


def make_root(tmp: Path) -> Path:
    """``tmp/root`` with Pulumi.yaml, stacks/ (copies the tests may edit) and the workload's
    release files (CHANGELOG, gates) that stack validation reads."""
    root = tmp / "root"
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    for f in (REPO / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, root / "stacks" / f.name)
    wl = root / "workloads" / "qso_anomaly"
    (wl / "release").mkdir(parents=True, exist_ok=True)
    real = REPO / "workloads" / "qso_anomaly"
    shutil.copy(real / "CHANGELOG.md", wl / "CHANGELOG.md")
    shutil.copy(real / "release" / "thresholds.yaml", wl / "release" / "thresholds.yaml")
    shutil.copy(real / "release" / "precision.yaml", wl / "release" / "precision.yaml")
    return root


def edit_stack(root: Path, name: str, old: str, new: str, count: int = 1) -> None:
    """Replace text in ``root/stacks/Pulumi.<name>.yaml`` (fails loudly if ``old`` is absent)."""
    f = root / "stacks" / f"Pulumi.{name}.yaml"
    text = f.read_text()
    assert old in text, f"{old!r} not in {f}"
    f.write_text(text.replace(old, new, count))


def stack(root: Path, name: str) -> Stack:
    return load_stack(name, root)


def endpoint_of(sim: object, token: tuple[str, str] | None = None) -> Endpoint:
    """The endpoint of a running pvesim (root token unless ``token`` is given)."""
    ep = Endpoint.from_pvesim(sim)
    if token is None:
        return ep
    return Endpoint(url=ep.url, token_id=token[0], token_secret=token[1], ca_path=ep.ca_path)


def free_port_base(offsets: tuple[int, ...], low: int = 20000) -> int:
    """A port ``base`` with every ``base + offset`` free on 127.0.0.1, below the kernel's
    ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default).

    Daemons started from such a base take their ports seconds after this check; a port of
    the ephemeral range can be given to any outgoing connection meanwhile (xdist workers,
    Ray, pvesim clients), which made a monitoring test fail with "address already in use"
    on 127.0.0.1:40902. Ray's worker ports (10002-19999 by default) stay below ``low``.
    """
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    top = first - max(offsets) - 1
    for _ in range(500):
        base = random.randrange(low, top, 10)
        try:
            for off in offsets:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + off))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no free port range below {first} for offsets {offsets}")
