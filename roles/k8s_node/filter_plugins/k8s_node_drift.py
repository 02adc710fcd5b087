"""Filter ``k8s_node_drift``: the kubectl commands that bring a registered node's labels and
taints to the wanted ones.

k3s applies ``node-label``/``node-taint`` from config.yaml only when a node registers
(https://docs.k3s.io/cli/agent#node-labels-and-taints-for-agents), so the k8s_node role compares
the Node object from the Kubernetes API with the wanted values and applies the difference.
Labels: every wanted label is set (``--overwrite``); labels the role does not manage are left
alone. Taints: wanted taints missing from the node are added; taints on the node that are not
wanted are removed, except the ones Kubernetes itself manages (``node.kubernetes.io/*``,
``node.cloudprovider.kubernetes.io/*``, ``node-role.kubernetes.io/*``).
"""

from __future__ import annotations

from typing import Any

SYSTEM_TAINT_PREFIXES = (
    "node.kubernetes.io/",
    "node.cloudprovider.kubernetes.io/",
    "node-role.kubernetes.io/",
)


def _taint_str(t: dict[str, Any]) -> str:
    value = t.get("value")
    return f"{t['key']}{'=' + str(value) if value else ''}:{t['effect']}"


def _parse_taint(s: str) -> tuple[str, str, str]:
    kv, _, effect = s.rpartition(":")
    key, _, value = kv.partition("=")
    return key, value, effect


def k8s_node_drift(
    node: dict[str, Any], labels: dict[str, Any], taints: list[str], name: str
) -> list[list[str]]:
    """kubectl argv lists (without the kubectl prefix) that fix ``node``'s labels and taints.

    ``node``: the Node object (``kubectl get node NAME -o json``); ``labels``: wanted labels;
    ``taints``: wanted taints as ``key[=value]:Effect``. Empty when nothing drifted.
    """
    meta = node.get("metadata") or {}
    have_labels = meta.get("labels") or {}
    have = {
        (t["key"], str(t.get("value") or ""), t["effect"]): _taint_str(t)
        for t in (node.get("spec") or {}).get("taints") or []
    }
    want = {_parse_taint(t): t for t in taints}
    cmds: list[list[str]] = []
    set_labels = [
        f"{k}={v}" for k, v in sorted(labels.items()) if str(have_labels.get(k)) != str(v)
        or k not in have_labels
    ]
    if set_labels:
        cmds.append(["label", "node", name, "--overwrite", *set_labels])
    add = [want[k] for k in sorted(want) if k not in have]
    remove = [
        f"{key}:{effect}-"
        for (key, value, effect) in sorted(have)
        if (key, value, effect) not in want and not key.startswith(SYSTEM_TAINT_PREFIXES)
    ]
    if add or remove:
        cmds.append(["taint", "node", name, "--overwrite", *add, *remove])
    return cmds


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        return {"k8s_node_drift": k8s_node_drift}
