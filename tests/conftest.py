"""Test-tier plumbing (every test belongs to exactly one tier, unit by default) and the shared
fixtures: a pvesim on loopback with fast tasks, a client for it, a scratch project root.
Helpers behind them live in ``tests/support.py``."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyrig.proxmox.client import PveClient, RetryPolicy
from skyrig.proxmox.endpoint import Endpoint
from support import endpoint_of, make_root


@pytest.fixture(autouse=True)
def _default_signal_handlers() -> Iterator[None]:
    """Every test starts with Python's own SIGINT/SIGTERM handlers and leaves them as it found
    them. In-process CLI calls install handlers for the life of the process (``skyrig.cli.main``
    its own and, on its interrupt path, ``SIG_DFL``; ``pvesim serve`` a stop handler). With one
    of those left behind in an xdist worker, ``_thread.interrupt_main`` in a later Ctrl-C test
    raised nothing: ``test_proxmox_interrupt`` failed once with "DID NOT RAISE
    KeyboardInterrupt", ``test_one_job_per_release`` once with a 60 s wait."""
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)

TIERS = ("unit", "integration", "roles", "vm", "gpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") and not _cuda():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (run tests/gpu on one)"))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------- shared pvesim fixtures

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
