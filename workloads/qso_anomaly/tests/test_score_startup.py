"""What a scoring process imports: every Ray scoring actor pays its imports once per job
(issue 15: Ray Data within 15 % of the plain loop), so modules only training or FITS reading
need stay out of the scorer's import chain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

#: imported only by training (scikit-learn: density fits) or by reading FITS files (astropy)
NOT_FOR_SCORING = ("sklearn", "astropy")


def test_the_scoring_modules_import_neither_scikit_learn_nor_astropy() -> None:
    code = ("import json, sys\n"
            "import qso_anomaly.score.shards, qso_anomaly.score.scorer, qso_anomaly.train\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "torch" in loaded  # the chain itself is real
    assert not loaded & set(NOT_FOR_SCORING), loaded & set(NOT_FOR_SCORING)


def test_templates_still_read_through_astropy_on_use() -> None:
    from qso_anomaly.data.templates import qso_basis, template_hashes

    assert len(template_hashes()) >= 3
    wave, basis = qso_basis("LOZ")
    assert basis.shape[0] == 4 and wave.shape[0] == basis.shape[1]
