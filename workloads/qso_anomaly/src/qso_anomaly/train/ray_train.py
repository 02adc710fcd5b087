"""Distributed training with Ray Train's TorchTrainer (CPU workers here, GPU by configuration).

The training arrays are written once as ``.npz`` under the run's storage path (shared storage
on a multi-node cluster, like the checkpoints); every worker loads them and
``prepare_data_loader`` gives it its DistributedSampler shard. Rank 0 reports the final state
dict as a checkpoint (Ray Train v2 reports metrics only together with a checkpoint).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.errors import ModelError
from qso_anomaly.models.torch_model import QsoAutoencoder


def ensure_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` when set (a Ray job), else start a private local Ray (no
    dashboard) — never silently attach to some other cluster found on this machine."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # a loaded 2-core machine can take longer than Ray's default to bring up the raylet
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                              "log_to_driver": False}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
        return
    kwargs["address"] = "local"
    kwargs["_node_ip_address"] = "127.0.0.1"  # keep all Ray traffic on loopback
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if object_store_memory is not None:
        kwargs["object_store_memory"] = object_store_memory
    ray.init(**kwargs)


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader, TensorDataset

    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.models.torch_model import build_model
    from qso_anomaly.train.loop import run_epoch
    from qso_anomaly.train.schedule import torch_optimizer

    if not config["use_gpu"]:
        torch.set_num_threads(int(config.get("threads_per_worker", 1)))
    spec = ModelSpec.from_dict(config["spec"])
    grid = WavelengthGrid.from_dict(config["grid"])
    torch.manual_seed(config["seed"])
    model = build_model(spec, grid)
    model.load_state_dict(torch.load(config["init_path"], weights_only=True))
    with np.load(config["data_path"]) as d:
        ds = TensorDataset(torch.from_numpy(d["flux"]), torch.from_numpy(d["ivar"]),
                           torch.from_numpy(d["z"]))
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    per_worker = max(1, spec.batch_size // world)
    loader = DataLoader(ds, batch_size=per_worker, shuffle=True, drop_last=len(ds) > per_worker)
    loader = ray.train.torch.prepare_data_loader(loader)
    net: torch.nn.Module = ray.train.torch.prepare_model(model)
    epochs = int(config["epochs"])
    opt, sched = torch_optimizer(net.parameters(), spec.learning_rate, epochs)
    history: list[float] = []
    for epoch in range(epochs):
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        history.append(run_epoch(net, loader, opt))
        sched.step()
    metrics = {"loss": history[-1], "epochs": epochs, "world_size": world,
               "loss_history": json.dumps(history)}
    with tempfile.TemporaryDirectory() as tmp:
        if ctx.get_world_rank() == 0:
            torch.save(model.state_dict(), Path(tmp) / "model.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def train_with_ray(
    model: QsoAutoencoder,
    batch: SpectraBatch,
    *,
    epochs: int,
    seed: int,
    num_workers: int = 2,
    use_gpu: bool = False,
    storage_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place with a TorchTrainer; returns training info."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ensure_ray(num_cpus=max(2, num_workers))
    storage = Path(storage_path or Path(tempfile.gettempdir()) / "qso_anomaly_ray").resolve()
    name = f"qso-ae-{uuid.uuid4().hex[:8]}"
    run_dir = storage / f"{name}-inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    data_path = run_dir / "train.npz"
    init_path = run_dir / "init.pt"
    np.savez(data_path, flux=batch.flux, ivar=batch.ivar, z=batch.z)
    torch.save(model.state_dict(), init_path)
    config = {
        "spec": model.spec.to_dict(), "grid": model.grid.to_dict(), "seed": seed,
        "epochs": epochs, "use_gpu": use_gpu, "data_path": str(data_path),
        "init_path": str(init_path), "threads_per_worker": 1,
    }
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(storage_path=str(storage), name=name),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise ModelError(f"Ray Train run {name} finished without a checkpoint",
                         hint=f"see the worker logs under {storage / name}")
    with result.checkpoint.as_directory() as ckpt:
        state = torch.load(Path(ckpt) / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    metrics = result.metrics or {}
    hist = json.loads(metrics.get("loss_history", "[]"))
    for p in (data_path, init_path):
        p.unlink(missing_ok=True)
    return {"loss_history": hist, "train_seconds": seconds, "backend": "ray_train",
            "num_workers": num_workers, "use_gpu": use_gpu, "ray_run": name,
            "world_size": metrics.get("world_size")}
