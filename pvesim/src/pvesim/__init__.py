"""pvesim: a local Proxmox VE 8.4 API emulator (HTTPS on 127.0.0.1).

See docs/pvesim.md. ``from pvesim import PveSim``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pvesim.sim import PveSim

__all__ = ["PveSim"]


def __getattr__(name: str) -> Any:
    if name == "PveSim":
        from pvesim.sim import PveSim

        return PveSim
    raise AttributeError(name)
