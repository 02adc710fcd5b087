"""ScoringConfig: every knob of a scoring run (batch size, device, Ray actor pool, GPU path).

The CPU path is the tested default; every GPU setting is opt-in. In a Ray job the settings can
come from ``QSO_SCORE_*`` environment variables (:meth:`ScoringConfig.from_env`), which is how
a stack file reaches the workload without the workload importing skyrig.

Units: memory in bytes (``object_store_limit`` ≥ 16 MiB, default 256 MiB; GPU memory of an
RTX A4000 16 GiB), CPUs and GPUs in Ray's logical units (fractions allowed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from qso_anomaly.errors import QsoAnomalyError

Framework = Literal["torch", "jax"]
Device = Literal["cpu", "cuda"]
Precision = Literal["float32", "tf32", "bfloat16"]

ENV_PREFIX = "QSO_SCORE_"
# RTX A4000: 16 GiB GDDR6, 448 GB/s, 19.2 FP32 TFLOP/s (NVIDIA RTX A4000 datasheet)
A4000_MEMORY_BYTES = 16 * 1024**3


# OpenMP threads of PyTorch spin while they wait for work. On a shared machine (more runnable
# threads than cores) spinning threads steal the cores their team mates need and PyTorch slows
# down several times (measured on the 2-core CI machine at load average 11: 2 threads 113-260
# spectra/s spinning vs 1,900-2,560 passive). libgomp reads this once, when torch is imported,
# so it has to be in the environment of every process that scores (Ray actors, child runs).
THREAD_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def worker_env(config: ScoringConfig) -> dict[str, str]:
    """Environment variables a scoring process needs before torch or JAX is imported.

    Args:
        config: The scoring settings.

    Returns:
        :data:`THREAD_ENV` (``OMP_WAIT_POLICY=PASSIVE``), plus for JAX
        ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless ``jax_preallocate`` (docs.jax.dev "GPU
        memory allocation") and ``JAX_PLATFORMS=cpu`` on the CPU device.
    """
    env = dict(THREAD_ENV)
    if config.framework == "jax":
        if not config.jax_preallocate:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if config.device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
    return env


def apply_thread_env() -> None:
    """Put :data:`THREAD_ENV` into ``os.environ`` (effective only before torch is imported)."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


class ScoringConfigError(QsoAnomalyError):
    """A scoring setting is out of range or cannot be parsed (a :class:`QsoAnomalyError`)."""


@dataclass(frozen=True)
class ScoringConfig:
    """Settings of one scoring run.

    - ``batch_size``: spectra per model call (rows per streamed Parquet read as well); JAX
      batches are padded to exactly this size so XLA compiles once per process.
    - ``device``: ``cpu`` or ``cuda`` (PyTorch ``cuda:0``; JAX picks its default GPU).
    - ``threads``: PyTorch intra-op threads of the plain loop (``None``: every core the
      process may use, ``os.sched_getaffinity``).
    - ``prefetch``: batches read ahead by a reader thread (Arrow decodes without the GIL, so
      reading overlaps the model).
    - ``pin_memory``: page-locked host buffers for asynchronous host→device copies (CUDA only).
    - ``precision``: ``float32`` (default), ``tf32`` (TF32 matmul/conv on Ampere) or
      ``bfloat16`` (autocast); use a reduced precision only where ``benchmarks/gpu_check.sh``
      shows the scores stay within the parity tolerance.
    - ``jax_preallocate``: JAX grabs 75 % of GPU memory at first use unless this is False
      (docs.jax.dev "GPU memory allocation"); keep it False when torch shares the card.
    - ``jax_cache_dir``: JAX's persistent compilation cache (docs.jax.dev "Persistent
      compilation cache"), so a process or Ray actor that scores with a model shape already
      compiled once loads the executable instead of compiling it again (CI model on CPU:
      1.2 CPU-s per process → 0.3). ``auto``: ``$XDG_CACHE_HOME/qso-anomaly/jax`` (else
      ``~/.cache/qso-anomaly/jax``); ``off``: no cache; anything else: that directory. A
      ``JAX_COMPILATION_CACHE_DIR`` already set wins.
    - Ray Data: ``concurrency`` scorer actors (``None``: sized from ``ray.cluster_resources()``,
      see :func:`qso_anomaly.score.shards.actor_pool_size`), ``actor_cpus`` logical CPUs and
      ``num_gpus`` GPUs per actor, ``object_store_limit`` bytes of object store the pipeline
      may hold (the streaming window).

    Attributes:
        batch_size: Spectra per model call and rows per Parquet read (≥ 1).
        framework: ``torch`` or ``jax``.
        device: ``cpu`` or ``cuda``.
        threads: PyTorch intra-op threads (≥ 1), or ``None`` for every usable core.
        prefetch: Record batches read ahead (≥ 0; 0 reads in the scoring thread).
        pin_memory: Page-locked host staging buffers for host→device copies (CUDA only).
        precision: ``float32``, ``tf32`` or ``bfloat16``.
        jax_preallocate: Let JAX preallocate 75 % of GPU memory.
        concurrency: Ray Data scorer actors (≥ 1), or ``None`` to size from the cluster.
        actor_cpus: Logical CPUs per actor (> 0), or ``None`` to size from the cluster.
        num_gpus: GPUs per actor (≥ 0; > 0 needs ``device="cuda"``).
        object_store_limit: Object store bytes the Ray Data pipeline may hold (≥ 16 MiB =
            16,777,216 bytes; default 256 MiB).

    Raises:
        ScoringConfigError: On construction, naming every out-of-range field at once.
    """

    batch_size: int = 256
    framework: Framework = "torch"
    device: Device = "cpu"
    threads: int | None = None
    prefetch: int = 2
    pin_memory: bool = True
    precision: Precision = "float32"
    jax_preallocate: bool = False
    jax_cache_dir: str = "auto"
    concurrency: int | None = None
    actor_cpus: float | None = None
    num_gpus: float = 0.0
    object_store_limit: int = 256 * 1024**2

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size} (must be >= 1)")
        if self.framework not in ("torch", "jax"):
            problems.append(f"framework={self.framework!r} (torch or jax)")
        if self.device not in ("cpu", "cuda"):
            problems.append(f"device={self.device!r} (cpu or cuda)")
        if self.precision not in ("float32", "tf32", "bfloat16"):
            problems.append(f"precision={self.precision!r} (float32, tf32 or bfloat16)")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads={self.threads} (>= 1 or unset)")
        if self.prefetch < 0:
            problems.append(f"prefetch={self.prefetch} (>= 0)")
        if self.concurrency is not None and self.concurrency < 1:
            problems.append(f"concurrency={self.concurrency} (>= 1 or unset)")
        if self.actor_cpus is not None and self.actor_cpus <= 0:
            problems.append(f"actor_cpus={self.actor_cpus} (> 0 or unset)")
        if self.num_gpus < 0:
            problems.append(f"num_gpus={self.num_gpus} (>= 0)")
        if self.num_gpus > 0 and self.device != "cuda":
            problems.append(f"num_gpus={self.num_gpus} needs device='cuda'")
        if self.object_store_limit < 16 * 1024**2:
            problems.append(f"object_store_limit={self.object_store_limit} (>= 16 MiB)")
        if problems:
            raise ScoringConfigError(
                "invalid scoring settings: " + "; ".join(problems),
                hint="fix the value in the workload config or the QSO_SCORE_* variable")

    def jax_cache_path(self) -> Path | None:
        """The persistent compilation cache directory ``jax_cache_dir`` names (None: off)."""
        raw = self.jax_cache_dir.strip()
        if raw.lower() in ("", "off", "none", "false", "0"):
            return None
        if raw == "auto":
            base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            return Path(base) / "qso-anomaly" / "jax"
        return Path(raw).expanduser()

    def with_(self, **changes: Any) -> ScoringConfig:
        """A copy with some fields changed (validated again).

        Args:
            **changes: New field values by name.

        Returns:
            The changed settings.

        Raises:
            ScoringConfigError: When a changed value is out of range.
            TypeError: For a name that is not a field.
        """
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings by field name (JSON-ready; ``ScoringConfig(**d)`` rebuilds them).

        Returns:
            Every field by name.
        """
        return asdict(self)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ScoringConfig:
        """Read the settings from ``QSO_SCORE_<FIELD>`` variables; explicit overrides win.

        Example: ``QSO_SCORE_NUM_GPUS=0.5``. Integers, floats and booleans (1/true/yes/on,
        0/false/no/off) are parsed by field; empty variables are ignored.

        Args:
            env: Variables to read (default ``os.environ``).
            **overrides: Field values that replace the environment's; ``None`` values are
                ignored.

        Returns:
            The validated settings.

        Raises:
            ScoringConfigError: Naming the variable when a value does not parse, or listing
                the out-of-range fields.
            TypeError: For an override that is not a field.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _parse(f.name, raw)
            except ValueError as exc:
                raise ScoringConfigError(f"{key}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_INT = {"batch_size", "threads", "prefetch", "concurrency", "object_store_limit"}
_FLOAT = {"actor_cpus", "num_gpus"}
_BOOL = {"pin_memory", "jax_preallocate"}


def _parse(name: str, raw: str) -> Any:
    if name in _INT:
        return int(raw)
    if name in _FLOAT:
        return float(raw)
    if name in _BOOL:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true/false")
    return raw


def activation_bytes_per_spectrum(channels: tuple[int, ...], pool: int, npix: int,
                                  n_rest: int) -> int:
    """Rough peak bytes one spectrum holds during an inference forward pass (float32).

    Counts the inputs and their normalised copies (4 × P), the largest conv block's
    activations with its conv, InstanceNorm and PReLU outputs alive at once (3 × C × L, L the
    block's length), and the rest-frame decoder output plus the observed-frame reconstruction.
    Inference keeps no autograd graph, so earlier blocks' outputs are freed as the pass goes
    on. An estimate; ``benchmarks/gpu_check.sh`` measures the real peak.

    Args:
        channels: Conv output channels per block (``ModelSpec.channels``).
        pool: Max-pool factor between blocks.
        npix: Observed-frame pixels P.
        n_rest: Rest-frame decoder pixels R.

    Returns:
        Bytes per spectrum.
    """
    largest = 0
    length = npix
    for i, c in enumerate(channels):
        width = 2 * c if i == len(channels) - 1 else c
        largest = max(largest, 3 * width * length)
        if i < len(channels) - 1:
            length //= max(pool, 1)
    return 4 * (4 * npix + largest + n_rest + 2 * npix)


def gpu_batch_size(channels: tuple[int, ...], pool: int, npix: int, n_rest: int,
                   memory_bytes: int = A4000_MEMORY_BYTES, *, share: float = 0.5,
                   cap: int = 8192) -> int:
    """Largest power-of-two batch whose activations fit in ``share`` of ``memory_bytes``.

    The rest is left to the CUDA context, allocator fragmentation, a second framework on the
    same card and the pinned staging buffers. For the full model on the 7,781-px grid and a
    16 GiB A4000 this gives 512 spectra; ``benchmarks/gpu_check.sh`` measures the real peak
    (``torch.cuda.max_memory_allocated``) to confirm it.

    Args:
        channels: Conv output channels per block.
        pool: Max-pool factor between blocks.
        npix: Observed-frame pixels P.
        n_rest: Rest-frame decoder pixels R.
        memory_bytes: GPU memory in bytes (default 16 GiB, RTX A4000 datasheet).
        share: Fraction of ``memory_bytes`` the activations may use.
        cap: Largest batch returned.

    Returns:
        Batch size in spectra, a power of two in [1, cap] (1 even when one spectrum does
        not fit).
    """
    per = activation_bytes_per_spectrum(channels, pool, npix, n_rest)
    budget = memory_bytes * share
    b = 1
    while b * 2 <= cap and (b * 2) * per <= budget:
        b *= 2
    return b
