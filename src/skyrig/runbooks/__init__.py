"""Executable runbooks: parse ``runbooks/*.md`` (:mod:`.parse`) and run them (:mod:`.execute`)."""

from skyrig.runbooks.parse import KINDS, Runbook, Step, find_runbook, load_runbooks, parse_runbook

__all__ = ["KINDS", "Runbook", "Step", "find_runbook", "load_runbooks", "parse_runbook"]
