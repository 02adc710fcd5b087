"""skyrig:workload.scoring: field bounds and cross-key rules, each reported with file, line and
key path; the defaults are the workload's own scoring defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrig.config import load_stack
from skyrig.errors import SkyrigConfigError
from skyrig.plan.workload import scoring_env, scoring_gpu_workers
from support import edit_stack, make_root

pytestmark = pytest.mark.unit

PROD_SCORING = """    scoring:
      batch_size: 256
      num_gpus_per_actor: 0.5
      concurrency: 14
      precision: float32        # tf32/bfloat16 not yet shown within the parity tolerance
      pin_memory: true
      jax_preallocate: false
"""


def _prod_with(tmp_path: Path, scoring: str, *edits: tuple[str, str]) -> Path:
    root = make_root(tmp_path)
    edit_stack(root, "prod", PROD_SCORING, scoring)
    for old, new in edits:
        edit_stack(root, "prod", old, new)
    return root


def _issues(root: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(SkyrigConfigError) as info:
        load_stack("prod", root)
    return [(i.path, i.line, i.message + " " + i.hint) for i in info.value.issues]


def _scoring(**values: object) -> str:
    lines = "".join(f"      {k}: {v}\n" for k, v in values.items())
    return f"    scoring:\n{lines}"


BAD = [
    ("batch-zero", {"batch_size": 0}, "batch_size", "greater than or equal to 1"),
    ("batch-huge", {"batch_size": 100000}, "batch_size", "less than or equal to 8192"),
    ("batch-text", {"batch_size": "'256'"}, "batch_size", "valid integer"),
    ("gpus-negative", {"num_gpus_per_actor": -1}, "num_gpus_per_actor", "greater than"),
    ("gpus-fraction-above-one", {"num_gpus_per_actor": 1.5}, "num_gpus_per_actor",
     "whole GPUs"),
    ("actors-zero", {"concurrency": 0}, "concurrency", "from 1 to 1024, or `auto`"),
    ("actors-word", {"concurrency": "many"}, "concurrency", "from 1 to 1024, or `auto`"),
    ("precision-fp16", {"precision": "fp16"}, "precision", "float32"),
    ("unknown-key", {"batch": 3}, "batch", "unknown key"),
]


@pytest.mark.parametrize(("case", "values", "key", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_field_bounds_name_file_line_and_key(tmp_path: Path, case: str,
                                             values: dict[str, object], key: str,
                                             fragment: str) -> None:
    root = _prod_with(tmp_path, _scoring(**values))
    issues = _issues(root)
    hits = [i for i in issues if i[0] == f"skyrig:workload.scoring.{key}"]
    assert hits and fragment.lower() in hits[0][2].lower(), issues
    text = (root / "stacks" / "Pulumi.prod.yaml").read_text().splitlines()
    assert hits[0][1] is not None and text[hits[0][1] - 1].strip().startswith(f"{key}:")


RULES = [
    ("more-actors-than-the-worker-group", _scoring(num_gpus_per_actor=0.5, concurrency=17),
     (), "concurrency", "holds 16 such actors"),
    ("actor-larger-than-a-worker-pod", _scoring(num_gpus_per_actor=2, concurrency=1), (),
     "num_gpus_per_actor", "has 1 GPU(s)"),
    ("gpu-scoring-without-use-gpu", _scoring(num_gpus_per_actor=1),
     (("    use_gpu: true\n", "    use_gpu: false\n"),), "num_gpus_per_actor",
     "use_gpu is false"),
    ("reduced-precision-without-parity", _scoring(num_gpus_per_actor=1, precision="tf32"), (),
     "precision", "not shown torch scores at tf32 within the parity tolerance"),
    ("reduced-precision-on-cpu", _scoring(precision="bfloat16"), (), "precision",
     "GPU scoring only"),
    ("precision-the-framework-lacks", _scoring(num_gpus_per_actor=1, precision="bfloat16"),
     (("    framework: torch\n", "    framework: jax\n"),), "precision",
     "does not implement bfloat16 scoring with jax"),
    ("jax-preallocation-on-a-shared-card",
     _scoring(num_gpus_per_actor=0.5, jax_preallocate="true"),
     (("    framework: torch\n", "    framework: jax\n"),), "jax_preallocate", "75 %"),
]


@pytest.mark.parametrize(("case", "scoring", "edits", "key", "fragment"), RULES,
                         ids=[r[0] for r in RULES])
def test_cross_key_rules(tmp_path: Path, case: str, scoring: str,
                         edits: tuple[tuple[str, str], ...], key: str, fragment: str) -> None:
    issues = _issues(_prod_with(tmp_path, scoring, *edits))
    hits = [i for i in issues if i[0] == f"skyrig:workload.scoring.{key}"]
    assert hits and fragment in hits[0][2], issues
    assert hits[0][1] is not None


def test_a_verified_reduced_precision_is_accepted(tmp_path: Path) -> None:
    root = _prod_with(tmp_path, _scoring(num_gpus_per_actor=1, concurrency=7,
                                         precision="tf32"))
    record = root / "workloads" / "qso_anomaly" / "release" / "precision.yaml"
    record.write_text(record.read_text().replace("  tf32: unverified\n", "  tf32: verified\n",
                                                 1))
    st = load_stack("prod", root)
    assert scoring_env(st)["QSO_SCORE_PRECISION"] == "tf32"
    assert scoring_gpu_workers(st) == 7  # next to the standing cluster's 1 GPU worker


def test_the_worker_group_exactly_full_is_accepted(tmp_path: Path) -> None:
    # with no standing GPU worker (ray.gpu_workers_min 0) the job may take every GPU VM
    st = load_stack("prod", _prod_with(tmp_path, _scoring(num_gpus_per_actor=0.5,
                                                          concurrency=16),
                                       ("    gpu_workers_min: 1\n", "    gpu_workers_min: 0\n")))
    assert scoring_gpu_workers(st) == 8 == st.config.ray.gpu_workers_max


def test_defaults_are_the_workloads_scoring_defaults(tmp_path: Path) -> None:
    """A stack without the section hands the workload exactly its own defaults."""
    from qso_anomaly.score.config import ScoringConfig

    st = load_stack("local")
    assert "scoring" not in (Path(st.file).read_text())
    env = scoring_env(st)
    assert ScoringConfig.from_env(env) == ScoringConfig()
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "QSO_SCORE_CONCURRENCY" not in env and "QSO_SCORE_NUM_GPUS" not in env
    assert scoring_gpu_workers(st) == 0


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_shipped_gpu_stacks_read_back_by_the_workload(name: str) -> None:
    from qso_anomaly.score.config import ScoringConfig

    st = load_stack(name)
    cfg = ScoringConfig.from_env(scoring_env(st))
    sc = st.config.workload.scoring
    assert (cfg.device, cfg.num_gpus, cfg.batch_size, cfg.concurrency, cfg.precision) == (
        "cuda", sc.num_gpus_per_actor, sc.batch_size, sc.concurrency, "float32")
    assert cfg.jax_preallocate is False and cfg.pin_memory is True
