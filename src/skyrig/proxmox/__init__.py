"""The Proxmox reconcile core: client, task waiter, mappings, GPU VMs, direct apply.

The Pulumi dynamic providers (``skyrig.pulumi.providers``) and the direct apply both call this
package; no Proxmox logic is written twice. See docs/provisioning.md.
"""

from skyrig.proxmox.client import PveClient, RetryPolicy
from skyrig.proxmox.endpoint import PVESIM_ENV, Endpoint, resolve_endpoint
from skyrig.proxmox.tasks import TaskResult, WaitPolicy, wait_for_task

__all__ = ["PVESIM_ENV", "Endpoint", "PveClient", "RetryPolicy", "TaskResult", "WaitPolicy",
           "resolve_endpoint", "wait_for_task"]
