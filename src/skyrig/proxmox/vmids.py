"""Free VM ids: ``GET /cluster/nextid`` is not a reservation, so parallel creates race.

skyrig's stacks pin every vmid, so provisioning does not need this; it is for tools that create
throw-away VMs (tests, benchmarks, ad-hoc clones): ask for the next id, try, and on PVE's
``already exists`` ask again, a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from skyrig.errors import ProxmoxError

T = TypeVar("T")
RACE_TEXTS = ("already exists", "config file already exists")


def next_vmid(client: Any, lower: int | None = None) -> int:
    """Return the first free VMID (PVE API: ``GET /cluster/nextid``; not a reservation).

    Args:
        client: A :class:`~skyrig.proxmox.client.PveClient` or anything with its ``get``.
        lower: Smallest VMID to consider (PVE's ``vmid`` parameter), or ``None``.

    Returns:
        The VMID (PVE returns it as a string; converted to ``int``).

    Raises:
        ProxmoxError: The call failed.
    """
    params = {"vmid": lower} if lower is not None else {}
    return int(client.get("cluster/nextid", **params))


def with_free_vmid(client: Any, create: Callable[[int], T], *, attempts: int = 5) -> T:
    """Call ``create(vmid)`` with a fresh ``nextid``; retry when another client won the race.

    Args:
        client: A :class:`~skyrig.proxmox.client.PveClient` or anything with its ``get``.
        create: Makes the VM with the given VMID; a :class:`ProxmoxError` whose message says
            ``already exists`` means another client took the id.
        attempts: How many ids to try.

    Returns:
        Whatever ``create`` returned.

    Raises:
        ProxmoxError: ``create`` failed for another reason (re-raised), or every attempt raced.
    """
    last: ProxmoxError | None = None
    for _ in range(attempts):
        vmid = next_vmid(client)
        try:
            return create(vmid)
        except ProxmoxError as exc:
            if not any(t in (exc.pve_message or "") for t in RACE_TEXTS):
                raise
            last = exc
    raise ProxmoxError(f"no free vmid after {attempts} attempts (nextid kept racing)",
                       status=last.status if last else None,
                       pve_message=last.pve_message if last else None,
                       hint="create fewer VMs at once or pin vmids in the stack")
