"""Fixtures: a pvesim on loopback with fast tasks, a client for it, and a scratch project root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmox_stackroot import endpoint_of, make_root

from skyrig.proxmox.client import PveClient, RetryPolicy
from skyrig.proxmox.endpoint import Endpoint

FAST = {"qmclone": 0.05, "qmconfig": 0.02, "qmstart": 0.05, "qmstop": 0.02,
        "qmshutdown": 0.05, "qmreboot": 0.05, "qmdestroy": 0.02, "resize": 0.02,
        "agent_boot": 0.05}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[object]:
    from pvesim.testing import running_sim

    with running_sim(tmp_path, hardware="local", task_durations=FAST, lock_timeout=0.5) as s:
        yield s


@pytest.fixture
def endpoint(sim: object) -> Endpoint:
    return endpoint_of(sim)


@pytest.fixture
def client(endpoint: Endpoint) -> PveClient:
    return PveClient(endpoint, retry=RetryPolicy(attempts=4, backoff_s=0.05))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)
