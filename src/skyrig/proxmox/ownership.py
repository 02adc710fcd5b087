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
    """Parse PVE's ``tags`` property into a lower-case set.

    PVE 7.3+ writes ``a;b`` (qm.conf ``tags``); older releases and the UI also accept ``,`` and
    spaces as separators.

    Args:
        value: The ``tags`` value of a VM config or ``/cluster/resources`` row (``None`` allowed).

    Returns:
        The tags, lower-cased, without empty entries.
    """
    return {t for t in _TAG_SPLIT.split(str(value or "").lower()) if t}


def vm_owned(config: Mapping[str, Any], tag: str, description: str | None = None) -> bool:
    """Say whether a VM (its config or its ``/cluster/resources`` row) belongs to ``tag``'s stack.

    True when the tags hold ``tag``; or, for a clone skyrig has not tagged yet, when the VM has
    no tags and its description equals ``description`` (what skyrig gave the clone).

    Args:
        config: The VM's config or resources row; ``tags`` and ``description`` are read.
        tag: The stack's owner tag, ``skyrig-<stack>``.
        description: The description skyrig gives this stack's clones, or ``None`` to accept
            only the tag.

    Returns:
        Whether skyrig may change or delete the VM for this stack.
    """
    tags = parse_tags(config.get("tags"))
    if tag and tag.lower() in tags:
        return True
    live = str(config.get("description", "")).strip()
    return bool(description) and not tags and live == str(description).strip()


def mapping_description(text: str, tag: str) -> str:
    """Return the description skyrig writes on a mapping it owns.

    Args:
        text: What the stack says about the mapping.
        tag: The stack's owner tag; empty means no marker.

    Returns:
        ``"<text> [owner: <tag>]"``, or ``text`` when ``tag`` is empty.
    """
    return f"{text} [owner: {tag}]" if tag else text


def mapping_text(description: Any) -> str:
    """Return a mapping's description without skyrig's owner marker (what the stack wrote).

    Args:
        description: The live ``description`` of ``/cluster/mapping/pci/{id}`` (``None`` allowed).

    Returns:
        The text before `` [owner: ...]``; the whole description when there is no marker.
    """
    return _MARKER.sub("", str(description or ""))


def mapping_owner(description: Any) -> str | None:
    """Return the owner tag recorded in a mapping's description.

    Args:
        description: The live ``description`` of the mapping (``None`` allowed).

    Returns:
        The lower-cased owner tag, or ``None`` when someone else made the mapping.
    """
    m = _MARKER.search(str(description or ""))
    return m.group(1).lower() if m else None


def mapping_owned(live: Mapping[str, Any], tag: str, recorded: bool = False) -> bool:
    """Say whether a live cluster PCI mapping belongs to ``tag``'s stack.

    Its description's owner marker decides; without a marker (mappings made before the marker
    existed) the provisioning record does.

    Args:
        live: The mapping as ``GET /cluster/mapping/pci`` lists it; ``description`` is read.
        tag: The stack's owner tag, ``skyrig-<stack>``.
        recorded: Whether the provisioning record says this stack created the mapping.

    Returns:
        Whether skyrig may change or delete the mapping for this stack.
    """
    owner = mapping_owner(live.get("description"))
    if owner is not None:
        return owner == tag.lower()
    return recorded
