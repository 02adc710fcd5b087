"""Stack validation of the platform keys (issue 9 item 5): supported version combination, GPU
workers fit their VMs, replicas and GPUs fit the GPU worker VMs, the kubeconfig is never plain
text, unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrig.errors import SkyrigConfigError
from support import edit_stack, make_root, stack

pytestmark = pytest.mark.unit

CASES = [
    ("prod", "gpu_workers_max: 8", "gpu_workers_max: 9",
     "9 GPU worker replicas but 8 GPU worker VMs", "skyrig:ray.gpu_workers_max"),
    ("prod", "    gpus_per_worker: 1", "    gpus_per_worker: 2",
     "gpus_per_worker 2 but a GPU worker VM has only 1 GPU", "skyrig:ray.gpus_per_worker"),
    ("prod", "system_reserve_memory_mib: 8192", "system_reserve_memory_mib: 190000",
     "the object store alone needs 32768 MiB", "skyrig:platform.system_reserve_memory_mib"),
    ("prod", "system_reserve_cpu: 2", "system_reserve_cpu: 24",
     "none is left for the Ray worker", "skyrig:platform.system_reserve_cpu"),
    ("prod", "    kubeconfig:\n      env: SKYRIG_KUBECONFIG",
     "    kubeconfig: |\n      apiVersion: v1", "never plain text", "skyrig:platform.kubeconfig"),
    ("prod", "    gpu_feature_discovery: true", "    gpu_feature_discovery: true\n    gfd: true",
     "unknown key", "skyrig:platform.gfd"),
    ("prod", 'cuda_version: "12.8"', 'cuda_version: "12.6"',
     "publishes no image for CUDA 12.6", "skyrig:gpu_stack.cuda_version"),
    ("prod", "      variant: cuda", "      variant: cuda\n      tag: latest",
     "not the pinned workload version 0.3.0", "skyrig:platform.image.tag"),
    ("prod", "  skyrig:platform:\n", "  skyrig:platform:\n    device_plugin_version: 0.17.0\n",
     "device plugin 0.17.0 is not supported", "skyrig:platform.device_plugin_version"),
    ("prod", "    tracking_uri: https://mlflow.astro-lab.internal\n", "",
     "mlflow.mode is external but workload.tracking_uri is not set",
     "skyrig:workload.tracking_uri"),
    ("dev", "      mode: in-cluster", "      mode: external",
     "mlflow.mode is external but workload.tracking_uri is not set",
     "skyrig:workload.tracking_uri"),
    ("dev", "      nfs_path: /export/desi/dr1\n", "",
     "data.kind nfs needs nfs_server and nfs_path", "skyrig:platform.data.nfs_path"),
    ("prod", "      claim_name: desi-dr1-spectra\n", "",
     "data.kind pvc needs claim_name", "skyrig:platform.data.claim_name"),
    ("prod", "    version: v1.33.4+k3s1", "    version: v1.30.4+k3s1",
     "not supported", "skyrig:kubernetes.version"),
    ("dev", "  skyrig:platform:\n", "  skyrig:platform:\n    head_memory_mib: 8000\n",
     "the Ray head wants 8000 MiB", "skyrig:platform.head_memory_mib"),
]


@pytest.mark.parametrize(("name", "old", "new", "message", "path"), CASES,
                         ids=[c[3][:40] for c in CASES])
def test_platform_rules(tmp_path: Path, name: str, old: str, new: str, message: str,
                        path: str) -> None:
    root = make_root(tmp_path)
    edit_stack(root, name, old, new)
    with pytest.raises(SkyrigConfigError) as info:
        stack(root, name)
    hits = [i for i in info.value.issues if message in i.message]
    assert hits, str(info.value)
    assert any(i.path == path for i in hits), [(i.path, i.message) for i in hits]
    assert all(i.line for i in hits)


def test_shipped_platform_settings(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    prod, dev = stack(root, "prod").config.platform, stack(root, "dev").config.platform
    assert prod.mlflow.mode == "external" and dev.mlflow.mode == "in-cluster"
    assert prod.data.kind == "pvc" and dev.data.kind == "nfs"
    assert prod.kubeconfig is not None and prod.kubeconfig.env == "SKYRIG_KUBECONFIG"
