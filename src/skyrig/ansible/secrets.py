"""Secrets the playbooks need and the inventory must never hold: the k3s cluster join token.

The token is generated once per stack (``secrets.token_hex``, 256 bits) and kept in
``<state_dir>/secrets/k3s.yml`` (directory 0700, file 0600, written atomically); every later run
reuses it, so a second ``site.yml`` run renders the same k3s configuration and changes nothing.
Playbook runs receive it as an extra-vars *file* (``-e @path``), so it appears neither in the
generated inventory nor in ansible-runner's ``env/extravars``; the k8s_node role declares
``k8s_node_token`` with ``no_log`` and renders it only into the 0600 ``config.yaml``.
(k3s documents the token as the shared secret for joining servers and agents:
https://docs.k3s.io/cli/token.)
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import yaml

from skyrig.errors import AnsibleRunError
from skyrig.fsutil import write_atomic

TOKEN_VAR = "k8s_node_token"
TOKEN_FILE = Path("secrets") / "k3s.yml"


def k3s_token_file(state_dir: Path) -> Path:
    """Path of the stack's k3s token vars file (``{k8s_node_token: <64 hex chars>}``), creating
    it with a new token on first use and reusing it afterwards.

    Raises :class:`~skyrig.errors.AnsibleRunError` when the file exists but is readable by
    others than its owner, or does not hold a token (the message names the file and the fix).
    """
    path = Path(state_dir) / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise AnsibleRunError(
                f"{path} has mode {mode:04o}: the k3s join token must be readable by its "
                "owner only",
                hint=f"chmod 600 {path}",
            )
        data = yaml.safe_load(path.read_text()) or {}
        token = data.get(TOKEN_VAR) if isinstance(data, dict) else None
        if not isinstance(token, str) or len(token) < 32:
            raise AnsibleRunError(
                f"{path} holds no usable {TOKEN_VAR} (a string of at least 32 characters)",
                hint=f"restore it from backup; deleting it makes a new token that the running "
                f"cluster will refuse ({path})",
            )
        return path
    write_atomic(path, yaml.safe_dump({TOKEN_VAR: secrets.token_hex(32)}), 0o600)
    return path
