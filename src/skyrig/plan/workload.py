"""The workload's scoring settings as plain data (pure, no I/O).

The Ray job environment both the KubeRay RayJob and the local Ray job submission carry.

The workload reads ``QSO_SCORE_<FIELD>`` variables (``qso_anomaly.score.ScoringConfig
.from_env``), so the stack reaches it without the workload importing skyrig. Names and value
formats follow that reader: integers, floats and ``true``/``false``.
"""

from __future__ import annotations

import math

from skyrig.config.checks import actors_per_worker
from skyrig.config.loader import Stack

#: PyTorch's OpenMP threads spin while waiting; on shared cores that slowed scoring several
#: times (docs/benchmarks.md, "Passive OpenMP threads"). libgomp reads it at torch import, so
#: it must be in the environment the job driver and every actor start with.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
ENV_PREFIX = "QSO_SCORE_"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def scoring_env(stack: Stack) -> dict[str, str]:
    """Environment variables of the workload's Ray job, sorted by name.

    ``QSO_SCORE_BATCH_SIZE``, ``_DEVICE`` (``cuda`` when ``num_gpus_per_actor > 0``, else
    ``cpu``), ``_NUM_GPUS`` (GPU only), ``_CONCURRENCY`` (absent for ``auto``: the workload
    sizes its actor pool from ``ray.cluster_resources()``), ``_PRECISION``, ``_PIN_MEMORY``,
    ``_JAX_PREALLOCATE``; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless JAX may preallocate
    (docs.jax.dev "GPU memory allocation"); ``OMP_WAIT_POLICY=PASSIVE`` (:data:`THREAD_ENV`).
    """
    sc = stack.config.workload.scoring
    gpu = sc.num_gpus_per_actor > 0
    env = {
        f"{ENV_PREFIX}BATCH_SIZE": str(sc.batch_size),
        f"{ENV_PREFIX}DEVICE": "cuda" if gpu else "cpu",
        f"{ENV_PREFIX}PRECISION": sc.precision,
        f"{ENV_PREFIX}PIN_MEMORY": _flag(sc.pin_memory),
        f"{ENV_PREFIX}JAX_PREALLOCATE": _flag(sc.jax_preallocate),
        **THREAD_ENV,
    }
    if gpu:
        env[f"{ENV_PREFIX}NUM_GPUS"] = _number(sc.num_gpus_per_actor)
    if sc.concurrency != "auto":
        env[f"{ENV_PREFIX}CONCURRENCY"] = str(sc.concurrency)
    if not sc.jax_preallocate:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return dict(sorted(env.items()))


def scoring_gpu_workers(stack: Stack) -> int:
    """Return the GPU worker pods the scorer actors need at once.

    ``ceil(concurrency / actors_per_worker)``; 0 for CPU scoring or ``concurrency: auto``
    (then the pool takes what the cluster has).
    """
    sc, r = stack.config.workload.scoring, stack.config.ray
    per_pod = actors_per_worker(sc.num_gpus_per_actor, r.gpus_per_worker)
    if sc.concurrency == "auto" or per_pod == 0:
        return 0
    return math.ceil(sc.concurrency / per_pod)
