"""JAX training (optax Adam on the same χ² loss), in-process or inside a Ray actor.

Ray's JaxTrainer supports TPUs only (alpha), so on CPU and a single GPU the JAX model trains in
one ``@ray.remote`` actor; its runtime env turns off XLA's 75% GPU-memory preallocation so that it
can share a card with torch actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qso_anomaly.data.batch import SpectraBatch
from qso_anomaly.models.torch_model import QsoAutoencoder

JAX_RUNTIME_ENV = {"env_vars": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}


def _train_arrays(
    spec_dict: dict[str, Any], grid_dict: dict[str, Any], params: dict[str, Any],
    flux: np.ndarray, ivar: np.ndarray, z: np.ndarray, epochs: int, seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[dict[str, Any], list[float], float]:
    import jax
    import jax.numpy as jnp
    import optax

    from qso_anomaly.data.grid import WavelengthGrid
    from qso_anomaly.models.jax_model import _forward_parts, normalise
    from qso_anomaly.models.spec import ModelSpec
    from qso_anomaly.train.augment import augment_masks

    spec = ModelSpec.from_dict(spec_dict)
    grid = WavelengthGrid.from_dict(grid_dict)
    wave = jnp.asarray(grid.wave, dtype=jnp.float32)
    n = flux.shape[0]
    bs = min(spec.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    sched = optax.cosine_decay_schedule(spec.learning_rate, max(1, epochs) * steps_per_epoch)
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(sched))
    net = {"params": params["params"]}
    opt_state = tx.init(net)

    def loss_fn(p, fa, ia, fl, iv, zz):
        full = {**p, "density": params["density"]}
        recon, lat_aug = _forward_parts(full, spec, wave, fa, ia, zz)
        _, ivn, scale = normalise(fl, iv)
        r = (fl - recon) / scale[:, None]
        loss = (0.5 * ivn * r**2).sum(-1).mean() / fl.shape[-1]
        if spec.consistency_weight > 0:
            target = jax.lax.stop_gradient(_forward_parts(full, spec, wave, fl, iv, zz)[1])
            var = jnp.maximum(target.var(axis=0).mean(), 1e-6)
            loss = loss + spec.consistency_weight * ((lat_aug - target) ** 2).mean() / var
        return loss

    @jax.jit
    def step(p, state, fa, ia, fl, iv, zz):
        loss, grads = jax.value_and_grad(loss_fn)(p, fa, ia, fl, iv, zz)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    rng = np.random.default_rng(seed)
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = rng.permutation(n)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            fa, ia = augment_masks(flux[idx], ivar[idx], grid.wave, rng, spec.augment_fraction)
            net, opt_state, loss = step(net, opt_state, jnp.asarray(fa), jnp.asarray(ia),
                                        jnp.asarray(flux[idx]), jnp.asarray(ivar[idx]),
                                        jnp.asarray(z[idx]))
            total += float(loss)
        history.append(total / steps_per_epoch)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    out = {"params": jax.tree_util.tree_map(np.asarray, net["params"]),
           "density": params["density"]}
    return out, history, time.perf_counter() - t0


def train_jax(
    model: QsoAutoencoder, batch: SpectraBatch, *, epochs: int, seed: int,
    use_ray: bool = False, use_gpu: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train the JAX implementation from ``model``'s initial weights; copies the result back
    into ``model`` (so a TrainedModel always holds a torch state dict)."""
    import jax

    from qso_anomaly.models.jax_model import params_from_torch, state_dict_from_params

    init = jax.tree_util.tree_map(np.asarray, params_from_torch(model))
    args = (model.spec.to_dict(), model.grid.to_dict(), init, batch.flux, batch.ivar, batch.z,
            epochs, seed)
    if use_ray:
        import ray

        from qso_anomaly.train.ray_train import ensure_ray

        ensure_ray()

        @ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, runtime_env=JAX_RUNTIME_ENV)
        class JaxTrainerActor:
            def train(self, *a: Any) -> tuple[dict[str, Any], list[float], float]:
                return _train_arrays(*a)

        actor = JaxTrainerActor.remote()  # type: ignore[attr-defined]
        try:
            params, history, seconds = ray.get(actor.train.remote(*args))
        finally:
            ray.kill(actor)
        backend = "ray_actor_jax"
    else:
        params, history, seconds = _train_arrays(*args, on_epoch=on_epoch)
        backend = "local_jax"
    state = state_dict_from_params(params, model.spec)
    model.load_state_dict(state, strict=False)
    return {"loss_history": history, "train_seconds": seconds, "backend": backend}
