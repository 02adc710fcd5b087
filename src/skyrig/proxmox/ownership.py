"""The one ownership rule of the reconcile core (VMs and cluster PCI mappings).

A VM belongs to a stack when its ``tags`` hold the plan's owner tag (``skyrig-<stack>``, see
:attr:`skyrig.plan.Plan.owner_tag`), or when it is a half-made clone of this stack: no tags yet
and the exact description skyrig gives its clones. A cluster PCI mapping has no tags, so skyrig
writes the owner into its description (:func:`mapping_description`); the provisioning record
(``.skyrig/<stack>/provision.json``) is the second witness. Reconcile, prune and destroy all ask
the functions below; nothing else parses tags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TAG_SPLIT = re.compile(r"[;,\s]+")
#: Marker appended to a mapping's description: ``<text> [owner: skyrig-<stack>]``.
_MARKER = re.compile(r"\s*\[owner: ([A-Za-z0-9_.-]+)\]\s*$")


def parse_tags(value: Any) -> set[str]:
    """PVE's ``tags`` (``a;b``; older releases and the UI also accept ``,`` and spaces) as a
    lower-case set."""
    return {t for t in _TAG_SPLIT.split(str(value or "").lower()) if t}


def vm_owned(config: Mapping[str, Any], tag: str, description: str | None = None) -> bool:
    """Whether a VM (its config or its ``/cluster/resources`` row) belongs to ``tag``'s stack.

    True when the tags hold ``tag``; or, for a clone skyrig has not tagged yet, when the VM has
    no tags and its description equals ``description`` (what skyrig gave the clone)."""
    tags = parse_tags(config.get("tags"))
    if tag and tag.lower() in tags:
        return True
    live = str(config.get("description", "")).strip()
    return bool(description) and not tags and live == str(description).strip()


def mapping_description(text: str, tag: str) -> str:
    """The description skyrig writes on a mapping it owns (``text`` plus the owner marker)."""
    return f"{text} [owner: {tag}]" if tag else text


def mapping_text(description: Any) -> str:
    """A mapping's description without skyrig's owner marker (what the stack wrote)."""
    return _MARKER.sub("", str(description or ""))


def mapping_owner(description: Any) -> str | None:
    """The owner tag recorded in a mapping's description, or None (made by someone else)."""
    m = _MARKER.search(str(description or ""))
    return m.group(1).lower() if m else None


def mapping_owned(live: Mapping[str, Any], tag: str, recorded: bool = False) -> bool:
    """Whether the live mapping belongs to ``tag``'s stack: its description names the owner,
    or the provisioning record says this stack created it (mappings made before the marker)."""
    owner = mapping_owner(live.get("description"))
    if owner is not None:
        return owner == tag.lower()
    return recorded
