"""`skyrig validate` refuses unsafe or impossible settings and plain-text secrets (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrig.config.model import pulumi_ciphertext_problem
from skyrig.errors import SkyrigConfigError
from support import edit_stack, make_root, stack

pytestmark = pytest.mark.unit

GOOD_SECURE = "v1:AAECAwQFBgcICQoL:3q2+796tvu/erb7v3q2+7w=="  # 12-byte nonce, 16-byte body


def _refused(tmp_path: Path, old: str, new: str, fragment: str, name: str = "local") -> str:
    root = make_root(tmp_path)
    edit_stack(root, name, old, new)
    with pytest.raises(SkyrigConfigError) as exc:
        stack(root, name)
    assert exc.value.exit_code == 2
    text = str(exc.value)
    assert fragment in text, text
    return text


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("    dashboard_host: 127.0.0.1", "    dashboard_host: 0.0.0.0",
     "skyrig:ray.dashboard_host: the Ray dashboard/Jobs API would listen on 0.0.0.0"),
    ("    dashboard_host: 127.0.0.1",
     "    dashboard_host: 0.0.0.0\n    auth_mode: token", "skyrig:ray.dashboard_exposed"),
    ("      tags: [gpu, ray]", "      tags: [gpu, \"ray team\"]",
     "skyrig:vm_classes.gpu-worker.tags[1]"),
    ("      tags: [gpu, ray]", "      tags: [gpu, -ray]", "tags[1]"),
    ("      tags: [gpu, ray]", "      tags: [gpu, \"a;b\"]", "tags[1]"),
    ("    task_timeout_s: 60", "    task_timeout_s: .inf", "skyrig:proxmox.task_timeout_s"),
    ("    task_timeout_s: 60", "    task_timeout_s: .nan", "skyrig:proxmox.task_timeout_s"),
    ("    parallelism: 2", "    parallelism: true",
     "skyrig:proxmox.parallelism: Input should be a valid integer (got True)"),
    ("      vmid: 301", "      vmid: 301.0",
     "skyrig:vms[0].vmid: Input should be a valid integer (got 301.0)"),
    ("      cores: 4", "      cores: \"4\"", "skyrig:vm_classes.gpu-worker.cores"),
    ("      ip: 127.0.10.31", "      ip: 2130709535", "skyrig:vms[0].ip"),
    ("    pvesim_hardware: local", "    pvesim_hardware: profiles/nope.yaml",
     "skyrig:proxmox.pvesim_hardware: hardware profile"),
    ("    pvesim_hardware: local", "    pvesim_hardware: stacks/Pulumi.dev.yaml",
     "is not a pvesim hardware profile"),
])
def test_unsafe_or_impossible_settings(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    _refused(tmp_path, old, new, fragment)


def test_exposed_dashboard_with_auth_and_ack_is_accepted(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "local", "    dashboard_host: 127.0.0.1",
               "    dashboard_host: 0.0.0.0\n    auth_mode: token\n    dashboard_exposed: true")
    assert stack(root, "local").config.ray.dashboard_host == "0.0.0.0"


def test_pve_tag_rule_matches_pvesim(tmp_path: Path) -> None:
    """The vendored rule agrees with the one pvesim applies for the schema's pve-tag-list."""
    import re

    from pvesim import formats
    from skyrig.config.model import PVE_TAG_RE
    for tag in ["gpu", "ray", "a.b", "x+y", "_t", "-bad", "a b", "a;b", "ümlaut", "", "A-1"]:
        assert bool(re.match(PVE_TAG_RE, tag)) == bool(formats._TAG.match(tag)), tag


# ------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize(("old", "new", "fragment"), [
    ("config:\n", "config:\n  proxmox:password: hunter2\n",
     "proxmox:password: plain-text secret"),
    ("config:\n", "config:\n  proxmoxve:apiToken: root@pam!t=abc\n",
     "proxmoxve:apiToken: plain-text secret"),
    ("config:\n", "config:\n  aws:secretKey: abc\n", "aws:secretKey: plain-text secret"),
    ("config:\n", "config:\n  mlflow:db: {uri: \"postgresql://u:pw@db/x\"}\n",
     "mlflow:db.uri: a URI with credentials"),
    ("    n_spectra: 1500",
     "    n_spectra: 1500\n    tracking_uri: https://alice:s3cret@mlflow.example/",
     "skyrig:workload.tracking_uri: a URI with credentials"),
    ("      env: SKYRIG_PROXMOX_TOKEN_SECRET", "      secure: hunter2",
     "`secure:` is not Pulumi ciphertext"),
    ("      env: SKYRIG_PROXMOX_TOKEN_SECRET", "      secure: v1:bm90:YmFzZTY0",
     "12-byte nonce"),
    ("      env: SKYRIG_PROXMOX_TOKEN_SECRET", "      secure: v1:!!:??", "base64"),
])
def test_secrets_refused(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    text = _refused(tmp_path, old, new, fragment)
    for secret in ("hunter2", "s3cret", ":pw@"):
        if secret in new and "secure" not in new:
            assert secret not in text  # the error names the key, never echoes the secret


def test_real_ciphertext_form_accepted(tmp_path: Path) -> None:
    assert pulumi_ciphertext_problem(GOOD_SECURE) is None
    root = make_root(tmp_path)
    edit_stack(root, "local", "      env: SKYRIG_PROXMOX_TOKEN_SECRET",
               f"      secure: {GOOD_SECURE}")
    assert stack(root, "local").config.proxmox.token_secret.secure == GOOD_SECURE


def test_foreign_secure_values_accepted(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    edit_stack(root, "local", "config:\n",
               f"config:\n  proxmox:password:\n    secure: {GOOD_SECURE}\n")
    stack(root, "local")
