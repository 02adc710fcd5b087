"""The RayJob carries skyrig:workload.scoring: its runtime env is what the workload reads, its
GPU worker group is started at the pods the scorer actors need, and the object still validates
against the vendored RayJob CRD; the local Ray job submission carries the same environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from skyrig.config import load_stack
from skyrig.kube import build_kube
from skyrig.kube.objects import GPU_RESOURCE, rayjob
from skyrig.kube.validate import problems
from skyrig.plan.workload import scoring_env
from skyrig.workflows.workload import start_job
from support import edit_stack, make_root, stack

pytestmark = pytest.mark.unit


def _job_env(job: dict[str, Any]) -> dict[str, str]:
    return dict(yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"])


def _gpu_group(spec: dict[str, Any]) -> dict[str, Any]:
    (group,) = spec["workerGroupSpecs"]
    return dict(group)


def test_prod_rayjob_env_is_what_the_workload_reads() -> None:
    from qso_anomaly.score.config import ScoringConfig

    st = load_stack("prod")
    env = _job_env(rayjob(st))
    assert env == scoring_env(st)
    cfg = ScoringConfig.from_env(env)
    assert (cfg.device, cfg.num_gpus, cfg.concurrency, cfg.batch_size) == ("cuda", 0.5, 14, 256)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_job_gpu_worker_group_holds_the_scorer_actors() -> None:
    plan = build_kube(load_stack("prod"))
    (job,) = [o for o in plan.workload if o["kind"] == "RayJob"]
    (standing,) = plan.ray_cluster
    group = _gpu_group(job["spec"]["rayClusterSpec"])
    gpus_per_pod = int(group["template"]["spec"]["containers"][0]["resources"]["limits"][
        GPU_RESOURCE])
    # 14 actors x 0.5 GPU on 1-GPU pods: 7 pods, started with the job's cluster
    assert group["replicas"] == group["minReplicas"] == 7 and group["maxReplicas"] == 8
    assert group["replicas"] * gpus_per_pod >= 14 * 0.5
    assert group["rayStartParams"]["num-gpus"] == str(gpus_per_pod)
    assert _gpu_group(standing["spec"])["minReplicas"] == 1  # the standing cluster is unchanged
    assert problems([job], plan.k8s_version) == []  # runtimeEnvYAML is a RayJob CRD field


def test_auto_concurrency_leaves_the_pool_to_the_workload(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "prod", "      concurrency: 14\n", "      concurrency: auto\n")
    job = rayjob(stack(root, "prod"))
    assert "QSO_SCORE_CONCURRENCY" not in _job_env(job)
    # the workload sizes an auto pool from the GPUs Ray reports at start: the job's cluster
    # starts with every GPU pod free next to the standing cluster (8 VMs - 1), not with the
    # one pod of ray.gpu_workers_min (which sized the pool to 2 actors before)
    group = _gpu_group(job["spec"]["rayClusterSpec"])
    assert group["replicas"] == group["minReplicas"] == 7


def test_dev_batch_size_change_reaches_the_rayjob(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "dev", "      batch_size: 256\n", "      batch_size: 128\n")
    job = rayjob(stack(root, "dev"))
    assert _job_env(job)["QSO_SCORE_BATCH_SIZE"] == "128"
    assert _gpu_group(job["spec"]["rayClusterSpec"])["minReplicas"] == 1  # 2 x 0.5 GPU


class _FakeJobs:
    """The two Jobs API calls start_job makes, recorded."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def list_jobs(self) -> list[Any]:
        return []

    def submit_job(self, **kwargs: Any) -> str:
        self.submitted.append(kwargs)
        return str(kwargs["submission_id"])


def test_local_ray_job_carries_the_same_scoring_env(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYRIG_STATE_DIR", str(tmp_path / "state"))
    root = make_root(tmp_path)
    edit_stack(root, "local", "    n_spectra: 1500\n",
               "    n_spectra: 1500\n    scoring:\n      batch_size: 512\n")
    st = stack(root, "local")
    client = _FakeJobs()
    start_job(st, client, "python -c pass", console=Console(quiet=True))
    (call,) = client.submitted
    env = call["runtime_env"]["env_vars"]
    assert {k: env[k] for k in scoring_env(st)} == scoring_env(st)
    assert env["QSO_SCORE_BATCH_SIZE"] == "512" and env["QSO_SCORE_DEVICE"] == "cpu"
