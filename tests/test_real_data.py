"""End-to-end tests of simulations/real_data.py and the protocol in sdtheory.experiments on tiny subsets.

The numbers the script reports are checked against independent computations:
the exact teacher and PLL student by SciPy's L-BFGS on the primal objective,
the closed form and the fitted block model by a direct linear solve,
accuracies with NumPy.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from _scripts import load_script, read_csv

import sdtheory as sd
from sdtheory import data as D
from sdtheory import experiments as E
from sdtheory import io as sio

ROOT = Path(__file__).resolve().parents[1]
real_data = load_script("real_data")

QUICK = [
    "--quick",
    "--feature-maps",
    "standardized",
    "--kinds",
    "symmetric",
    "--rates",
    "0.0",
    "0.6",
    "--seeds",
    "1",
    "--num-rounds",
    "3",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rd")
    res = real_data.main(QUICK + ["--out", str(out)])
    return out, res


def test_end_to_end_files_and_rows(quick_run):
    out, res = quick_run
    for name in (
        "real_data.csv",
        "real_data.csv.meta.json",
        "summary.md",
        "real_data.json",
        "accuracy_standardized.png",
        "accuracy_standardized.pdf",
        "diversity_standardized.png",
        "spectrum.png",
        "manifest.json",
    ):
        assert (out / name).is_file(), name
    assert set(sio.verify_manifest(out)["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    rows = read_csv(out / "real_data.csv")
    # per cell: exact SD r0..2 (3) + PLL CE/GCE (2) + closed form r0..2 (3) + CF PLL (1) + block r0..2 (3)
    # + block-R closed form and exact r0..2 (3 + 3)
    assert len(rows) == 2 * 18
    assert {r["rate"] for r in rows} == {"0.0", "0.6"}
    exact = [r for r in rows if r["solver"] == "exact"]
    assert all(r["converged"] == "true" for r in exact)
    assert max(float(r["residual"]) for r in exact) <= 1e-9
    for r in rows:
        # overall accuracy is the count-weighted mean of the clean / corrupted accuracies
        rate = float(r["realised_rate"])
        if rate == 0:  # no corrupted instance: that group's accuracy is undefined (NaN), not 1
            assert r["train_acc_corrupted"] == "nan"
            assert abs(float(r["train_acc"]) - float(r["train_acc_clean"])) < 1e-12
            continue
        want = (1 - rate) * float(r["train_acc_clean"]) + rate * float(r["train_acc_corrupted"])
        assert abs(float(r["train_acc"]) - want) < 1e-12
        if r["solver"] == "exact":
            assert 1 / 10 <= float(r["confidence"]) <= 1 and 0 <= float(r["diversity"]) <= 1
    clean = [r for r in rows if r["rate"] == "0.0"]
    assert all(float(r["realised_rate"]) == 0.0 for r in clean)
    meta = json.loads((out / "real_data.json").read_text())
    assert meta["metadata"]["parameters"]["quick"] is True
    assert "git_revision" in meta["metadata"] and "package_version" in meta["metadata"]
    fmeta = meta["feature_maps"]["standardized"]
    n = 200
    # the default lam rule: K N lam = 1 - c
    assert abs(fmeta["lam"] * 10 * n - (1 - fmeta["c"])) < 1e-12
    md = (out / "summary.md").read_text()
    assert "| symmetric | 0.6 |" in md


def test_same_seed_same_results_and_seed_matters(quick_run, tmp_path):
    out, _ = quick_run
    real_data.main(QUICK + ["--out", str(tmp_path / "a"), "--no-figures"])
    assert (tmp_path / "a" / "real_data.csv").read_bytes() == (out / "real_data.csv").read_bytes()
    real_data.main(QUICK + ["--out", str(tmp_path / "b"), "--no-figures", "--seed", "1"])
    assert (tmp_path / "b" / "real_data.csv").read_bytes() != (out / "real_data.csv").read_bytes()


# --------------------------------------------------------------------------
# run_cell against independent solvers
# --------------------------------------------------------------------------


def _primal_softmax(x, t, lam, loss="ce", q=0.7):
    """Minimise (1/N) sum loss + lam/2 ||W||^2 with SciPy L-BFGS; return W (d, K)."""
    from scipy.optimize import minimize

    n, d = x.shape
    k = t.shape[1]

    def f(w):
        w = w.reshape(d, k)
        z = x @ w
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        if loss == "ce":
            val = -np.sum(t * np.log(p)) / n
            gz = (p - t) / n
        else:  # GCE on each candidate: sum_l t_l (1 - p_l^q)/q
            val = np.sum(t * (1 - p**q) / q) / n
            dp = -t * p ** (q - 1) / n  # d val / d p
            gz = p * (dp - np.sum(dp * p, 1, keepdims=True))
        val += lam / 2 * np.sum(w**2)
        g = x.T @ gz + lam * w
        return val, g.ravel()

    r = minimize(
        f, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000}
    )
    return r.x.reshape(d, k)


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def _quick_data():
    """The digits subset of ``--quick`` (same shapes as the quick run: compiled code is reused)."""
    ds = real_data.load_dataset(real_data.parse_args(QUICK))
    x, xt = D.make_features("standardized", ds.features, ds.test_features)
    return ds, x, xt


def test_run_cell_against_independent_solvers():
    rng = np.random.default_rng(0)
    ds, x, xt = _quick_data()
    k, n = 10, x.shape[0]
    true, test_true = ds.labels, ds.test_labels
    given = true.copy()
    flip = rng.choice(n, 80, replace=False)
    given[flip] = (true[flip] + 1 + rng.integers(0, k - 1, 80)) % k
    bst = D.block_statistics(x, true, k)
    lam = E.lam_rule(bst.c, n, k)
    fm = E.prepare_feature_map(x, xt, true, k)
    assert fm.lam == lam  # the default lam is the block rule
    rows = E.run_cell(fm, given, test_true, num_rounds=3, q=0.7)
    get = {(r["solver"], r["method"], r["round"]): r for r in rows}
    clean = given == true

    def check(row, p_train, p_test):
        pred = p_train.argmax(1)
        assert row["train_acc"] == pytest.approx(np.mean(pred == true), abs=1e-12)
        assert row["train_acc_clean"] == pytest.approx(np.mean(pred[clean] == true[clean]), abs=1e-12)
        assert row["train_acc_corrupted"] == pytest.approx(np.mean(pred[~clean] == true[~clean]), abs=1e-12)
        if p_test is not None:
            assert row["test_acc"] == pytest.approx(np.mean(p_test.argmax(1) == test_true), abs=1e-12)

    # exact SD chain by primal L-BFGS
    t = np.eye(k)[given]
    teacher = None
    ex_pred = []
    for r in range(3):
        w = _primal_softmax(x, t, lam)
        p, pt = _softmax(x @ w), _softmax(xt @ w)
        ex_pred.append(p.argmax(1))
        if r == 0:
            teacher = p
        row = get[("exact", "sd", r)]
        check(row, p, pt)
        assert row["confidence"] == pytest.approx(np.mean(p.max(1)), abs=1e-6)
        t = p
    # the closed form's agreement with the exact argmax, round by round, recomputed independently
    g = x @ x.T
    tc = np.eye(k)[given] - 1 / k
    for r in range(3):
        tc = g @ np.linalg.solve(g + k * n * lam * np.eye(n), tc)
        assert get[("closed_form", "sd", r)]["agree_exact"] == pytest.approx(
            np.mean(tc.argmax(1) == ex_pred[r]), abs=1e-12
        )
    # PLL students from the teacher's top-2
    top2 = np.argsort(-teacher, axis=1)[:, :2]
    t2 = np.zeros((n, k))
    np.put_along_axis(t2, top2, 0.5, axis=1)
    for loss in ("ce", "gce"):
        w = _primal_softmax(x, t2, lam, loss=loss)
        check(get[("exact", f"pll_{loss}", 1)], _softmax(x @ w), _softmax(xt @ w))
    # closed form by a direct solve: P - 1/K = G (G + K N lam)^{-1} (T - 1/K)
    g = x @ x.T
    gt = xt @ x.T
    t = np.eye(k)[given] - 1 / k
    cf_teacher = None
    for r in range(3):
        coef = np.linalg.solve(g + k * n * lam * np.eye(n), t)
        check(get[("closed_form", "sd", r)], 1 / k + g @ coef, 1 / k + gt @ coef)
        if r == 0:
            cf_teacher = 1 / k + g @ coef
        t = g @ coef
    # closed-form PLL student: top 2 of the closed-form teacher, one direct solve
    top2 = np.argsort(-cf_teacher, axis=1, kind="stable")[:, :2]
    t2 = np.zeros((n, k))
    np.put_along_axis(t2, top2, 0.5, axis=1)
    coef = np.linalg.solve(g + k * n * lam * np.eye(n), t2 - 1 / k)
    check(get[("closed_form", "pll_ce", 1)], 1 / k + g @ coef, 1 / k + gt @ coef)
    # fitted block model: the block Gram with the measured c, d (blocks = true classes), direct solve
    gb = np.where(true[:, None] == true[None, :], bst.c, bst.d)
    np.fill_diagonal(gb, 1.0)
    t = np.eye(k)[given] - 1 / k
    for r in range(3):
        t = gb @ np.linalg.solve(gb + k * n * lam * np.eye(n), t)
        row = get[("block", "sd", r)]
        check(row, 1 / k + t, None)
        assert np.isnan(row["test_acc"])
        assert row["agree_exact"] == pytest.approx(np.mean(t.argmax(1) == ex_pred[r]), abs=1e-12)
    # block model with the fitted class-correlation matrix R: its Gram R[k_i, k_j], unit diagonal; direct
    # solve (linearised) and the N-instance exact solver on that Gram
    gr = bst.class_means[true][:, true]
    np.fill_diagonal(gr, 1.0)
    t = np.eye(k)[given] - 1 / k
    ex_r = sd.exact_outputs(np.eye(k)[given], lam=lam, num_rounds=3, gram=gr).outputs
    for r in range(3):
        t = gr @ np.linalg.solve(gr + k * n * lam * np.eye(n), t)
        check(get[("block_corr", "sd", r)], 1 / k + t, None)
        check(get[("block_corr_exact", "sd", r)], np.asarray(ex_r[r]), None)


def test_lam_rule_halves_own_label_in_block_model():
    k, n_per, c, dd = 4, 30, 0.5, 0.1
    classes = sd.block_classes([n_per] * k)
    x = np.asarray(sd.sample_block_features(jax.random.key(0), classes, c=c, d=dd, dim=400))
    bst = D.block_statistics(x, classes, k)
    # sampled features have the block Gram exactly in expectation; check the fit is close
    assert abs(bst.c - c) < 0.08 and abs(bst.d - dd) < 0.08
    lam = E.lam_rule(c, k * n_per, k)
    a, b, _ = sd.block.block_factors(per_class=n_per, num_classes=k, c=c, d=dd, lam=lam)
    assert a == pytest.approx(0.5, rel=1e-12)
    assert b > 0.95
    with pytest.raises(ValueError, match="c = 1.0"):
        E.lam_rule(1.0, 10, 2)


def test_user_features_file_and_bad_file(tmp_path):
    ds, _, _ = _quick_data()
    p = sio.save_features(
        tmp_path / "emb.npz", ds.features, ds.labels, test_features=ds.test_features, test_labels=ds.test_labels
    )
    res = real_data.main(
        [
            "--features",
            str(p),
            "--feature-maps",
            "standardized",
            "--kinds",
            "symmetric",
            "--rates",
            "0.3",
            "--seeds",
            "1",
            "--num-rounds",
            "3",
            "--out",
            str(tmp_path / "o"),
            "--no-figures",
        ]
    )
    rows = res["rows"]
    assert {r["feature_map"] for r in rows} == {"standardized"}
    assert all(r["converged"] for r in rows)
    assert res["summary"]["dataset"].startswith("emb, N = 200 train / 80 held-out")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "nope.npz: file not found"),
        ("truncated", "bad.npz: not a readable .npz archive"),
        ("wrong_keys", "bad.npz: missing array 'features'"),
        ("float_labels", "bad.npz: labels must have an integer dtype"),
        ("short_labels", "bad.npz: labels has 199 entries but features has 200 rows"),
        ("huge_header", "bad.npz: member 'features.npy': the header declares shape (100000000000, 4)"),
    ],
)
def test_bad_features_file_is_a_clean_error(tmp_path, capsys, problem, message):
    """Every problem with --features: the loader's message after the flag's name, exit status 2, no traceback."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 5)), np.arange(200) % 4
    bad = tmp_path / "bad.npz"
    if problem == "missing":
        bad = tmp_path / "nope.npz"
    elif problem == "truncated":
        np.savez(bad, features=x, labels=y)
        bad.write_bytes(bad.read_bytes()[:500])
    elif problem == "wrong_keys":
        np.savez(bad, feats=x, labels=y)
    elif problem == "float_labels":
        np.savez(bad, features=x, labels=y.astype(float))
    elif problem == "huge_header":  # a 220-byte file declaring 3.2 TB: was an uncaught MemoryError
        import io
        import zipfile

        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**11, 4)})
        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("features.npy", head.getvalue() + b"\0" * 32)
        assert bad.stat().st_size < 400
    else:
        np.savez(bad, features=x, labels=y[:-1])
    with pytest.raises(SystemExit) as e:
        real_data.main(["--features", str(bad), "--out", str(tmp_path / "o2")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "real_data.py: error: argument --features: " in err and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o2").exists()


def test_data_a_feature_map_cannot_use_is_a_one_line_error(tmp_path, capsys):
    """Features without class structure: the fitted block model leaves its domain in the feature-map step."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 5)), np.arange(200) % 4
    path = tmp_path / "noise.npz"
    np.savez(path, features=x, labels=y)
    argv = ["--features", str(path), "--feature-maps", "standardized", "--kinds", "symmetric", "--rates", "0.3"]
    with pytest.raises(SystemExit) as e:
        real_data.main([*argv, "--seeds", "1", "--num-rounds", "2", "--no-figures", "--out", str(tmp_path / "o")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("real_data.py: error: feature_maps[0] = 'standardized' cannot be used on noise: "), err
    assert "outside its domain" in lines[-1] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.npz"]


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as e:
        real_data.main(["--help"])
    assert e.value.code == 0
    assert "--features" in capsys.readouterr().out
    for bad in (
        ["--rates", "1.5"],
        ["--rates", "nan"],
        ["--q", "0"],
        ["--q", "nan"],
        ["--lam", "-1"],
        ["--lam", "inf"],
        ["--num-rounds", "1"],
        ["--relu-dim", "0"],
        ["--seeds", "0"],
        ["--test-fraction", "1"],
        ["--test-fraction", "0"],
        ["--test-fraction", "1.5"],
        ["--test-fraction", "nan"],
        ["--seed", "-1"],
        ["--seed", "x"],
        ["--kinds", "uniform"],
    ):
        with pytest.raises(SystemExit) as e:
            real_data.main(bad)
        assert e.value.code == 2
        assert f"argument {bad[0]}" in capsys.readouterr().err  # the error names the flag
    # --rounds (rounds 0..R) was replaced by --num-rounds (rounds 0..R-1)
    with pytest.raises(SystemExit):
        real_data.main(["--rounds", "4"])
    assert real_data.parse_args([]).num_rounds == 5  # the default run still covers rounds 0..4


def test_tie_with_true_class_is_incorrect():
    """The real-data scoring uses the package's one rule: a tie between the true class and another fails."""
    row = E.score_rounds(
        [[[0.5, 0.5, 0.0]]], [0], [0], test_outputs=[[[0.5, 0.5, 0.0]]], test_labels=[0], probabilities=True
    )[0]
    assert row["train_acc"] == 0.0 and row["train_acc_clean"] == 0.0 and row["test_acc"] == 0.0
    assert np.isnan(row["train_acc_corrupted"])  # no corrupted instance: NaN, not a vacuous 1
    # a margin above TIE_TOL is correct (here the given label 1 was corrupted)
    row = E.score_rounds([[[0.5 + 1e-6, 0.5 - 1e-6, 0.0]]], [0], [1])[0]
    assert row["train_acc"] == 1.0 and row["train_acc_corrupted"] == 1.0 and np.isnan(row["train_acc_clean"])


# --------------------------------------------------------------------------
# --out checked first; outputs as one unit; Ctrl-C; --resume; no paths or timings in the files
# --------------------------------------------------------------------------


def test_out_that_is_a_file_is_an_error_before_loading(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the data were loaded before --out was checked")

    monkeypatch.setattr(real_data, "load_dataset", boom)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit) as e:
            real_data.main(QUICK + ["--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out: " in err and "Traceback" not in err, err


def _interrupt_after(monkeypatch, cells, calls=None):
    """Progress callbacks that count calls and raise KeyboardInterrupt (as Ctrl-C would) once ``cells`` are done."""

    def printer(prefix, stream=None):
        def report(done, total, seconds):
            if calls is not None:
                calls.append(done)
            if cells is not None and done >= cells:
                raise KeyboardInterrupt

        return report

    monkeypatch.setattr(real_data.sio, "progress_printer", printer)


def test_interrupted_run_resumes_to_the_same_files(quick_run, tmp_path, monkeypatch, capsys):
    """Interrupt after 1 of 2 cells, resume: every file equals the uninterrupted run's (written to another path)."""
    ref, _ = quick_run
    out = tmp_path / "out"
    _interrupt_after(monkeypatch, cells=1)
    with pytest.raises(KeyboardInterrupt, match="was not changed; 1 finished cell.s. are kept in .*--resume"):
        real_data.main(QUICK + ["--out", str(out)])
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.work"]
    assert (tmp_path / "out.work" / "real_data.checkpoint.npz").is_file()

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # other parameters: refused, naming what differs
        real_data.main(QUICK + ["--resume", "--q", "0.5", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume: the checkpoint" in err and "parameters.q: 0.7 in the checkpoint, 0.5 now" in err, err

    calls = []
    _interrupt_after(monkeypatch, cells=None, calls=calls)
    real_data.main(QUICK + ["--resume", "--out", str(out)])
    assert calls == [1, 2]  # the start report counts the kept cell; then only the missing cell ran
    manifest = sio.verify_manifest(out)
    assert set(manifest["files"]) == {p.name for p in ref.iterdir()} - {"manifest.json"}
    for name in manifest["files"]:
        if name != "real_data.json":
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
            assert str(out).encode() not in (out / name).read_bytes(), name  # no output path in any file
    a, b = (json.loads((d / "real_data.json").read_text()) for d in (out, ref))
    assert a.pop("timing")["resumed_cells"] == 1 and set(b.pop("timing")) >= {"total_seconds"}
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the work area is gone


# --------------------------------------------------------------------------
# The SelfPLL preset
# --------------------------------------------------------------------------


def test_selfpll_preset_resolves_its_parameters(capsys):
    a = real_data.parse_args(["--preset", "selfpll", "--weight-decay", "5e-5"])
    # raw features (no centring, no unit norm), lam = weight decay, teacher-started PLL, SD steps 1..5
    assert (a.no_center, a.normalize, a.lam, a.weight_decay) == (True, False, 5e-5, 5e-5)
    assert (a.pll_init, a.solver, a.table, a.feature_maps) == ("teacher", "auto", "selfpll", ["identity"])
    assert (a.num_rounds, a.q) == (5, 0.7)
    assert real_data.parse_args(["--preset", "selfpll"]).lam == 5e-4  # SelfPLL's default weight decay
    d = real_data.parse_args([])  # the package's own protocol is unchanged
    assert (d.preset, d.no_center, d.normalize, d.lam, d.weight_decay) == ("package", False, True, None, None)
    assert (d.pll_init, d.solver, d.table) == ("teacher", "auto", "package")
    assert real_data.parse_args(["--pll-init", "zero"]).pll_init == "zero"
    for bad, flag in (
        (["--preset", "selfpll", "--lam", "1e-3"], "--lam"),
        (["--preset", "selfpll", "--pll-init", "zero"], "--pll-init"),
        (["--weight-decay", "1e-4"], "--weight-decay"),
        (["--preset", "selfpll", "--weight-decay", "0"], "--weight-decay"),
        (["--preset", "selfpll", "--weight-decay", "nan"], "--weight-decay"),
        (["--preset", "paper"], "--preset"),
        (["--pll-init", "warm"], "--pll-init"),
    ):
        with pytest.raises(SystemExit) as e:
            real_data.parse_args(bad)
        assert e.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err


def test_selfpll_preset_tiny_run_writes_its_table(tmp_path):
    wd = 5e-4
    argv = ["--preset", "selfpll", "--weight-decay", str(wd), "--quick", "--kinds", "symmetric"]
    argv += ["--rates", "0.0", "0.6", "--seeds", "2", "--num-rounds", "3", "--no-figures", "--out", str(tmp_path)]
    real_data.main(argv)
    rows = read_csv(tmp_path / "real_data.csv")
    assert {r["solver"] for r in rows} == {"exact", "closed_form"}  # raw features: no fitted block model
    assert all(float(r["lam"]) == wd and r["converged"].lower() == "true" for r in rows if r["solver"] == "exact")
    lines = (tmp_path / "selfpll_table.md").read_text().splitlines()
    head = lines.index("| Distillation Step | 0 | 0.6 |")
    assert lines[head - 2] == "## `identity`, symmetric noise"
    table = [ln.strip("|").split("|") for ln in lines[head + 2 : head + 6]]
    assert [r[0].strip() for r in table] == ["1 (Teacher)", "2", "3", "PLL"]  # SelfPLL step t = our round t - 1
    for (label, *cells), (method, rnd) in zip(table, [("sd", 0), ("sd", 1), ("sd", 2), ("pll_gce", 1)], strict=True):
        for cell, rate in zip(cells, (0.0, 0.6), strict=True):
            acc = [
                float(r["test_acc"])
                for r in rows
                if (r["solver"], r["method"], int(r["round"]), float(r["rate"])) == ("exact", method, rnd, rate)
            ]
            assert len(acc) == 2
            assert cell.strip() == f"{100 * np.mean(acc):.2f}±{100 * np.std(acc):.2f}", (label, rate)
    # the teacher on raw features at eta = 0 (given = true labels) against SciPy on the primal objective
    args = real_data.parse_args(argv)
    ds = real_data.load_dataset(args)
    w = _primal_softmax(np.asarray(ds.features, float), np.eye(10)[ds.labels], wd)
    expected = np.mean(_softmax(np.asarray(ds.test_features, float) @ w).argmax(1) == ds.test_labels)
    key = ("exact", "sd", "0", 0.0)
    (teacher,) = {r["test_acc"] for r in rows if (r["solver"], r["method"], r["round"], float(r["rate"])) == key}
    assert float(teacher) == pytest.approx(expected, abs=1e-12)


def test_protocol_reports_progress_before_the_first_compiling_cell(monkeypatch):
    """A (0, total) progress call precedes the first cell (which compiles the solvers); then one per cell."""
    ds = real_data.load_dataset(real_data.parse_args(QUICK))
    monkeypatch.setattr(E, "run_cell", lambda *args, **kwargs: [])  # the order of the calls, not the cells' work
    events = []
    E.run_protocol(
        ds,
        feature_maps=["standardized"],
        kinds=["symmetric"],
        rates=[0.0, 0.6],
        num_seeds=1,
        num_rounds=3,
        progress=lambda done, total, seconds: events.append(("progress", done, total)),
        on_cell=lambda cell, rows: events.append(("cell", cell[2])),
    )
    assert events == [("progress", 0, 2), ("cell", 0.0), ("progress", 1, 2), ("cell", 0.6), ("progress", 2, 2)]


# --------------------------------------------------------------------------
# Labels that are already noisy: --noisy-labels and the noisy-label lam rule
# --------------------------------------------------------------------------


def _direct_c(x, y, k):
    """The clean-label rule's c, directly: the mean over classes of the mean <x_i, x_j> over same-class i != j."""
    g = x @ x.T
    means = []
    for a in range(k):
        idx = np.flatnonzero(y == a)
        block = g[np.ix_(idx, idx)]
        means.append((block.sum() - np.trace(block)) / (idx.size * (idx.size - 1)))
    return float(np.mean(means))


@pytest.mark.parametrize("fmap", ["standardized", "relu"])
def test_noisy_label_c_recovers_the_clean_label_rule_on_digits(fmap):
    """On the digits with 30-50% symmetric noise, the corrected c gives the clean-label rule's lam within 15%.

    Tolerance: the estimate takes an instance's 3 nearest neighbours to share its clean class; on these
    features about 95% do, which biases rho^2 low by (0.95 - 1/K) / (1 - 1/K) and c up by about 0.02; the
    labels of N = 1347 instances scatter c with a std of 0.01 (eta = 0.3) to 0.02 (eta = 0.5). Over 60 seeds
    per rate and map the largest error in c was 0.078 and in lam 12%; hence |c_hat - c| <= 0.09 (the bias
    plus 3.3 std) and lam within 15% (1 - c is about 0.63). The uncorrected rule (c fitted with the noisy
    labels) gives a lam 26-60% too large at these rates, so the check tells the two apart. With the noise
    rate known only the scatter remains.
    """
    ds = D.load_digits(key=E.split_key(0))
    k, n = 10, ds.labels.size
    x, _ = D.make_features(fmap, ds.features, ds.test_features, key=jax.random.key(3), num_features=256)
    c_clean = _direct_c(x, ds.labels, k)
    lam_clean = (1 - c_clean) / (k * n)
    for i, eta in enumerate((0.3, 0.4, 0.5)):
        for s in range(2):
            noisy = np.asarray(
                sd.sample_labels(jax.random.key(10 * i + s), ds.labels, sd.corruption_matrix("symmetric", k, eta))
            )
            realised = np.mean(noisy != ds.labels)
            c_hat, eta_hat = E.noisy_label_c(x, noisy, k)
            assert abs(c_hat - c_clean) <= 0.09 and abs(eta_hat - realised) <= 0.05, (eta, s, c_hat, eta_hat)
            assert abs(E.lam_rule(c_hat, n, k) / lam_clean - 1) <= 0.15
            assert E.lam_rule(_direct_c(x, noisy, k), n, k) / lam_clean - 1 > 0.2  # uncorrected: far off
            c_known, eta_used = E.noisy_label_c(x, noisy, k, noise_rate=realised)  # the rate known: no NN bias
            assert eta_used == realised and abs(c_known - c_clean) <= 0.05
    assert E.noisy_label_c(x, ds.labels, k, noise_rate=0.0)[0] == pytest.approx(c_clean, abs=1e-12)


def test_noisy_label_c_refuses_labels_without_class_signal():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6))
    x = np.concatenate([x, x + 1e-3 * rng.standard_normal(x.shape)])  # each row's nearest neighbour: its twin
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.concatenate([np.arange(20) % 4, (np.arange(20) + 1) % 4])  # ... which never shares its label
    with pytest.raises(
        ValueError, match="labels: the 3 nearest neighbours .features. share their labels no more often"
    ):
        E.noisy_label_c(x, y, 4)
    for bad in (-0.1, 0.75, float("nan")):
        with pytest.raises(ValueError, match="noise_rate"):
            E.noisy_label_c(x, y, 4, noise_rate=bad)


def _noisy_file(path, ds, given, test_given, clean=None, test_clean=None):
    extra = {} if clean is None else dict(clean_labels=clean, test_clean_labels=test_clean)
    np.savez(path, features=ds.features, labels=given, test_features=ds.test_features, test_labels=test_given, **extra)
    return str(path)


def _flip(y, rate, seed):
    rng = np.random.default_rng(seed)
    out = y.copy()
    flip = rng.random(y.size) < rate
    out[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    return out


class _RecordingEstimator:
    """Stands in for SelfDistillationClassifier: records what it is fitted on; scores = share of label 0."""

    fits: list = []

    def __init__(self, **params):
        self.params = params

    def fit(self, x, y):
        _RecordingEstimator.fits.append((self.params, np.array(x), np.array(y)))
        student = self.params.get("student", "sd")
        self.best_student_, self.best_round_ = ("pll" if student == "pll" else "sd"), 1
        self.round_scores_ = np.linspace(0.1, 0.5, self.params["num_rounds"]) + (student == "pll")
        return self

    def round_score(self, x, y):
        return np.full(self.params["num_rounds"], np.mean(np.asarray(y) == 0) + x.shape[0])


def test_noisy_labels_mode_passes_labels_through_and_uses_clean_labels_only_to_evaluate(tmp_path, monkeypatch):
    ds, _, _ = _quick_data()
    given, test_given = _flip(ds.labels, 0.4, 1), _flip(ds.test_labels, 0.4, 2)

    def no_noise(*args, **kwargs):
        raise AssertionError("--noisy-labels drew synthetic noise")

    monkeypatch.setattr(E, "sample_labels", no_noise)
    monkeypatch.setattr(E, "corruption_matrix", no_noise)
    monkeypatch.setattr(real_data.sd, "SelfDistillationClassifier", _RecordingEstimator)
    argv = ["--noisy-labels", "--feature-maps", "standardized", "--num-rounds", "3", "--no-figures"]
    runs = {}
    for case, clean in (("clean", ds.labels), ("none", None), ("other", np.roll(ds.labels, 7))):
        test_clean = None if clean is None else ds.test_labels
        path = _noisy_file(tmp_path / f"{case}.npz", ds, given, test_given, clean, test_clean)
        _RecordingEstimator.fits = []
        res = real_data.main(["--features", path, *argv, "--out", str(tmp_path / case)])
        runs[case] = (_RecordingEstimator.fits, res)
    fits, res = runs["clean"]
    assert len(fits) == 2 and {f[0].get("student") for f in fits} == {"auto", "pll"}
    for params, x, y in fits:
        np.testing.assert_array_equal(y, given)  # the file's labels, unchanged
        assert x.shape == ds.features.shape and params["select_round"] == "holdout"
    rows = res["rows"]
    assert [(r["student"], r["round"]) for r in rows] == [(s, r) for s in ("sd", "pll") for r in range(3)]
    assert [r["selected"] for r in rows] == [False, True, False, False, False, False]
    n, m = ds.labels.size, ds.test_labels.size
    for r in rows:
        assert r["test_agree"] == np.mean(test_given == 0) + m
        assert r["train_acc"] == np.mean(ds.labels == 0) + n and r["test_acc"] == np.mean(ds.test_labels == 0) + m
    info = res["summary"]["feature_maps"]["standardized"]
    assert info["realised_rate"] == np.mean(given != ds.labels) and "oracle" in info
    # without clean labels, or with other ones: the same fits (labels, lam) and the same label-based columns
    for case in ("none", "other"):
        other_fits, other = runs[case]
        assert len(other_fits) == len(fits)
        for (p, x, y), (p2, x2, y2) in zip(fits, other_fits, strict=True):
            assert p == p2
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
        for r, r2 in zip(rows, other["rows"], strict=True):
            assert (r["lam"], r["val_agree"], r["test_agree"], r["selected"]) == (
                r2["lam"],
                r2["val_agree"],
                r2["test_agree"],
                r2["selected"],
            )
    assert all(np.isnan(r["train_acc"]) and np.isnan(r["test_acc"]) for r in runs["none"][1]["rows"])
    assert "oracle" not in runs["none"][1]["summary"]["feature_maps"]["standardized"]
    csv_rows = read_csv(tmp_path / "none" / "real_data.csv")
    assert list(csv_rows[0]) == list(real_data.NOISY_FIELDNAMES) and csv_rows[0]["test_acc"] == "nan"
    assert "| sd | 1 (selected) |" in (tmp_path / "none" / "summary.md").read_text()


def test_noisy_labels_flags(tmp_path, capsys):
    ds, _, _ = _quick_data()
    path = _noisy_file(tmp_path / "n.npz", ds, ds.labels, ds.test_labels, ds.labels, ds.test_labels)
    for bad, flag in (
        (["--noisy-labels"], "--noisy-labels"),  # needs --features
        (["--features", path, "--noisy-labels", "--rates", "0.3"], "--rates"),
        (["--features", path, "--noisy-labels", "--kinds", "cc"], "--kinds"),
        (["--features", path, "--noisy-labels", "--seeds", "2"], "--seeds"),
        (["--features", path, "--noisy-labels", "--resume"], "--resume"),
        (["--features", path, "--noise-rate", "0.3"], "--noise-rate"),
        (["--features", path, "--noisy-labels", "--noise-rate", "1"], "--noise-rate"),
        (["--features", path], "--features"),  # a file with clean labels is not taken as clean
    ):
        with pytest.raises(SystemExit) as e:
            real_data.main([*bad, "--out", str(tmp_path / "o")])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err, err
    assert "has clean labels, so its labels are noisy: pass --noisy-labels" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # about 45 s on two busy cores: it compiles both students' chains
def test_noisy_labels_end_to_end_against_an_independent_teacher(tmp_path):
    """A real --noisy-labels run: the teacher's columns against SciPy's primal fit on the same 80% split."""
    ds, x, xt = _quick_data()
    given, test_given = _flip(ds.labels, 0.4, 1), _flip(ds.test_labels, 0.4, 2)
    path = _noisy_file(tmp_path / "n.npz", ds, given, test_given, ds.labels, ds.test_labels)
    argv = ["--features", path, "--noisy-labels", "--feature-maps", "standardized", "--num-rounds", "2"]
    res = real_data.main([*argv, "--no-figures", "--out", str(tmp_path / "o")])
    rows, info = res["rows"], res["summary"]["feature_maps"]["standardized"]
    n, k = given.size, 10
    c, _ = E.noisy_label_c(x, given, k)
    assert rows[0]["lam"] == info["lam"] == pytest.approx((1 - c) / (k * n), rel=1e-12)
    # the estimator's split: floor(0.2 n_k) of each given class, drawn by default_rng(seed) per class
    rng = np.random.default_rng(0)
    val = []
    for a in range(k):
        idx = np.flatnonzero(given == a)
        val.append(rng.permutation(idx)[: min(int(np.floor(0.2 * idx.size)), idx.size - 1)])
    val = np.sort(np.concatenate(val))
    fit = np.setdiff1d(np.arange(n), val)
    w = _primal_softmax(x[fit], np.eye(k)[given[fit]], info["lam"])
    for r in (r for r in rows if r["round"] == 0):  # both chains start from the same teacher
        assert r["val_agree"] == pytest.approx(np.mean((x[val] @ w).argmax(1) == given[val]), abs=1e-12)
        assert r["test_agree"] == pytest.approx(np.mean((xt @ w).argmax(1) == test_given), abs=1e-12)
        assert r["test_acc"] == pytest.approx(np.mean((xt @ w).argmax(1) == ds.test_labels), abs=1e-12)
        assert r["train_acc"] == pytest.approx(np.mean((x @ w).argmax(1) == ds.labels), abs=1e-12)
    (sel,) = [r for r in rows if r["selected"]]
    assert sel["val_agree"] == max(r["val_agree"] for r in rows)
    best = max(rows, key=lambda r: r["test_acc"])
    assert info["oracle_gap"] == pytest.approx(best["test_acc"] - sel["test_acc"], abs=1e-15)
