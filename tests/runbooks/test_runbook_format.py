"""Runbook format and executor rules without infrastructure: bad input names file and line,
variables are single literal arguments, dry runs, prod confirmation, records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyrig.errors import SkyrigConfigError
from skyrig.runbooks.execute import RunbookAborted, execute, parse_vars, read_record, render_argv
from skyrig.runbooks.parse import find_runbook, parse_runbook
from support import edit_stack, stack

pytestmark = pytest.mark.unit

HEAD = """---
id: {id}
title: Test runbook
alerts: []
stacks: [local, prod]
preconditions: []
risk: low
vars: {{value: null}}
---
"""


def write(tmp: Path, body: str, rid: str = "t", head: str | None = None) -> Path:
    p = tmp / f"{rid}.md"
    p.write_text((head if head is not None else HEAD.format(id=rid)) + body)
    return p


def test_malformed_front_matter_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "x\n", head="---\nid: t\ntitle: [unclosed\nalerts: []\n---\n")
    with pytest.raises(SkyrigConfigError) as exc:
        parse_runbook(p)
    assert f"{p}:" in str(exc.value) and "not valid YAML" in str(exc.value)
    line = int(str(exc.value).split(f"{p}:")[1].split(":")[0])
    assert line in (3, 4, 5)  # the YAML error is at or just after the unclosed flow list

    p = write(tmp_path, "x\n", head="no front matter\n")
    with pytest.raises(SkyrigConfigError, match=rf"{p}:1: front matter"):
        parse_runbook(p)
    p = write(tmp_path, "x\n", head="---\nid: t\ntitle: T\nrisk: low\n---\n")
    with pytest.raises(SkyrigConfigError, match="missing keys: alerts, stacks, preconditions"):
        parse_runbook(p)
    p = write(tmp_path, "x\n", head=HEAD.format(id="t").replace("risk: low", "risk: wild"))
    with pytest.raises(SkyrigConfigError, match=rf"{p}:7: risk: risk 'wild'"):
        parse_runbook(p)
    p = write(tmp_path, "x\n", head=HEAD.format(id="other"))
    with pytest.raises(SkyrigConfigError, match=r"does not match the file name t\.md"):
        parse_runbook(p)


def test_unknown_step_kind_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "prose\n\n```bash frobnicate name=x\nskyrig doctor\n```\n")
    with pytest.raises(SkyrigConfigError) as exc:
        parse_runbook(p)
    assert f"{p}:12: step: unknown step kind 'frobnicate'" in str(exc.value)
    assert "run, check, rollback, manual" in str(exc.value)
    p = write(tmp_path, "```bash run\nskyrig doctor\n```\n")
    with pytest.raises(SkyrigConfigError, match=rf"{p}:10: .*without a valid name"):
        parse_runbook(p)
    p = write(tmp_path, "```bash run name=a\nskyrig doctor\nskyrig plan\n```\n")
    with pytest.raises(SkyrigConfigError, match="exactly one command"):
        parse_runbook(p)
    p = write(tmp_path, "```bash run name=a\nskyrig doctor\n```\n```bash check name=a\nx\n```\n")
    with pytest.raises(SkyrigConfigError, match="duplicate step name 'a'"):
        parse_runbook(p)


def test_plain_fences_are_prose_and_continuations_join(tmp_path: Path) -> None:
    p = write(tmp_path, "```bash\nrm -rf /\n```\n\n```bash check name=c\n# comment\n"
                        "skyrig vm status \\\n  --vmid {{ value }}\n```\n")
    book = parse_runbook(p)
    assert [s.name for s in book.steps] == ["c"]
    assert book.steps[0].text == "skyrig vm status --vmid {{ value }}"
    assert book.steps[0].readonly and book.steps[0].line == 14
    assert book.variables == ["value"]


def test_variables_are_single_literal_arguments() -> None:
    from skyrig.runbooks.parse import Step

    evil = '301; rm -rf ~ && echo "$(id)" `id` > /tmp/x'
    step = Step(name="s", kind="run", text='skyrig vm status --vmid {{ vmid }} --tag "a {{vmid}}"',
                line=1)
    argv = render_argv(step, {"vmid": evil})
    assert argv == ["skyrig", "vm", "status", "--vmid", evil, "--tag", f"a {evil}"]
    with pytest.raises(SkyrigConfigError, match=r"uses \{\{ node \}\}"):
        render_argv(Step(name="s", kind="run", text="skyrig x {{ node }}", line=3), {})
    assert parse_vars(["vmid=1;2", "label=a=b"]) == {"vmid": "1;2", "label": "a=b"}
    with pytest.raises(SkyrigConfigError, match="not NAME=VALUE"):
        parse_vars(["no-equals"])


def test_shell_metacharacters_reach_the_program_literally(tmp_path: Path, root: Path) -> None:
    sentinel = tmp_path / "pwned"
    p = write(tmp_path, "```bash run name=echo\nprintf %s {{ value }}\n```\n")
    evil = f"x; touch {sentinel}; $(touch {sentinel}) `touch {sentinel}` | cat"
    res = execute(parse_runbook(p), stack(root, "local"), variables={"value": evil}, yes=True)
    assert res.status == "succeeded", res
    assert not sentinel.exists()
    assert res.steps[0].output_tail == evil
    lines = read_record(res.record)
    assert lines[1]["command"] == ["printf", "%s", evil] and lines[1]["exit_code"] == 0
    assert lines[1]["who"]["user"] and lines[1]["who"]["host"]
    assert res.record.parent == stack(root, "local").state_dir / "runbooks"


def test_missing_variable_and_wrong_stack_fail_before_anything_runs(tmp_path: Path,
                                                                     root: Path) -> None:
    p = write(tmp_path, "```bash run name=echo\nprintf %s {{ value }}\n```\n")
    st = stack(root, "local")
    with pytest.raises(SkyrigConfigError, match="needs a value for: value"):
        execute(parse_runbook(p), st, yes=True)
    p2 = write(tmp_path, "```bash run name=echo\nprintf x\n```\n", rid="devonly",
               head=HEAD.format(id="devonly").replace("[local, prod]", "[dev]"))
    with pytest.raises(SkyrigConfigError, match="does not apply to stack local"):
        execute(parse_runbook(p2), st, variables={"value": "1"})
    assert not (st.state_dir / "runbooks").exists()


def test_dry_run_runs_only_read_only_checks(tmp_path: Path, root: Path) -> None:
    marker = tmp_path / "ran"
    p = write(tmp_path, f"```bash check name=reads\nprintf checked\n```\n"
                        f"```bash run name=writes\ntouch {marker}\n```\n"
                        f"```bash check name=writes_too readonly=false\ntouch {marker}\n```\n"
                        "```text manual name=m\nDo the thing.\n```\n")
    res = execute(parse_runbook(p), stack(root, "local"), variables={"value": "1"}, dry_run=True)
    assert res.status == "dry-run" and res.exit_code == 0
    assert [(s.step, s.status) for s in res.steps] == [
        ("reads", "ok"), ("writes", "dry-run"), ("writes_too", "dry-run"), ("m", "dry-run")]
    assert res.steps[1].command == ["touch", str(marker)]
    assert not marker.exists()


def test_prod_needs_confirmation_unless_yes(tmp_path: Path, root: Path) -> None:
    edit_stack(root, "local", "skyrig:environment: local", "skyrig:environment: prod")
    edit_stack(root, "local", "    user: skyrig", "    user: skyrig\n    ssh_keys: [ssh-ed25519"
               " AAAAC3NzaC1lZDI1NTE5AAAAIMk3r7cZ2QJmB5w1m6wJd0l5zS1f0yq8Jm3c9mQ0b8aX ops@lab]")
    p = write(tmp_path, "```bash run name=echo\nprintf ok\n```\n")
    st = stack(root, "local")
    asked: list[str] = []
    with pytest.raises(RunbookAborted, match="prod confirmation declined"):
        execute(parse_runbook(p), st, variables={"value": "1"},
                confirm=lambda q: asked.append(q) or False)
    assert "PROD" in asked[0]
    with pytest.raises(RunbookAborted, match="no terminal"):
        execute(parse_runbook(p), st, variables={"value": "1"})
    assert execute(parse_runbook(p), st, variables={"value": "1"}, yes=True).exit_code == 0


def test_find_runbook_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "```bash run name=echo\nprintf ok\n```\n", rid="known",
          head=HEAD.format(id="known"))
    with pytest.raises(SkyrigConfigError, match="known runbooks: known"):
        find_runbook(tmp_path, "nope")
    assert json.dumps(find_runbook(tmp_path, "known").alerts) == "[]"
