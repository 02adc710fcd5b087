"""The governance check as one markdown page a reviewer can read (and its JSON twin)."""

from __future__ import annotations

import json
from pathlib import Path

from skyrig.governance.check import CheckResult

ICON = {"satisfied": "✅ satisfied", "missing": "❌ missing", "failed": "❌ failed",
        "stale": "⚠️ stale"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(res: CheckResult) -> str:
    """Header (model, version, verdict), the table of subcategories, then what to do."""
    verdict = ("**PASS** – every required item is satisfied" if res.ok else
               f"**FAIL** – {len(res.blocking)} required item(s) not satisfied")
    out = [
        f"# AI RMF evidence: {res.model} version {res.version}",
        "",
        f"- stack: `{res.stack}`, alias `@{res.alias}` → version {res.version}"
        f" (MLflow run `{res.run_id}`)",
        f"- checked: {res.checked_at} against `{Path(res.catalogue).name}`"
        " (NIST AI RMF 1.0 Core subcategories)",
        f"- verdict: {verdict}",
        "",
        "| subcategory | intent | evidence expected | required | status | detail |",
        "|---|---|---|---|---|---|",
    ]
    for i in res.items:
        out.append(f"| {i.id} | {_cell(i.intent)} | `{_cell(i.expected)}` |"
                   f" {'yes' if i.required else 'no'} | {ICON.get(i.status, i.status)} |"
                   f" {_cell(i.detail)} |")
    if res.blocking:
        out += ["", "## What blocks this version", ""]
        out += [f"- **{i.id}** ({i.status}): {i.detail}. Expected: `{i.expected}`."
                for i in res.blocking]
        out += ["", "Release evidence is written by the workload at release time and logged"
                " under `release/` of the version's MLflow run; re-release the version with"
                " the evidence, or roll the alias back (`runbooks/model-rollback.md`)."]
    out += ["", "Statuses: *satisfied* – present and passing; *missing* – absent or empty;"
            " *failed* – present but says no; *stale* – written for another version, before"
            " this version existed, or older than the catalogue's maximum age.", ""]
    return "\n".join(out)


def write_report(res: CheckResult, directory: Path) -> tuple[Path, Path]:
    """``<dir>/<model>-v<version>.md`` and ``.json``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / f"{res.model}-v{res.version}"
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    md.write_text(render_markdown(res), encoding="utf-8")
    js.write_text(json.dumps(res.to_dict(), indent=2) + "\n", encoding="utf-8")
    return md, js
