"""Test helpers: a throw-away project root with copies of the real stack files (tests may edit
them), and the endpoint of a running pvesim."""

from __future__ import annotations

import shutil
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
