"""NIST AI RMF governance: evidence catalogue (``catalogue.yaml``), per-version checks, report,
the prod deploy gate (:func:`require_release_evidence`), and the model alias operations."""

from skyrig.governance.check import (
    CheckResult,
    GovernanceError,
    check_stack,
    load_catalogue,
    require_release_evidence,
)

__all__ = ["CheckResult", "GovernanceError", "check_stack", "load_catalogue",
           "require_release_evidence"]
