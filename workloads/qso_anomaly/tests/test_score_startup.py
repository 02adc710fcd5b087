"""What a scoring process imports: every Ray scoring actor pays its imports once per job
(issue 15: Ray Data within 15 % of the plain loop), so modules only training or FITS reading
need stay out of the scorer's import chain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

@pytest.fixture(scope="module")
def tiny_model_dir(ci_grid, tmp_path_factory):  # type: ignore[no-untyped-def]
    from qso_test_support import TINY

    from qso_anomaly.data.synth import generate
    from qso_anomaly.train import fit

    tm = fit(TINY, ci_grid, generate(200, seed=1, grid=ci_grid), epochs=1, seed=0)
    return tm.save(tmp_path_factory.mktemp("startup") / "model")


#: imported only by training (scikit-learn: density fits), by reading FITS files (astropy), or
#: by the Scorer of the framework it runs (torch, jax)
NOT_AT_IMPORT = ("sklearn", "astropy", "torch", "jax")


def test_the_scoring_modules_import_no_framework_and_neither_scikit_learn_nor_astropy() -> None:
    code = ("import json, sys\n"
            "import qso_anomaly.score.shards, qso_anomaly.score.scorer, qso_anomaly.train\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"qso_anomaly", "pyarrow", "numpy"} <= loaded  # the chain itself is real
    assert not loaded & set(NOT_AT_IMPORT), loaded & set(NOT_AT_IMPORT)


def test_templates_still_read_through_astropy_on_use() -> None:
    from qso_anomaly.data.templates import qso_basis, template_hashes

    assert len(template_hashes()) >= 3
    wave, basis = qso_basis("LOZ")
    assert basis.shape[0] == 4 and wave.shape[0] == basis.shape[1]


def test_a_jax_scorer_loads_its_model_without_pytorch(tiny_model_dir) -> None:
    code = ("import json, sys\n"
            "from qso_anomaly.score.config import ScoringConfig\n"
            "from qso_anomaly.score.scorer import Scorer\n"
            "import qso_anomaly.score.shards\n"
            f"Scorer({str(tiny_model_dir)!r}, config=ScoringConfig(framework='jax'))\n"
            "print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


@pytest.mark.parametrize("entry", ["score_shards", "cli"])
def test_jax_scoring_of_a_model_directory_never_imports_pytorch(tiny_model_dir, tmp_path,
                                                                entry: str) -> None:
    """score_shards given a directory (the throughput benchmark's plain-loop child) and
    `qso-anomaly score --framework jax` loaded model.pt through PyTorch (1.0 s) while the Ray
    actors of the same run did not."""
    from qso_anomaly.data.synth import write_survey
    from qso_anomaly.train.trained import TrainedModel

    shards = write_survey(tmp_path / "s", 20, 1, grid=TrainedModel.load(tiny_model_dir).grid)
    run = {
        "score_shards": (
            "from qso_anomaly.score.config import ScoringConfig\n"
            "from qso_anomaly.score.shards import score_shards\n"
            f"s = score_shards({str(tiny_model_dir)!r}, {[str(p) for p in shards]!r},"
            f" {str(tmp_path / 'out')!r}, config=ScoringConfig(framework='jax'))\n"
            "assert s.n_scored == 20, s\n"),
        "cli": (
            "from qso_anomaly.cli import main\n"
            f"sys.argv = ['qso-anomaly', 'score', '--model', {str(tiny_model_dir)!r},"
            f" '--framework', 'jax', '--data', {str(tmp_path / 's')!r},"
            f" '--out', {str(tmp_path / 'out')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"),
    }[entry]
    code = f"import json, sys\n{run}print(json.dumps('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_numpy_weights_give_the_same_jax_params_and_scores(tiny_model_dir, tmp_path) -> None:
    import numpy as np

    from qso_anomaly.data.synth import generate
    from qso_anomaly.score.config import ScoringConfig
    from qso_anomaly.score.scorer import Scorer
    from qso_anomaly.train.trained import WEIGHTS_FILE, TrainedModel

    via_torch = TrainedModel.load(tiny_model_dir)
    via_numpy = TrainedModel.load(tiny_model_dir, torch_weights=False)
    assert all(isinstance(v, np.ndarray) for v in via_numpy.state_dict.values())
    a, b = via_torch.jax_params(), via_numpy.jax_params()
    import jax

    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a model saved before weights.npz existed loads through model.pt
    old = via_torch.save(tmp_path / "old")
    (old / WEIGHTS_FILE).unlink()
    c = TrainedModel.load(old, torch_weights=False).jax_params()
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(c), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    batch = generate(64, 5, via_torch.grid)
    cfg = ScoringConfig(framework="jax")
    s1 = Scorer(tiny_model_dir, config=cfg).score_batch(batch)
    s2 = Scorer(via_torch, config=cfg).score_batch(batch)
    np.testing.assert_array_equal(s1.score, s2.score)
    # a model loaded with NumPy weights saves a model.pt PyTorch loads
    again = TrainedModel.load(via_numpy.save(tmp_path / "again"))
    for k, v in via_torch.state_dict.items():
        np.testing.assert_array_equal(v.numpy(), again.state_dict[k].numpy())


def _scores(model_dir, framework, batch):  # type: ignore[no-untyped-def]
    from qso_anomaly.score.config import ScoringConfig
    from qso_anomaly.score.scorer import Scorer

    return Scorer(model_dir, config=ScoringConfig(framework=framework)).score_batch(batch).score


def test_weights_npz_that_is_not_model_pt_is_never_scored_with(tiny_model_dir, tmp_path) -> None:
    """model.pt is the model (PyTorch and MLflow load it); weights.npz only a copy for JAX. A
    weights.npz that is unreadable, or that is not the copy of this model.pt (model.pt replaced
    afterwards, or weights.npz copied from another model of the same architecture), must not
    score: the JAX scorer then loads model.pt, and scores as the PyTorch scorer does."""
    import shutil

    import numpy as np

    from qso_anomaly.data.synth import generate
    from qso_anomaly.train.trained import WEIGHTS_FILE, TrainedModel

    tm = TrainedModel.load(tiny_model_dir)
    other = TrainedModel.load(tiny_model_dir)
    other.state_dict = {k: v * 1.5 if v.is_floating_point() else v
                        for k, v in other.state_dict.items()}
    other_dir = other.save(tmp_path / "other")
    batch = generate(64, 5, tm.grid)
    want = _scores(tiny_model_dir, "torch", batch)
    assert not np.allclose(_scores(other_dir, "torch", batch), want, atol=1e-3)

    cases = {
        "weights.npz of another model": lambda d: shutil.copy(other_dir / WEIGHTS_FILE, d),
        "model.pt replaced afterwards": lambda d: shutil.copy(tiny_model_dir / "model.pt", d),
        "truncated weights.npz": lambda d: (d / WEIGHTS_FILE).write_bytes(
            (d / WEIGHTS_FILE).read_bytes()[:4000]),
        "empty weights.npz": lambda d: (d / WEIGHTS_FILE).write_bytes(b""),
    }
    for what, spoil in cases.items():
        d = shutil.copytree(other_dir if what.startswith("model.pt") else tiny_model_dir,
                            tmp_path / what.replace(" ", "-"))
        spoil(d)
        with pytest.warns(UserWarning, match="loading the weights from model.pt"):
            got = _scores(d, "jax", batch)
        np.testing.assert_allclose(got, want, atol=1e-3, err_msg=what)


def test_weights_of_another_architecture_are_a_model_error(tiny_model_dir, tmp_path) -> None:
    import shutil

    from qso_anomaly.errors import ModelError
    from qso_anomaly.train.trained import TrainedModel

    tm = TrainedModel.load(tiny_model_dir)
    bad = TrainedModel(spec=tm.spec, grid=tm.grid.downsample(2), state_dict=tm.state_dict,
                       density=tm.density)
    with pytest.raises(ModelError, match="do not fit the architecture"):
        bad.torch_model()
    # replacing a saved model keeps a whole model in place, and no .old or .tmp is left
    out = shutil.copytree(tiny_model_dir, tmp_path / "m")
    tm.save(out)
    assert TrainedModel.load(out).spec == tm.spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
