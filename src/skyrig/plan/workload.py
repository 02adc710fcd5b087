"""The workload's scoring settings as plain data (pure, no I/O).

The Ray job environment both the KubeRay RayJob and the local Ray job submission carry.

The workload reads ``QSO_SCORE_<FIELD>`` variables (``qso_anomaly.score.ScoringConfig
.from_env``), so the stack reaches it without the workload importing skyrig. Names and value
formats follow that reader: integers, floats and ``true``/``false``.
"""

from __future__ import annotations

import posixpath

from skyrig.config.checks import scorer_gpu_pods
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

    :func:`skyrig.config.checks.scorer_gpu_pods`: ``ceil(concurrency / actors_per_worker)``,
    0 for CPU scoring, and with ``concurrency: auto`` every GPU worker pod free next to the
    always-on RayCluster's ``ray.gpu_workers_min`` (auto then means "all the GPUs the job can
    have", not the one pod a cold cluster starts with).
    """
    cfg = stack.config
    return scorer_gpu_pods(cfg.workload, cfg.ray, cfg.vms)


def input_args(stack: Stack, base: str) -> list[str]:
    """Return the pipeline's input arguments for ``skyrig:workload.input``.

    ``[]`` for the synthetic survey; for DESI files ``--data P… [--redshifts R…]`` with each
    relative path joined to ``base`` (POSIX join; absolute paths kept as they are). The
    KubeRay job passes the data volume's mount path as ``base``, the local job the project
    root (:func:`skyrig.config.checks.workload_input` has checked which paths each accepts).

    Args:
        stack: The validated stack.
        base: Directory the relative paths are relative to, e.g. ``/data``.

    Returns:
        Arguments of ``python -m qso_anomaly.pipeline`` (its ``--data``/``--redshifts``).
    """
    inp = stack.config.workload.input
    if inp.kind == "synthetic":
        return []

    def at(item: str) -> str:
        return item if item.startswith("/") else posixpath.join(base, item)

    args = ["--data", *map(at, inp.paths)]
    if inp.redshifts:
        args += ["--redshifts", *map(at, inp.redshifts)]
    return args
