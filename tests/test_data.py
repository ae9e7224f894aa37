"""Tests for sdtheory.data: loader validation, round trips, splits, feature maps.

Feature-map properties are checked against plain NumPy recomputations.
"""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdtheory  # noqa: F401  (float64)
from sdtheory import data as D
from sdtheory import io as sio


def _toy(n=30, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.arange(n) % k
    return x, y.astype(np.int64)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


def test_npz_round_trip_with_test_split(tmp_path):
    x, y = _toy()
    xt, yt = _toy(n=9, seed=1)
    p = sio.save_features(tmp_path / "f.npz", x, y, test_features=xt, test_labels=yt)
    ds = D.load_features(p)
    np.testing.assert_array_equal(ds.features, x)
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(ds.test_features, xt)
    np.testing.assert_array_equal(ds.test_labels, yt)
    assert ds.num_classes == 3 and ds.name == "f"
    assert ds.features.dtype == np.float64 and ds.labels.dtype == np.int64


def test_npz_written_by_numpy_is_read(tmp_path):
    x, y = _toy()
    np.savez(tmp_path / "a.npz", features=x.astype(np.float32), labels=y.astype(np.int32), extra=np.ones(3))
    ds = D.load_features(tmp_path / "a.npz")
    np.testing.assert_allclose(ds.features, x.astype(np.float32).astype(np.float64))
    assert ds.test_features is None and ds.test_labels is None


def test_npz_clean_labels_of_noisy_labels(tmp_path):
    """Optional clean_labels / test_clean_labels (for files whose labels are noisy) are read and checked."""
    x, y = _toy()
    xt, yt = _toy(n=9, seed=1)
    clean, test_clean = (y + 1) % 3, (yt + 2) % 3
    p = tmp_path / "n.npz"
    np.savez(
        p, features=x, labels=y, test_features=xt, test_labels=yt, clean_labels=clean, test_clean_labels=test_clean
    )
    ds = D.load_features(p)
    np.testing.assert_array_equal(ds.labels, y)  # the given labels stay as they are
    np.testing.assert_array_equal(ds.clean_labels, clean)
    np.testing.assert_array_equal(ds.test_clean_labels, test_clean)
    assert ds.clean_labels.dtype == np.int64
    assert D.load_features(sio.save_features(tmp_path / "c.npz", x, y)).clean_labels is None
    for extra, pattern in (
        (dict(clean_labels=clean[:-1]), "n.npz: clean_labels has 29 entries but labels has 30 rows"),
        (dict(clean_labels=clean.astype(float)), "n.npz: clean_labels must have an integer dtype"),
        (dict(clean_labels=clean + 3), r"n.npz: clean_labels must lie in \[0, 2\]"),
        (dict(test_clean_labels=test_clean), "n.npz: has test_clean_labels but no test_labels"),
    ):
        np.savez(p, features=x, labels=y, **extra)
        with pytest.raises((ValueError, TypeError), match=pattern):
            D.load_features(p)


def test_paired_npy_round_trip(tmp_path):
    x, y = _toy()
    xt, yt = _toy(n=6, seed=2)
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "emb.labels.npy", y)
    ds = D.load_features(tmp_path / "emb.npy")
    np.testing.assert_array_equal(ds.features, x)
    assert ds.test_features is None
    np.save(tmp_path / "emb.test.npy", xt)
    np.save(tmp_path / "emb.test.labels.npy", yt)
    ds = D.load_features(tmp_path / "emb.npy", num_classes=5)
    np.testing.assert_array_equal(ds.test_labels, yt)
    assert ds.num_classes == 5


# --------------------------------------------------------------------------
# Bad files: each error names the file and the problem
# --------------------------------------------------------------------------


def _save(tmp_path, name="bad.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz.*not found"):
        D.load_features(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npy.*not found"):
        D.load_features(tmp_path / "nope.npy")


def test_missing_labels_sibling(tmp_path):
    x, _ = _toy()
    np.save(tmp_path / "e.npy", x)
    with pytest.raises(FileNotFoundError, match=r"e\.labels\.npy"):
        D.load_features(tmp_path / "e.npy")


def test_half_test_split_npy(tmp_path):
    x, y = _toy()
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "e.labels.npy", y)
    np.save(tmp_path / "e.test.npy", x)
    with pytest.raises(FileNotFoundError, match="test.labels.npy"):
        D.load_features(tmp_path / "e.npy")


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_truncated_file(tmp_path, suffix):
    x, y = _toy(n=200, d=20)
    p = tmp_path / ("t" + suffix)
    if suffix == ".npz":
        np.savez(p, features=x, labels=y)
    else:
        np.save(p, x)
        np.save(tmp_path / "t.labels.npy", y)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"t\.np[yz].*truncated or corrupt"):
        D.load_features(p)


def _huge_header_member(shape=(10**11, 4), data=b"\0" * 32) -> bytes:
    """A .npy stream whose header declares ``shape`` of float64 but holds only ``data``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


@pytest.mark.parametrize("compression", ["stored", "deflated"])
def test_npz_header_declaring_more_than_the_member_holds_is_refused_before_allocating(tmp_path, compression):
    """A 220-byte .npz declaring shape (1e11, 4) raised an uncaught MemoryError (3.2 TB allocation)."""
    import zipfile

    p = tmp_path / "huge.npz"
    mode = zipfile.ZIP_STORED if compression == "stored" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(p, "w", compression=mode) as zf:
        zf.writestr("features.npy", _huge_header_member())
        buf = __import__("io").BytesIO()
        np.save(buf, np.arange(4))
        zf.writestr("labels.npy", buf.getvalue())
    assert p.stat().st_size < 1000
    with pytest.raises(
        ValueError,
        match=r"huge.npz: member 'features.npy': the header declares shape \(100000000000, 4\) of float64 "
        r"\(3200000000000 bytes\) but the data are 32 bytes",
    ):
        D.load_features(p)


def test_npy_header_declaring_more_than_the_file_holds_is_refused(tmp_path):
    p = tmp_path / "huge.npy"
    p.write_bytes(_huge_header_member())
    np.save(tmp_path / "huge.labels.npy", np.arange(4))
    with pytest.raises(ValueError, match=r"huge.npy: the header declares shape \(100000000000, 4\)"):
        D.load_features(p)


def test_array_beyond_the_stated_budget_is_refused_before_reading(tmp_path, monkeypatch):
    """A declaration that matches its data but exceeds MAX_ARRAY_BYTES (a few GB in real life) is refused."""
    assert D.MAX_ARRAY_BYTES == 2 * 2**30
    x, y = _toy(n=30, d=5)
    p = _save(tmp_path, features=x, labels=y)
    assert D.load_features(p).features.shape == (30, 5)
    monkeypatch.setattr(D, "MAX_ARRAY_BYTES", x.nbytes - 1)
    with pytest.raises(ValueError, match=r"bad.npz: member 'features.npy': shape \(30, 5\) of float64 .* more than"):
        D.load_features(p)


def test_garbage_file(tmp_path):
    p = tmp_path / "g.npz"
    p.write_bytes(b"this is not an archive")
    with pytest.raises(ValueError, match="g.npz: not a .npz"):
        D.load_features(p)


def test_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported file type"):
        D.load_features(tmp_path / "f.csv")


def test_missing_member(tmp_path):
    x, _ = _toy()
    p = _save(tmp_path, features=x)
    with pytest.raises(ValueError, match="bad.npz.*missing array 'labels'"):
        D.load_features(p)


def test_object_array_refused(tmp_path):
    x, y = _toy()
    p = tmp_path / "o.npz"
    np.savez(p, features=np.array([[1, "a"]], dtype=object), labels=y)
    with pytest.raises(TypeError, match="o.npz.*object"):
        D.load_features(p)


@pytest.mark.parametrize(
    "features, labels, exc, pattern",
    [
        (np.ones((30, 5)).astype(str), None, TypeError, "features must have a real numeric dtype"),
        (np.ones((30, 5), dtype=bool), None, TypeError, "real numeric dtype"),
        (np.ones((30, 5), dtype=complex), None, TypeError, "real numeric dtype"),
        (np.ones(30), None, ValueError, "features must be a 2-D"),
        (np.ones((30, 5, 1)), None, ValueError, "features must be a 2-D"),
        (None, (np.arange(30) % 3).astype(float), TypeError, "labels must have an integer dtype"),
        (None, (np.arange(30) % 3).reshape(30, 1), ValueError, "labels must be a 1-D"),
        (None, np.arange(29) % 3, ValueError, "labels has 29 entries but features has 30 rows"),
        (None, np.arange(30) % 3 - 1, ValueError, "labels must be >= 0"),
        (None, np.zeros(30, dtype=int), ValueError, "at least K = 2"),
        (None, np.where(np.arange(30) % 2 == 0, 0, 2), ValueError, r"classes \[1\] never occur"),
    ],
)
def test_bad_arrays(tmp_path, features, labels, exc, pattern):
    x, y = _toy()
    p = _save(tmp_path, features=x if features is None else features, labels=y if labels is None else labels)
    with pytest.raises(exc, match="bad.npz: .*" + pattern):
        D.load_features(p)
    with pytest.raises(exc, match=pattern):
        D.load_features(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features(tmp_path, bad):
    x, y = _toy()
    x[4, 2] = bad
    p = _save(tmp_path, features=x, labels=y)
    with pytest.raises(ValueError, match="bad.npz: features contains 1 non-finite"):
        D.load_features(p)


def test_labels_out_of_range_for_given_k(tmp_path):
    x, y = _toy(k=4)
    p = _save(tmp_path, features=x, labels=y)
    with pytest.raises(ValueError, match=r"bad.npz: labels must lie in \[0, 2\] for num_classes=3"):
        D.load_features(p, num_classes=3)


def test_test_split_problems(tmp_path):
    x, y = _toy()
    p = _save(tmp_path, features=x, labels=y, test_features=np.ones((4, 6)), test_labels=np.zeros(4, int))
    with pytest.raises(ValueError, match="bad.npz: test_features has dimension 6 but features has 5"):
        D.load_features(p)
    p = _save(tmp_path, features=x, labels=y, test_features=np.ones((4, 5)), test_labels=np.zeros(3, int))
    with pytest.raises(ValueError, match="test_labels has 3 entries but test_features has 4"):
        D.load_features(p)
    p = _save(tmp_path, features=x, labels=y, test_features=np.ones((4, 5)))
    with pytest.raises(ValueError, match="has test_features but no test_labels"):
        D.load_features(p)
    p = _save(tmp_path, features=x, labels=y, test_features=np.ones((4, 5)), test_labels=np.full(4, 7))
    with pytest.raises(ValueError, match=r"test_labels must lie in \[0, 2\]"):
        D.load_features(p, num_classes=3)
    xt = np.ones((4, 5))
    xt[0, 0] = np.nan
    p = _save(tmp_path, features=x, labels=y, test_features=xt, test_labels=np.zeros(4, int))
    with pytest.raises(ValueError, match="test_features contains 1 non-finite"):
        D.load_features(p)


def test_save_rejects_bad_input(tmp_path):
    x, y = _toy()
    with pytest.raises(ValueError, match="labels has 29 entries"):
        sio.save_features(tmp_path / "s.npz", x, y[:-1])
    with pytest.raises(ValueError, match=".npz"):
        sio.save_features(tmp_path / "s.npy", x, y)
    assert not (tmp_path / "s.npz").exists()
    assert not hasattr(D, "save_features")  # sdtheory.data reads; writers live in sdtheory.io


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def test_digits_split_deterministic_and_stratified():
    a = D.load_digits(seed=3)
    b = D.load_digits(key=jax.random.key(3))
    c = D.load_digits(seed=4)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.labels, c.labels) or not np.array_equal(a.features, c.features)
    from sklearn.datasets import load_digits as sk

    x, y = sk(return_X_y=True)
    assert a.features.shape[0] + a.test_features.shape[0] == x.shape[0] == 1797
    # every original row lands in exactly one split (multiset equality of rows)
    allrows = np.concatenate([a.features, a.test_features])
    alllab = np.concatenate([a.labels, a.test_labels])
    order_a = np.lexsort(np.column_stack([allrows, alllab]).T)
    order_x = np.lexsort(np.column_stack([x, y]).T)
    np.testing.assert_array_equal(allrows[order_a], x[order_x])
    counts = np.bincount(y)
    np.testing.assert_array_equal(np.bincount(a.test_labels), np.round(0.25 * counts).astype(int))


@given(st.lists(st.integers(2, 12), min_size=2, max_size=5), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_stratified_split_properties(sizes, frac, seed):
    y = np.repeat(np.arange(len(sizes)), sizes)
    tr, te = D.stratified_split(jax.random.key(seed), y, frac)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(y.size))
    for k, n in enumerate(sizes):
        m = np.sum(y[te] == k)
        assert 1 <= m <= n - 1
        assert m == min(max(round(frac * n), 1), n - 1)
    tr2, te2 = D.stratified_split(jax.random.key(seed), y, frac)
    np.testing.assert_array_equal(te, te2)


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="test_fraction"):
        D.stratified_split(jax.random.key(0), np.arange(10) % 2, 1.0)
    with pytest.raises(ValueError, match="class 2 has 1"):
        D.stratified_split(jax.random.key(0), np.array([0, 0, 1, 1, 2]), 0.5)
    with pytest.raises(TypeError, match="jax.random key"):
        D.stratified_split(0, np.arange(10) % 2, 0.5)


def test_stratified_subset():
    y = np.repeat(np.arange(3), [5, 8, 2])
    idx = D.stratified_subset(jax.random.key(0), y, 4)
    np.testing.assert_array_equal(np.bincount(y[idx]), [4, 4, 2])
    np.testing.assert_array_equal(idx, D.stratified_subset(jax.random.key(0), y, 4))


# --------------------------------------------------------------------------
# Feature maps, checked with NumPy
# --------------------------------------------------------------------------


def test_standardize_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 6))
    x[:, 2] = 7.0  # constant column
    xt = rng.normal(size=(8, 6))
    s, st_ = D.standardize(x, xt)
    np.testing.assert_allclose(s.mean(axis=0), 0, atol=1e-12)
    sd = s.std(axis=0)
    np.testing.assert_allclose(sd[[0, 1, 3, 4, 5]], 1, rtol=1e-12)
    assert np.all(s[:, 2] == 0)
    mu, sig = x.mean(0), x.std(0)
    np.testing.assert_allclose(st_[:, 0], (xt[:, 0] - mu[0]) / sig[0], rtol=1e-12)
    np.testing.assert_allclose(st_[:, 2], xt[:, 2] - 7.0, rtol=1e-12)


def test_random_relu_reproducible_and_correct():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4))
    a, _ = D.random_relu_features(jax.random.key(5), x, 64)
    b, _ = D.random_relu_features(jax.random.key(5), x, 64)
    c, _ = D.random_relu_features(jax.random.key(6), x, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == (20, 64) and np.all(a >= 0)
    # the map is row-wise: features of a subset equal the subset of the features
    sub, test = D.random_relu_features(jax.random.key(5), x[:5], 64, x[5:])
    np.testing.assert_allclose(np.concatenate([sub, test]), a, rtol=1e-12)
    # it is max(0, affine): on the positive part it is affine in x (finite differences)
    rows = a > 1e-3
    x2 = x + 1e-7 * rng.normal(size=x.shape)
    a2, _ = D.random_relu_features(jax.random.key(5), x2, 64)
    x3 = x + 2 * (x2 - x)
    a3, _ = D.random_relu_features(jax.random.key(5), x3, 64)
    np.testing.assert_allclose((a3 - a)[rows], 2 * (a2 - a)[rows], atol=1e-12)


def test_random_relu_kernel_matches_monte_carlo():
    # E[relu(w.x+b) relu(w.y+b)] for w ~ N(0, I/d), b ~ N(0,1): estimate with numpy draws
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4))
    f, _ = D.random_relu_features(jax.random.key(0), x, 200_000)
    k_ours = f @ f.T / f.shape[1]
    w = rng.normal(size=(4, 200_000)) / 2.0
    b = rng.normal(size=200_000)
    g = np.maximum(x @ w + b, 0)
    k_mc = g @ g.T / g.shape[1]
    np.testing.assert_allclose(k_ours, k_mc, rtol=0.03)


def test_normalize_rows_and_center():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, size=(40, 7))
    xt = rng.normal(size=(5, 7))
    u, ut = D.normalize_rows(x, xt)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(u * np.linalg.norm(x, axis=1)[:, None], x, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ut, axis=1), 1, rtol=1e-12)
    c, ct = D.normalize_rows(x, xt, center=True)
    mu = x.mean(0)
    np.testing.assert_allclose(c, (x - mu) / np.linalg.norm(x - mu, axis=1)[:, None], rtol=1e-12)
    np.testing.assert_allclose(ct, (xt - mu) / np.linalg.norm(xt - mu, axis=1)[:, None], rtol=1e-12)
    with pytest.raises(ValueError, match="row 0 is zero"):
        D.normalize_rows(np.zeros((2, 3)))


@pytest.mark.parametrize("kind", D.FEATURE_MAPS)
def test_make_features_pipeline(kind):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 17, size=(60, 8)).astype(float)
    xt = rng.integers(0, 17, size=(10, 8)).astype(float)
    f, ft = D.make_features(kind, x, xt, key=jax.random.key(0), num_features=32)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ft, axis=1), 1, rtol=1e-12)
    # recompute independently
    z = (x - x.mean(0)) / x.std(0)
    zt = (xt - x.mean(0)) / x.std(0)
    if kind == "identity":
        z, zt = x, xt
    if kind == "relu":
        z, zt = D.random_relu_features(jax.random.key(0), z, 32, zt)
    mu = z.mean(0)
    np.testing.assert_allclose(f, (z - mu) / np.linalg.norm(z - mu, axis=1)[:, None], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ft, (zt - mu) / np.linalg.norm(zt - mu, axis=1)[:, None], rtol=1e-10, atol=1e-12)


def test_make_features_errors():
    x = np.ones((5, 3)) + np.arange(5)[:, None]
    with pytest.raises(ValueError, match="unknown feature map"):
        D.make_features("pca", x)
    with pytest.raises(ValueError, match="needs an explicit key"):
        D.make_features("relu", x)
    with pytest.raises(ValueError, match="non-finite"):
        D.make_features("standardized", np.full((3, 2), np.nan))


def test_block_statistics_against_gram():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(25, 6))
    y = np.repeat(np.arange(3), [7, 8, 10])
    bs = D.block_statistics(x, y, 3)
    g = x @ x.T
    for k in range(3):
        for l in range(3):
            block = g[np.ix_(y == k, y == l)]
            if k == l:
                want = (block.sum() - np.trace(block)) / (block.size - block.shape[0])
            else:
                want = block.mean()
            np.testing.assert_allclose(bs.class_means[k, l], want, rtol=1e-12)
    np.testing.assert_array_equal(bs.class_sizes, [7, 8, 10])
    off = [bs.class_means[k, l] for k in range(3) for l in range(3) if k != l]
    np.testing.assert_allclose(bs.d, np.mean(off), rtol=1e-12)


# --------------------------------------------------------------------------
# Issue 12: opaque errors, silent accepts, scale safety
# --------------------------------------------------------------------------


def test_standardize_is_scale_safe():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 3))
    xt = rng.normal(size=(4, 3))
    s, st_ = D.standardize(x, xt)
    for scale in (1e200, 1e-170, 1e-300):  # was zeros at 1e200 and unscaled values at 1e-170
        s2, st2 = D.standardize(x * scale, xt * scale)
        np.testing.assert_allclose(s2, s, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(st2, st_, rtol=1e-9, atol=1e-12)
    # mixed column scales, one column constant: only centred, in its own units
    y = np.column_stack([x[:, 0] * 1e200, x[:, 1] * 1e-170, np.full(20, 3e-200)])
    out, _ = D.standardize(y)
    np.testing.assert_allclose(out[:, :2], s[:, :2], rtol=1e-9)
    assert np.all(out[:, 2] == 0)


def test_normalize_rows_small_rows_and_scale():
    u, _ = D.normalize_rows(np.array([[1e-13, 0.0], [0.0, 3e-13]]))  # was "row 0 is zero"
    np.testing.assert_array_equal(u, np.eye(2))
    big, _ = D.normalize_rows(np.array([[1e200, 1e200], [1e-200, 3e-200]]))
    np.testing.assert_allclose(big, [[2**-0.5, 2**-0.5], [0.1**0.5, 0.9**0.5]], rtol=1e-14)
    with pytest.raises(ValueError, match="row 1 is zero after centring, up to roundoff"):
        D.normalize_rows(
            np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]) + [[0.0, 0.0], [1e-15, 0.0], [0.0, 0.0]], center=True
        )
    with pytest.raises(TypeError, match="center"):
        D.normalize_rows(np.eye(2), center="no")  # was truthy
    with pytest.raises(TypeError, match="train"):
        D.normalize_rows(np.eye(2, dtype=bool))


def test_split_labels_checked():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="labels must be a 1-D integer array"):
        D.stratified_subset(key, np.array([0.0, 1.0, np.nan, 1.0]), 1)  # was: NaN silently dropped
    with pytest.raises(ValueError, match="labels must not be empty"):
        D.stratified_subset(key, np.array([], dtype=int), 1)  # was "need at least one array to concatenate"
    with pytest.raises(ValueError, match="labels must not be empty"):
        D.stratified_split(key, np.array([], dtype=int), 0.5)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        D.stratified_split(key, np.array([-1, -1, 0, 0]), 0.5)
    with pytest.raises(ValueError, match="labels must be a rectangular array"):
        D.stratified_subset(key, [[0, 1], [1]], 1)
    with pytest.raises(TypeError, match="test_fraction"):
        D.stratified_split(key, np.array([0, 0, 1, 1]), "0.5")  # was float("0.5")
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        D.stratified_split(np.zeros(2), np.array([0, 0, 1, 1]), 0.5)
    with pytest.raises(ValueError, match="seed must be <="):
        D.load_digits(seed=2**64)


def test_loader_arguments_named(tmp_path):
    x, y = _toy()
    p = _save(tmp_path, features=x, labels=y)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        D.load_features(5)
    with pytest.raises(ValueError, match="path must name"):
        D.load_features("")
    with pytest.raises(TypeError, match="name must be a str"):
        D.load_features(p, name=5)
    with pytest.raises(TypeError, match="bad.npz: num_classes"):
        D.load_features(p, num_classes=3.0)
    with pytest.raises(ValueError, match="features must be a rectangular array"):
        sio.save_features(tmp_path / "s.npz", [[0.0, 1.0], [2.0]], np.array([0, 1]))


def test_missing_classes_message_is_short(tmp_path):
    x, y = _toy(n=40)
    y[-1] = 10**6  # classes 3..999999 never occur
    p = _save(tmp_path, features=x, labels=y)
    with pytest.raises(ValueError, match="never occur") as info:
        D.load_features(p)
    assert len(str(info.value)) < 400


def test_feature_map_arguments_named():
    x = np.random.default_rng(0).normal(size=(6, 3))
    with pytest.raises(ValueError, match="kind"):
        D.make_features(["relu"], x)
    with pytest.raises(TypeError, match="normalize"):
        D.make_features("identity", x, normalize=1)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        D.make_features("relu", x, key=0)
    with pytest.raises(TypeError, match="num_features"):
        D.random_relu_features(jax.random.key(0), x, 2.5)
    with pytest.raises(TypeError, match="train"):
        D.standardize(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="num_classes = 1000000"):
        D.block_statistics(x, np.array([0, 0, 1, 1, 2, 2]), 10**6)  # no (K, K) identity of 10**6 rows
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\].*num_classes = 2"):
        D.block_statistics(x, np.array([0, 0, 1, 1, 2, 2]), 2)
