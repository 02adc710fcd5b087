"""The workload part of `skyrig up`'s summary: which score drift it reports."""

from __future__ import annotations

import pytest

from skyrig.workflows.up import _workload_lines

pytestmark = pytest.mark.unit

ALL = {"psi": 0.039, "psi_band": "none", "ks_statistic": 0.085, "drifted": True}
NORMAL = {"psi": 0.018, "psi_band": "none", "ks_statistic": 0.062, "drifted": False}


def test_labelled_runs_give_the_verdict_of_the_normal_spectra() -> None:
    """A default `make run` printed "DRIFTED": the all-scores KS saw the synthetic survey's
    injected anomalies, while the normal spectra (the release gate's check) had not drifted."""
    lines = dict(_workload_lines({"drift": ALL, "drift_normal": NORMAL}))
    assert lines["score drift"] == "PSI 0.018 (none), KS 0.062 → no drift (normal spectra)"
    assert lines["all scores"] == "PSI 0.039 (none), KS 0.085 (with the survey's anomalies)"
    assert "DRIFTED" not in " ".join(lines.values())


def test_unlabelled_runs_give_the_verdict_of_all_scores() -> None:
    for extra in ({}, {"drift_normal": None}):
        lines = dict(_workload_lines({"drift": ALL, **extra}))
        assert lines["score drift"] == "PSI 0.039 (none), KS 0.085 → DRIFTED"
        assert "all scores" not in lines
    lines = dict(_workload_lines({"drift": NORMAL}))
    assert lines["score drift"].endswith("→ no drift")
