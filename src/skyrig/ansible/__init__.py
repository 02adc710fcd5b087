"""Run skyrig's playbooks through ansible-runner, with an inventory derived from a stack."""

from skyrig.ansible.result import AnsibleRunFailed, AnsibleRunResult, HostSummary, TaskFailure
from skyrig.ansible.runner import resolve_playbook, run_playbook

__all__ = [
    "AnsibleRunFailed",
    "AnsibleRunResult",
    "HostSummary",
    "TaskFailure",
    "resolve_playbook",
    "run_playbook",
]
