"""nextid races: bounded retries on `already exists`."""

from __future__ import annotations

from typing import Any

import pytest

from skyrig.errors import ProxmoxError
from skyrig.proxmox.vmids import next_vmid, with_free_vmid

pytestmark = pytest.mark.unit


class NextId:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def get(self, path: str, **params: Any) -> str:
        assert path == "cluster/nextid"
        return self.ids.pop(0)


def taken(upto: int) -> Any:
    def create(vmid: int) -> int:
        if vmid <= upto:
            raise ProxmoxError("create", status=500, pve_message=(
                f"unable to create VM {vmid} - VM {vmid} already exists on node 'pve1'"))
        return vmid
    return create


def test_nextid_is_an_int() -> None:
    assert next_vmid(NextId(["101"])) == 101


def test_race_is_retried_with_a_fresh_id() -> None:
    assert with_free_vmid(NextId(["100", "101", "102"]), taken(101)) == 102


def test_race_retries_are_bounded() -> None:
    with pytest.raises(ProxmoxError, match="no free vmid after 3 attempts"):
        with_free_vmid(NextId(["100", "100", "100"]), taken(200), attempts=3)


def test_other_errors_are_not_retried() -> None:
    def create(vmid: int) -> int:
        raise ProxmoxError("create", status=403, pve_message="Permission check failed")
    ids = NextId(["100", "101"])
    with pytest.raises(ProxmoxError, match="create"):
        with_free_vmid(ids, create)
    assert ids.ids == ["101"]
