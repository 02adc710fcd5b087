import numpy as np

from qso_anomaly.baselines import PcaChi2, PcaIsolationForest
from qso_anomaly.bench.metrics import binary_metrics, detection_metrics
from qso_anomaly.data.synth import generate


def test_pca_baselines_rank_obvious_anomalies_high(ci_grid) -> None:
    train = generate(900, seed=1, grid=ci_grid, anomaly_fraction=0.0)
    test = generate(300, seed=2, grid=ci_grid, anomaly_fraction=0.2,
                    classes=["star", "reddened", "felobal"])
    hi = test.snr > 3
    test = test.take(hi)
    for model in (PcaChi2(n_components=5, n_zbins=6), PcaIsolationForest(5, 6)):
        scores = model.fit(train).score(test)
        assert scores.shape == (len(test),) and np.isfinite(scores).all()
        m = binary_metrics(scores, test.label != "normal")
        assert m["auroc"] > 0.75, type(model).__name__


def test_binary_metrics_on_known_rankings() -> None:
    pos = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    perfect = binary_metrics(np.arange(10)[::-1].astype(float), pos, k=2)
    assert perfect["ap"] == 1.0 and perfect["auroc"] == 1.0
    assert perfect["precision_at_100"] == 1.0 and perfect["recall_at_1pct"] == 0.5
    worst = binary_metrics(np.arange(10).astype(float), pos)
    assert worst["auroc"] == 0.0
    assert binary_metrics(np.ones(3), np.zeros(3, bool))["ap"] is None


def test_detection_metrics_has_per_class_snr_and_z_bins() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["normal"] * 80 + ["dla"] * 10 + ["star"] * 10)
    scores = rng.normal(size=100) + (labels != "normal") * 3
    m = detection_metrics(scores, labels, snr=rng.uniform(0.5, 10, 100), z=rng.uniform(0, 3, 100))
    assert set(m["per_class"]) == {"dla", "star"}
    assert m["per_class"]["dla"]["n"] == 90 and m["per_class"]["dla"]["n_pos"] == 10
    assert m["overall"]["auroc"] > 0.9
    assert len(m["per_snr"]) == 4 and len(m["per_z"]) == 4
    assert set(m["per_class_snr"]["star"]) == set(m["per_snr"])
