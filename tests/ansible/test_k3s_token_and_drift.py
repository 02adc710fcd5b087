"""The k3s join token (once per stack, 0600, reused, passed as an extra-vars file) and the
node label/taint drift filter of the k8s_node role."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from contract import ROLES_DIR

from skyrig.ansible.secrets import TOKEN_VAR, k3s_token_file
from skyrig.errors import AnsibleRunError

pytestmark = pytest.mark.unit


def test_token_is_generated_once_0600_and_reused(tmp_path: Path) -> None:
    path = k3s_token_file(tmp_path / "prod")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = yaml.safe_load(path.read_text())[TOKEN_VAR]
    assert len(token) == 64 and int(token, 16) >= 0
    assert k3s_token_file(tmp_path / "prod") == path
    assert yaml.safe_load(path.read_text())[TOKEN_VAR] == token  # re-runs reuse it
    assert yaml.safe_load(k3s_token_file(tmp_path / "dev").read_text())[TOKEN_VAR] != token


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = k3s_token_file(tmp_path)
    path.chmod(0o644)
    with pytest.raises(AnsibleRunError, match="chmod 600"):
        k3s_token_file(tmp_path)


def test_empty_token_file_is_refused_not_replaced(tmp_path: Path) -> None:
    path = k3s_token_file(tmp_path)
    path.write_text("{}\n")
    with pytest.raises(AnsibleRunError, match="holds no usable k8s_node_token"):
        k3s_token_file(tmp_path)


def test_runner_passes_the_token_as_an_extra_vars_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ansible_runner

    from skyrig.ansible.runner import run_playbook

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_run(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ansible_runner, "run", fake_run)
    token_file = k3s_token_file(tmp_path / "st")
    with pytest.raises(AnsibleRunError):
        run_playbook("site", {"all": {}}, private_data_dir=tmp_path / "pdd",
                     extravars_files=[token_file], quiet=True)
    assert seen["cmdline"] == f"-e @{token_file}"
    token = yaml.safe_load(token_file.read_text())[TOKEN_VAR]
    assert token not in repr(seen["inventory"]) and "extravars" not in seen


def _drift() -> Any:
    path = ROLES_DIR / "k8s_node" / "filter_plugins" / "k8s_node_drift.py"
    spec = importlib.util.spec_from_file_location("k8s_node_drift", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FilterModule().filters()["k8s_node_drift"]


def _node(labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
    return {"metadata": {"name": "gpu-w-01", "labels": labels}, "spec": {"taints": taints}}


def test_no_drift_no_commands() -> None:
    node = _node({"nvidia.com/gpu.present": "true", "kubernetes.io/os": "linux"},
                 [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    cmds = _drift()(node, {"nvidia.com/gpu.present": "true"},
                    ["nvidia.com/gpu=present:NoSchedule"], "gpu-w-01")
    assert cmds == []


def test_changed_taints_and_labels_are_reconciled() -> None:
    # the node registered with an old taint and label; the inventory now wants new ones
    node = _node(
        {"nvidia.com/gpu.product": "OLD", "kubernetes.io/os": "linux"},
        [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        ],
    )
    cmds = _drift()(node, {"nvidia.com/gpu.product": "NVIDIA-RTX-A4000"},
                    ["nvidia.com/gpu=present:NoExecute"], "gpu-w-01")
    assert cmds == [
        ["label", "node", "gpu-w-01", "--overwrite", "nvidia.com/gpu.product=NVIDIA-RTX-A4000"],
        ["taint", "node", "gpu-w-01", "--overwrite", "nvidia.com/gpu=present:NoExecute",
         "nvidia.com/gpu:NoSchedule-"],
    ]
