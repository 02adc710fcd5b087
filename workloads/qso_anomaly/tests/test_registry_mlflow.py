"""MLflow registration, aliases and promotion gates on a local sqlite store (module-scoped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qso_anomaly.registry.gates import evaluate_gates, load_thresholds
from qso_anomaly.registry.mlflow_registry import (
    CANDIDATE,
    CHAMPION,
    ModelRegistry,
    PromotionBlocked,
    write_release_decision,
)
from qso_anomaly.registry.tracking import sqlite_tracking_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIPPED = Path(__file__).resolve().parents[1] / "release" / "thresholds.yaml"
GOOD = {"detection": {"overall": {"auroc": 0.9, "ap_lift": 5.0}}, "drift": {"psi": 0.01},
        "xai": {"localisation_auroc_localised_mean": 0.9, "randomisation": {"passed": True}},
        "card": {"complete": True}}
BAD = {**GOOD, "detection": {"overall": {"auroc": 0.52, "ap_lift": 5.0}}}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, Path]:
    root = tmp_path_factory.mktemp("mlflow")
    reg = ModelRegistry(sqlite_tracking_uri(root), artifact_root=root / "artifacts")
    return reg, root


def _model_dir(root: Path, tag: str) -> Path:
    d = root / f"model-{tag}"
    d.mkdir()
    (d / "weights.bin").write_bytes(tag.encode() * 10)
    (d / "spec.json").write_text(json.dumps({"tag": tag}))
    return d


def test_register_gates_and_promotion_flow(registry: tuple[ModelRegistry, Path]) -> None:
    reg, root = registry
    th = load_thresholds(SHIPPED)
    assert reg.tracking_uri.startswith("sqlite:///") and (root / "mlflow.db").is_file()

    v1 = reg.register(model_dir=_model_dir(root, "v1"), model_name="qso-ae-test",
                      params={"epochs": 2, "latent": 8}, metrics={"val": {"loss": 0.5}},
                      data_hashes={"train.parquet": "ab" * 32, "data_version": "cd" * 32},
                      generator_seed=11, tags={"framework": "torch"})
    assert v1.version == "1" and CANDIDATE in v1.aliases
    assert reg.resolve_alias("qso-ae-test", CHAMPION) is None
    assert reg.resolve_alias("no-such-model", CHAMPION) is None
    run = reg.client.get_run(v1.run_id)
    assert run.data.params["generator_seed"] == "11"
    assert run.data.params["epochs"] == "2"
    assert run.data.metrics["val.loss"] == pytest.approx(0.5)
    tags = reg.version_tags(v1)
    assert tags["framework"] == "torch" and tags["benchmark"] == "qso-inject-v1"
    assert tags["data_version"] == "cd" * 32

    # A failing gate blocks champion.
    bad = evaluate_gates(th, BAD)
    with pytest.raises(PromotionBlocked, match="overall_auroc"):
        reg.promote(v1, bad)
    assert reg.resolve_alias("qso-ae-test", CHAMPION) is None
    assert reg.version_tags(v1)["release_gates"] == "failed"

    # Passing gates promote.
    good = evaluate_gates(th, GOOD)
    promoted = reg.promote(v1, good)
    assert CHAMPION in promoted.aliases
    assert reg.resolve_alias("qso-ae-test", CHAMPION).version == "1"  # type: ignore[union-attr]

    # A second version that fails keeps the old champion; it is only a candidate.
    v2 = reg.register(model_dir=_model_dir(root, "v2"), model_name="qso-ae-test",
                      params={"epochs": 1}, generator_seed=12)
    with pytest.raises(PromotionBlocked):
        reg.promote(v2, bad)
    assert reg.resolve_alias("qso-ae-test", CHAMPION).version == "1"  # type: ignore[union-attr]
    assert reg.resolve_alias("qso-ae-test", CANDIDATE).version == "2"  # type: ignore[union-attr]

    decision = write_release_decision(root / "rel" / "release_decision.json", v2, bad,
                                      promoted=False, artifact_hashes={"card": "00"})
    doc = json.loads(decision.read_text())
    assert doc["decision"] == "no-go" and doc["promoted_to"] is None
    assert doc["gates"]["passed"] is False and doc["version"] == "2"


def test_default_artifact_root_is_next_to_the_sqlite_db(tmp_path: Path) -> None:
    reg = ModelRegistry(sqlite_tracking_uri(tmp_path / "store"), experiment="other")
    exp = reg.client.get_experiment(reg.experiment_id)
    assert exp.artifact_location == (tmp_path / "store" / "mlartifacts").resolve().as_uri()


def test_download_and_release_artifacts(registry: tuple[ModelRegistry, Path]) -> None:
    reg, root = registry
    v = reg.register(model_dir=_model_dir(root, "v3"), model_name="qso-ae-dl", params={})
    local = reg.download_model_dir(v, root / "dl")
    assert (local / "weights.bin").read_bytes() == b"v3" * 10
    card = root / "model_card.md"
    card.write_text("# card")
    reg.log_release(v, [card], metrics={"detection": {"overall": {"auroc": 0.8}}},
                    version_tags={"auroc": 0.8})
    got = reg.download_release_file(v, "model_card.md", root / "dl2")
    assert got is not None and got.read_text() == "# card"
    assert reg.download_release_file(v, "missing.json", root / "dl3") is None
    assert reg.version_tags(v)["auroc"] == "0.8"
    assert reg.client.get_run(v.run_id).data.metrics["detection.overall.auroc"] == 0.8
