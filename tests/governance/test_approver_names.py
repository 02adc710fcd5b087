"""`skyrig model approve` takes a person's name: never empty, never an automated step's,
never with a control character (a line break would forge lines of the model card and of the
approvals record). Refused before any version is read (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrig.governance.registry import ApproverError, Registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    db: Path = tmp_path_factory.mktemp("approver") / "mlflow.db"
    db.touch()  # an empty store: no version is ever read, the name is refused first
    return Registry(f"sqlite:///{db}", "qso-ae-torch")


@pytest.mark.parametrize("name", ["", "   ", "release-gates", "Automatic ", "RELEASE-GATES",
                                  "Eve\nrelease-gates", "Dr.\tA. Reviewer", "Bob\x00"])
def test_no_person_is_refused_with_exit_2(reg: Registry, name: str) -> None:
    with pytest.raises(ApproverError) as err:
        reg.approve("1", name)
    assert err.value.exit_code == 2 and repr(name) in str(err.value)
