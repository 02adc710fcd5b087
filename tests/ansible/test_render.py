"""Rendered by Ansible itself on the controller (no target needed): the k3s configuration per
host per stack against golden files, the DKMS per-kernel module check, and the headers
metapackage per kernel flavour."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from contract import REPO

from skyrig.config import load_stack
from skyrig.plan.inventory import build_inventory

pytestmark = pytest.mark.integration

PLAYBOOKS = Path(__file__).parent / "playbooks"
GOLDEN = Path(__file__).parent / "golden"
TOKEN = "golden-token-" + "0" * 51  # stands in for skyrig.ansible.secrets' token
UPDATE = os.environ.get("SKYRIG_UPDATE_GOLDEN") == "1"


def _ansible_playbook(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_k3s_config_per_host_matches_golden(stack: str, tmp_path: Path) -> None:
    inv = build_inventory(load_stack(stack, REPO))
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inv, sort_keys=False))
    (tmp_path / "secret.yml").write_text(yaml.safe_dump({"k8s_node_token": TOKEN}))
    out = tmp_path / "out"
    out.mkdir()
    proc = _ansible_playbook(
        "-i", "inventory.yml", "-e", "@secret.yml", "-e", f"out_dir={out}",
        str(PLAYBOOKS / "render_k3s.yml"), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert TOKEN not in proc.stdout + proc.stderr  # the token is never logged
    rendered = {p.name: p.read_text() for p in sorted(out.glob("*.yaml"))}
    servers = sorted(inv["all"]["children"]["kube_control_plane"]["hosts"])
    agents = sorted(inv["all"]["children"]["kube_node"]["hosts"])
    assert set(rendered) == {f"{h}.yaml" for h in servers + agents}
    golden_dir = GOLDEN / stack / "k3s"
    if UPDATE:
        golden_dir.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (golden_dir / name).write_text(text)
    assert rendered == {p.name: p.read_text() for p in sorted(golden_dir.glob("*.yaml"))}
    # the meaning behind the golden text: first server inits, the rest join it with the token
    cfg = {n: yaml.safe_load(t) for n, t in rendered.items()}
    first = cfg[f"{servers[0]}.yaml"]
    assert first.get("cluster-init") is True and "server" not in first
    first_ip = inv["all"]["hosts"][servers[0]]["ansible_host"]
    for h in servers[1:] + agents:
        c = cfg[f"{h}.yaml"]
        assert "cluster-init" not in c and c["server"] == f"https://{first_ip}:6443", h
    for c in cfg.values():
        assert c["token"] == TOKEN


def _modules_tree(root: Path, kernels: dict[str, bool]) -> None:
    for kernel, has_module in kernels.items():
        d = root / kernel
        d.mkdir(parents=True)
        (d / "modules.dep").write_text("")
        if has_module:
            (d / "updates" / "dkms").mkdir(parents=True)
            (d / "updates" / "dkms" / "nvidia.ko.xz").write_bytes(b"")


def test_dkms_check_passes_when_every_kernel_has_a_module(tmp_path: Path) -> None:
    _modules_tree(tmp_path / "modules", {"6.1.0-28-amd64": True, "6.1.0-31-amd64": True})
    proc = _ansible_playbook("-i", "localhost,", "-e", f"modules_root={tmp_path / 'modules'}",
                             "-e", "kernel=6.1.0-28-amd64", str(PLAYBOOKS / "dkms_check.yml"),
                             cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "HEADERS=linux-headers-6.1.0-28-amd64,linux-headers-amd64" in proc.stdout


def test_dkms_check_fails_for_a_pending_kernel_without_module(tmp_path: Path) -> None:
    # the running kernel has its module; the one security updates installed (pending reboot)
    # has none: the role must fail and name it
    _modules_tree(tmp_path / "modules",
                  {"6.1.0-28-cloud-amd64": True, "6.1.0-31-cloud-amd64": False})
    proc = _ansible_playbook("-i", "localhost,", "-e", f"modules_root={tmp_path / 'modules'}",
                             "-e", "kernel=6.1.0-28-cloud-amd64",
                             str(PLAYBOOKS / "dkms_check.yml"), cwd=tmp_path)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())  # the YAML callback wraps long messages
    assert "no NVIDIA kernel module for installed kernel(s) 6.1.0-31-cloud-amd64;" in out
    assert "apt-get install linux-headers-6.1.0-31-cloud-amd64 linux-headers-cloud-amd64" in out
