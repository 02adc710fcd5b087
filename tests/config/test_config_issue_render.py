"""How one configuration problem reads (skyrig.errors.ConfigIssue.render)."""

from __future__ import annotations

import pytest

from skyrig.errors import ConfigIssue, SkyrigConfigError

pytestmark = pytest.mark.unit


def test_an_issue_names_file_line_key_and_fix() -> None:
    issue = ConfigIssue("stacks/Pulumi.dev.yaml", 12, "skyrig:proxmox.endpoint", "not a URL",
                        hint="use https://HOST:8006")
    assert issue.render() == ("stacks/Pulumi.dev.yaml:12: skyrig:proxmox.endpoint: not a URL"
                              "\n    fix: use https://HOST:8006")


def test_an_issue_without_a_key_or_line_has_no_empty_fields() -> None:
    err = SkyrigConfigError("stack dev: proxmox token is not set")
    assert "  <config>: stack dev: proxmox token is not set" in str(err)
    assert ": :" not in str(err)
