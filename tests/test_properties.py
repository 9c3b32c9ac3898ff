"""Property-based tests (hypothesis): bad, odd and tampered input through the public entry points.

Whatever is generated, the outcome is a correct result or a clear error, never anything else:

- from Python, a :class:`latentforge.UserError` (which names the Python parameter, not a CLI flag);
- from the command line (``latentforge.cli.main``), exit code 2 with one ``error: …`` line on stderr;
- never another exception type (what would be a traceback), never a hang (each call runs under an alarm),
  and never a changed file that should not change (run directories are hashed before and after).

Models are trained once per module (one epoch, small data); every test that damages a run works on a copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import traceback
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from latentforge import VAE, AEDetector, DeepSVDD, UserError
from latentforge.cli import main

# No shrinking: the cases come from tables and are small already, and shrinking a failure of a command that trains
# (train --resume) would rerun it hundreds of times.
SETTINGS = {"deadline": None, "database": None, "phases": (Phase.explicit, Phase.generate),
            "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much]}
CALL_LIMIT_S = 30  # one call that takes longer than this counts as a hang
TABLE_ROWS, TABLE_COLS = 60, 5


# --- helpers ---------------------------------------------------------------------------------------------

class Hang(Exception):
    """A call ran past CALL_LIMIT_S."""


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    def on_alarm(signum, frame):
        raise Hang(f"{what} did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _frames(e: BaseException, n: int = 4) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)[-n - 1:])


def call(what: str, fn, *args, **kw):
    """("ok", result) or ("error", message) for a UserError; any other exception fails with its last frames."""
    try:
        with time_limit(CALL_LIMIT_S, what):
            return "ok", fn(*args, **kw)
    except UserError as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001 - that is the point: anything else is a bug
        raise AssertionError(f"{what} raised {type(e).__name__} instead of a UserError or a result: {e}\n"
                             f"{_frames(e)}") from None


def cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``latentforge ARGV`` in this process: (exit code, stdout, stderr). An exception escaping ``main``
    (a traceback on the real command line) fails the test with its last frames."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with time_limit(CALL_LIMIT_S, f"latentforge {' '.join(argv)}"), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException as e:  # noqa: BLE001
        raise AssertionError(f"latentforge {' '.join(argv)}: {type(e).__name__} escaped main (a traceback on the "
                             f"command line): {e}\nstderr so far: {err.getvalue()[-500:]!r}\n{_frames(e)}") from None
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(argv: list[str], rc: int, err: str, *words: str) -> str:
    assert "Traceback" not in err, f"latentforge {' '.join(argv)} printed a traceback:\n{err[-2000:]}"
    lines = err.strip().splitlines()
    assert rc == 2, f"latentforge {' '.join(argv)}: exit code {rc}, expected 2; stderr: {err[-1000:]!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), \
        f"latentforge {' '.join(argv)}: stderr is not one 'error: …' line: {err[-1000:]!r}"
    for w in words:
        assert w in lines[0], f"latentforge {' '.join(argv)}: the error does not name {w!r}: {lines[0]!r}"
    return lines[0]


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) → its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[str, str], folder: Path, what: str) -> None:
    after = digest(folder)
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not changed and before.keys() == after.keys(), (
        f"{what} changed the run directory: changed {changed}, removed {sorted(before.keys() - after.keys())}, "
        f"added {sorted(after.keys() - before.keys())}")


def fresh(base: Path, name: str = "") -> Path:
    """A new, not yet existing path under ``base``."""
    return base / f"{name}{uuid.uuid4().hex[:10]}"


def rows_named(message: str) -> set[int]:
    """Row indices an error message names ("rows 3, 7", "first at row 3")."""
    found: set[int] = set()
    for m in re.finditer(r"\brows? ((?:\d+(?:, )?)+)", message):
        found |= {int(t) for t in re.findall(r"\d+", m.group(1))}
    return found


class Shared(dict):
    """A module fixture's values, with a short repr (hypothesis prints fixtures in its failure reports)."""

    def __repr__(self) -> str:
        return f"<{', '.join(self)}>"


# --- models trained once per module -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """This module's scratch folder, also the working directory (a default run directory would land here)."""
    d = tmp_path_factory.mktemp("properties")
    old = os.getcwd()
    os.chdir(d)
    yield d
    os.chdir(old)


class Table(np.ndarray):
    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} random table>"


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(TABLE_ROWS, TABLE_COLS)).astype(np.float32).view(Table)


@pytest.fixture(scope="module")
def fitted(table) -> dict:
    """Python estimators fitted for one epoch on a 60×5 random table."""
    torch.manual_seed(0)
    table = np.asarray(table)
    return Shared({
        "VAE": VAE(latent_dim=3, hidden=(16,), epochs=1, random_state=0, device="cpu").fit(table),
        "AEDetector": AEDetector(kind="vae", hidden=(16,), epochs=1, random_state=0, device="cpu").fit(table),
        "DeepSVDD": DeepSVDD(latent_dim=4, hidden=(16,), n_nets=1, epochs=1, random_state=0, device="cpu").fit(table),
    })


@pytest.fixture(scope="module")
def runs(work, table) -> dict:
    """Run directories from the real command: a VAE on digits and a Deep SVDD on a 60×5 CSV table."""
    vae = work / "vae-digits"
    rc, _, err = cli(["train", "vae", "--data", "digits", "--epochs", "1", "--eval-k", "0", "--device", "cpu",
                      "--out", str(vae)])
    assert rc == 0, err
    csv = work / "table.csv"
    pd.DataFrame(np.asarray(table), columns=list("abcde")).to_csv(csv, index=False)
    svdd = work / "svdd-table"
    rc, _, err = cli(["train", "deep-svdd", "--data", str(csv), "--epochs", "1", "--n-nets", "1", "--eval-k", "0",
                      "--device", "cpu", "--out", str(svdd)])
    assert rc == 0, err
    return Shared({"vae": vae, "svdd": svdd, "vae_digest": digest(vae), "svdd_digest": digest(svdd)})


# --- 1. Python estimator calls ----------------------------------------------------------------------------

HUGE_FINITE = [1e30, -1e30, 1e300, -1e300, 3.4e38, -3.4e38, 5e-324, -0.0]  # finite, but far from the training data
ODD = [np.nan, np.inf, -np.inf, *HUGE_FINITE]
GOOD = st.floats(-5, 5, allow_nan=False, allow_infinity=False, width=32)


ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"  # what a call must do with an input


@st.composite
def inputs(draw, width: int):
    """Something passed as X, with (n rows or None, what the call must do with it): ``accept`` (real numbers of the
    fitted width, moderate values: a correct result), ``refuse`` (never valid: a UserError) or ``either`` (a
    UserError or a correct, finite result)."""
    n = draw(st.integers(0, 6))
    kind = draw(st.sampled_from(["clean", "odd values", "wrong width", "wrong ndim", "dtype", "list", "tensor",
                                 "empty", "frame", "sparse"]))
    base = np.array(draw(st.lists(GOOD, min_size=n * width, max_size=n * width)), dtype=np.float64).reshape(n, width)
    ok = ACCEPT if n >= 1 else EITHER
    m = max(n, 1)
    if kind == "clean":
        return base.astype(draw(st.sampled_from([np.float32, np.float64]))), n, ok
    if kind == "odd values":
        base = np.zeros((m, width)) if n == 0 else base
        values = draw(st.sampled_from([ODD, HUGE_FINITE]))  # half of the time without NaN/Inf
        for _ in range(draw(st.integers(1, 3))):
            base[draw(st.integers(0, m - 1)), draw(st.integers(0, width - 1))] = draw(st.sampled_from(values))
        with np.errstate(over="ignore"):
            x = base.astype(draw(st.sampled_from([np.float64, np.float32, np.float16])))
        return x, m, EITHER if np.isfinite(x).all() else REFUSE
    if kind == "wrong width":
        return np.zeros((m, draw(st.integers(0, 8).filter(lambda w: w != width)))), m, REFUSE
    if kind == "wrong ndim":
        shape = draw(st.sampled_from([(), (width,), (m, 1, width), (m, 1, 1, width), (m, width, 1), (2, 1, 1, 1, width),
                                      (m, 1, width, 1)]))
        return np.ones(shape), None, REFUSE
    if kind == "dtype":
        which = draw(st.sampled_from(["complex", "object", "object-odd", "str", "bool", "int", "uint8", "datetime",
                                      "bytes", "void"]))
        if which == "complex":  # a non-zero imaginary part: no real number stands for it
            return np.zeros((m, width)) + base[:1].sum() + 1j, m, REFUSE
        if which == "object":  # numbers in an object array: numbers all the same
            return np.ones((m, width)).astype(object), m, EITHER
        if which == "object-odd":
            a = np.ones((m, width)).astype(object)
            a[0, 0] = draw(st.sampled_from(["x", None, [1], {}, 1j]))
            return a, m, REFUSE
        if which == "str":  # numbers written as text may be read as numbers; other text never
            text = draw(st.sampled_from(["1.0", "abc", ""]))
            return np.full((m, width), text), m, EITHER if text == "1.0" else REFUSE
        if which == "bool":
            return np.ones((m, width), dtype=bool), m, EITHER
        if which == "int":
            v = draw(st.sampled_from([0, 3, -(2**62)]))
            return np.full((m, width), v, dtype=np.int64), m, ACCEPT if abs(v) < 10 else EITHER
        if which == "uint8":
            return np.full((m, width), draw(st.sampled_from([0, 2, 200])), dtype=np.uint8), m, EITHER
        if which == "datetime":
            return np.zeros((m, width), dtype="datetime64[s]"), m, REFUSE
        if which == "bytes":
            return np.full((m, width), b"ab"), m, REFUSE
        return np.zeros((m, width), dtype="V8"), m, REFUSE
    if kind == "list":
        which = draw(st.sampled_from(["rows", "ragged", "strings", "flat", "nested-empty", "none", "nested-deeper"]))
        if which == "rows":
            return base.tolist(), n, ok
        return {"ragged": [[1.0] * width, [1.0] * (width + 1)], "strings": [["a"] * width], "flat": [1.0] * width,
                "nested-empty": [[]], "none": [None] * width, "nested-deeper": [[[1.0] * width], [1.0] * width]}[which], \
            None, REFUSE
    if kind == "tensor":
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64]))
        t = torch.from_numpy(base).to(dtype)
        if draw(st.booleans()) and dtype.is_floating_point:
            t.requires_grad_(True)
        return t, n, ok
    if kind == "empty":
        shape = draw(st.sampled_from([(0, width), (0,), (0, 0), (3, 0)]))
        return np.empty(shape), None, EITHER if shape == (0, width) else REFUSE
    if kind == "frame":
        return pd.DataFrame(base.astype(np.float32), columns=[f"c{i}" for i in range(width)]), n, ok
    import scipy.sparse as sp

    return sp.csr_matrix(np.ones((m, width))), m, EITHER


def _check_rows(name: str, out, n: int | None, trailing: tuple[int, ...] | None) -> None:
    out = np.asarray(out)
    if n is not None:
        assert out.shape[0] == n, f"{name}: {out.shape[0]} rows out for {n} rows in"
    if trailing is not None:
        assert out.shape[1:] == trailing, f"{name}: output shape {out.shape}, expected (n, *{trailing})"
    assert np.issubdtype(out.dtype, np.number), f"{name}: output dtype {out.dtype}"
    bad = np.flatnonzero(~np.isfinite(out.reshape(len(out), -1)).all(1)) if out.size else []
    assert len(bad) == 0, f"{name}: NaN/Inf in the output rows {[int(i) for i in bad[:5]]} (no error raised)"


def _describe(X) -> str:
    if isinstance(X, (list, tuple)):
        return repr(X)
    shown = np.array2string(np.asarray(X), threshold=12, edgeitems=2) if isinstance(X, np.ndarray) else ""
    return f"{type(X).__name__}(shape={getattr(X, 'shape', None)}, dtype={getattr(X, 'dtype', None)}) {shown}"


@pytest.mark.parametrize("est_name", ["VAE", "AEDetector", "DeepSVDD"])
@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_estimator_methods_on_odd_input(fitted, est_name, data) -> None:
    est = fitted[est_name]
    X, n, expect = data.draw(inputs(TABLE_COLS), label="X")
    methods = ["decision_function", "score_samples"]
    if est_name != "DeepSVDD":
        methods += ["transform", "reconstruct"]
    if est_name != "VAE":
        methods += ["predict", "predict_proba"]
    method = data.draw(st.sampled_from(methods), label="method")
    what = f"{est_name}.{method}({_describe(X)})"
    status, out = call(what, getattr(est, method), X)
    if status == "error":
        assert expect != ACCEPT, f"{what} refused a valid input: {out}"
        return
    assert expect != REFUSE, f"{what} accepted an invalid input (returned {np.asarray(out)!r})"
    trailing = {"transform": (getattr(est.model_, "latent_dim", None),), "reconstruct": (TABLE_COLS,),
                "predict_proba": (2,)}
    _check_rows(what, out, n, trailing.get(method, ()))
    if method == "predict":
        assert set(np.unique(out)) <= {0, 1}
    if expect == ACCEPT:  # the same rows as a float64 array give the same answer
        ref = getattr(est, method)(np.asarray(X.detach() if hasattr(X, "detach") else X, dtype=np.float64))
        np.testing.assert_allclose(np.asarray(out, dtype=np.float64), ref, rtol=1e-4, atol=1e-4, err_msg=what)


BAD_COUNTS = st.one_of(st.integers(max_value=0), st.integers(10_000_001, 2**80), st.booleans(),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(["3", "", None, [3], (3,), 3 + 0j, np.float64(3.0), np.array([3])]))
GOOD_COUNTS = st.one_of(st.integers(1, 40), st.integers(1, 40).map(np.int64), st.integers(1, 40).map(np.uint8))
BAD_SEEDS = st.one_of(st.integers(max_value=-1), st.integers(2**63, 2**80), st.booleans(), st.floats(),
                      st.sampled_from(["0", [0], np.float64(1.0)]))
GOOD_SEEDS = st.one_of(st.none(), st.integers(0, 2**63 - 1))


@settings(max_examples=60, **SETTINGS)
@given(n=st.one_of(BAD_COUNTS, GOOD_COUNTS), seed=st.one_of(GOOD_SEEDS, BAD_SEEDS),
       label=st.one_of(st.none(), st.none(), st.integers(-3, 12), st.sampled_from([True, 1.0, "1"])))
@example(n=2.0, seed=None, label=None)
@example(n=-1, seed=None, label=None)
@example(n=2**70, seed=None, label=None)
@example(n=True, seed=None, label=None)
@example(n=3, seed=2**64, label=None)
def test_vae_sample_counts(fitted, n, seed, label) -> None:
    est = fitted["VAE"]
    what = f"VAE.sample({n!r}, seed={seed!r}, label={label!r})"
    status, out = call(what, est.sample, n, seed=seed, label=label)
    valid_n = not isinstance(n, bool) and isinstance(n, (int, np.integer)) and 1 <= n <= 10_000_000
    valid_seed = seed is None or (not isinstance(seed, bool) and isinstance(seed, int) and 0 <= seed < 2**63)
    valid = valid_n and valid_seed and label is None
    if status == "error":
        assert not valid, f"{what} refused valid arguments: {out}"
        return
    assert valid, f"{what} gave a result for invalid arguments (shape {np.shape(out)})"
    _check_rows(what, out, int(n), (TABLE_COLS,))


@settings(max_examples=80, **SETTINGS)
@given(data=st.data())
def test_vae_inverse_transform(fitted, data) -> None:
    est = fitted["VAE"]
    d = est.model_.latent_dim
    kind = data.draw(st.sampled_from(["clean", "nan", "odd", "width", "ndim", "list", "strings", "complex", "ragged",
                                      "object", "empty"]), label="kind")
    n = data.draw(st.integers(1, 5), label="n")
    Z = np.array(data.draw(st.lists(GOOD, min_size=n * d, max_size=n * d)), dtype=np.float64).reshape(n, d)
    expect = REFUSE
    if kind == "clean":
        expect = ACCEPT
    elif kind == "nan":  # the brief's case: NaN codes
        Z[0, 0] = np.nan
    elif kind == "odd":
        Z[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, d - 1))] = data.draw(st.sampled_from(ODD))
        expect = EITHER if np.isfinite(Z).all() else REFUSE
    elif kind == "width":
        Z = np.zeros((n, data.draw(st.integers(0, 8).filter(lambda w: w != d))))
    elif kind == "ndim":
        Z = np.zeros(data.draw(st.sampled_from([(), (d,), (n, 1, d), (n, d, 1)])))
    elif kind == "list":
        Z, expect = Z.tolist(), ACCEPT
    elif kind == "strings":  # numbers written as text may be read as numbers; other text never
        text = data.draw(st.sampled_from(["a", "1.0", ""]))
        Z, expect = [[text] * d] * n, EITHER if text == "1.0" else REFUSE
    elif kind == "complex":
        Z = Z + 1j
    elif kind == "ragged":
        Z = [[0.0] * d, [0.0] * (d + 1)]
    elif kind == "object":
        Z = np.array([[0.0] * (d - 1) + [data.draw(st.sampled_from([None, "x", [1], 1j]))]], dtype=object)
    else:
        Z, n, expect = np.empty((0, d)), 0, EITHER
    what = f"VAE.inverse_transform({_describe(Z)})"
    status, out = call(what, est.inverse_transform, Z)
    if status == "error":
        assert expect != ACCEPT, f"{what} refused valid codes: {out}"
        return
    assert expect != REFUSE, f"{what} accepted invalid codes (returned {np.asarray(out)!r})"
    _check_rows(what, out, n, (TABLE_COLS,))


# constructor parameter → values outside what it allows (the call must refuse them by that name)
BAD_PARAMS: dict[str, list] = {
    "lr": [-1.0, 0.0, math.nan, math.inf, -math.inf, "abc", None, True],
    "epochs": [0, -1, 1.5, "3", 10_000_001, 2**70, math.nan],
    "batch_size": [0, -1, 2.5, "x", 2**70],
    "random_state": ["abc", -1, 2**64, 2**70, 1.5, math.nan],
    "latent_dim": [0, -1, 2.5, "abc", 2**70, 2**40],
    "hidden": [(0,), (-1,), "abc", (1.5,), 5, (2**40,)],
    "device": ["tpu", "cuda:99", "", 5],
}
EXTRA_BAD: dict[str, dict[str, list]] = {
    "VAE": {"beta": [-1.0, math.nan, math.inf, "x"], "trim": [-0.1, 1.0, 2], "scaling": ["x"],
            "likelihood": ["x", 5]},
    "AEDetector": {"kind": ["gan", None], "contamination": [0, 0.9, -1, "x"], "threshold": ["foo", "fpr:2", "quantile:0"],
                   "validation_fraction": [0.5, -0.1, "x", True], "patience": [0, -1, 1.5], "score_kind": ["x", "distance"],
                   "trim": [-0.1, 1.0]},
    "DeepSVDD": {"latent_dim": [100_001], "n_nets": [0, 1001], "nu": [0, 1.5], "objective": ["x"], "pretrain": [-1],
                 "channels": [(0,)], "contamination": [0.9], "validation_fraction": [0.7]},
}
BASE_PARAMS = {"VAE": {"latent_dim": 3, "hidden": (16,), "epochs": 1, "device": "cpu"},
               "AEDetector": {"kind": "vae", "hidden": (16,), "epochs": 1, "device": "cpu"},
               "DeepSVDD": {"latent_dim": 4, "hidden": (16,), "n_nets": 1, "epochs": 1, "device": "cpu"}}
CLASSES = {"VAE": VAE, "AEDetector": AEDetector, "DeepSVDD": DeepSVDD}


@st.composite
def bad_param(draw):
    cls = draw(st.sampled_from(sorted(CLASSES)))
    table = {**BAD_PARAMS, **{k: BAD_PARAMS.get(k, []) + v for k, v in EXTRA_BAD[cls].items()}}
    if cls == "DeepSVDD":
        table.pop("latent_dim")
        table["latent_dim"] = [0, -1, 2.5, "abc", 2**70] + EXTRA_BAD["DeepSVDD"]["latent_dim"]
    name = draw(st.sampled_from(sorted(table)))
    return cls, name, draw(st.sampled_from(table[name]))


@settings(max_examples=70, **SETTINGS)
@given(case=bad_param())
@example(case=("VAE", "random_state", "abc"))
@example(case=("VAE", "random_state", 2**64 + 1))
@example(case=("VAE", "lr", -1.0))
@example(case=("VAE", "epochs", -1))
@example(case=("VAE", "latent_dim", -1))
@example(case=("VAE", "beta", -1.0))
@example(case=("VAE", "device", "cuda:99"))
@example(case=("VAE", "latent_dim", 2**40))
@example(case=("AEDetector", "score_kind", "distance"))
@example(case=("DeepSVDD", "random_state", "abc"))
def test_constructor_params_out_of_range(table, case) -> None:
    cls_name, name, value = case
    params = {**BASE_PARAMS[cls_name], name: value}
    what = f"{cls_name}({', '.join(f'{k}={v!r}' for k, v in params.items())}).fit(X)"
    status, out = call(what, lambda: CLASSES[cls_name](**params).fit(np.asarray(table)))
    assert status == "error", f"{what} accepted {name}={value!r}"
    assert name in out, f"{what}: the error does not name the parameter {name!r}: {out!r}"
    assert "--" not in out, f"{what}: the error names a command-line flag, not the Python parameter: {out!r}"


# --- 2. the command line ----------------------------------------------------------------------------------

# flag → (a model that takes it, values outside what it allows)
BAD_FLAGS: dict[str, tuple[str, list[str]]] = {
    "--beta": ("vae", ["-1", "nan", "inf", "-inf", "x"]),
    "--latent-dim": ("vae", ["0", "-1", str(2**70), "1.5", "x"]),
    "--n-codes": ("vqvae", ["0", "-3", "x"]),
    "--epochs": ("vae", ["0", "-1", "10000001", str(2**70), "x"]),
    "--lr": ("vae", ["-1", "0", "nan", "inf", "1e400", "x"]),
    "--seed": ("vae", [str(2**70), str(2**63), "-1", "1.5"]),
    "--device": ("vae", ["cuda:99", "tpu", "cuda:", "cuda:-1", ""]),
    "--batch-size": ("vae", ["0", "-5", str(2**70)]),
    "--hidden": ("vae", ["0", "-1", "a,b", "400,0", "1.5"]),
    "--trim": ("vae", ["-0.1", "1", "nan"]),
    "--n-nets": ("deep-svdd", ["0", "1001"]),
    "--nu": ("deep-svdd", ["0", "2"]),
    "--eval-k": ("vae", ["-1", "x"]),
    "--patience": ("vae", ["0", "-2"]),
    "--compile": ("vae", ["maybe"]),
    "--binarize": ("vae", ["sometimes"]),
    "--likelihood": ("vae", ["poisson"]),
    "--activation": ("vae", ["nope"]),
    "--channels": ("vae", ["0", "x"]),
}
# flags that models do not take (model, flag, a value the flag would allow elsewhere)
FOREIGN_FLAGS = [("vae", "--n-codes", "5"), ("vae", "--nu", "0.2"), ("deep-svdd", "--beta", "2"),
                 ("ae", "--beta", "1"), ("vae", "--n-nets", "2"), ("ae", "--k", "3"), ("dcgan", "--likelihood", "gaussian"),
                 ("vae", "--noise", "mask:0.2"), ("deep-svdd", "--likelihood", "gaussian")]


@settings(max_examples=50, **SETTINGS)
@given(case=st.one_of(
    st.sampled_from(sorted(BAD_FLAGS)).flatmap(lambda f: st.tuples(st.just(BAD_FLAGS[f][0]), st.just(f),
                                                                   st.sampled_from(BAD_FLAGS[f][1]))),
    st.sampled_from(FOREIGN_FLAGS)))
@example(case=("vae", "--beta", "-1"))
@example(case=("vae", "--latent-dim", "0"))
@example(case=("vqvae", "--n-codes", "0"))
@example(case=("vae", "--epochs", "0"))
@example(case=("vae", "--lr", "-1"))
@example(case=("vae", "--seed", str(2**70)))
@example(case=("vae", "--device", "cuda:99"))
@example(case=("vae", "--n-codes", "5"))
def test_train_bad_flags(work, case) -> None:
    model, flag, value = case
    out = fresh(work, "train-")
    argv = ["train", model, "--data", "digits", "--epochs", "1", "--eval-k", "0", "--out", str(out)]
    if flag in argv:
        i = argv.index(flag)
        argv[i + 1] = value
    else:
        argv += [f"{flag}={value}"]
    rc, _, err = cli(argv)
    assert_one_line_error(argv, rc, err, flag)
    assert not out.exists(), f"latentforge {' '.join(argv)} failed but left {out} behind"


def _sample_case(draw, run: Path, work: Path) -> tuple[list[str], Path | None]:
    kind = draw(st.sampled_from(["n", "label", "out", "seed"]))
    n, label, seed, out = "4", None, None, str(fresh(work, "s-")) + ".npy"
    if kind == "n":
        n = draw(st.sampled_from(["0", "-1", "1.5", "abc", "", "1000001", str(2**70), "1e3"]))
    elif kind == "label":
        label = draw(st.sampled_from(["0", "3", "-1", "x"]))
    elif kind == "seed":
        seed = draw(st.sampled_from(["-1", str(2**63), str(2**70), "x", "1.5"]))
    else:
        which = draw(st.sampled_from(["folder", "suffix", "no parent", "run file"]))
        if which == "folder":
            folder = work / "a-folder.png"
            folder.mkdir(exist_ok=True)
            out = str(folder)
        elif which == "suffix":
            out = str(fresh(work, "s-")) + draw(st.sampled_from([".jpg", ".txt", "", ".npz", ".png.bak", ".csv"]))
        elif which == "no parent":
            out = str(work / "no-such-folder" / "s.png")
        else:  # an existing file of the run, with an otherwise bad request
            out = str(run / draw(st.sampled_from(["samples.png", "config.json", "model.safetensors"])))
            n = draw(st.sampled_from(["0", "-2"]))
    argv = ["sample", str(run), "-n", n, "--out", out]
    if label is not None:
        argv += ["--label", label]
    if seed is not None:
        argv += ["--seed", seed]
    return argv, Path(out)


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_sample_bad_flags(work, runs, data) -> None:
    run = runs["vae"] if data.draw(st.booleans(), label="vae run") else runs["svdd"]
    argv, out = _sample_case(data.draw, run, work)
    existed = out.exists()
    before = out.read_bytes() if existed and out.is_file() else None
    rc, _, err = cli(argv)
    assert_one_line_error(argv, rc, err)
    if existed and before is not None:
        assert out.read_bytes() == before, f"latentforge {' '.join(argv)} failed but changed {out}"
    elif not existed:
        assert not out.exists(), f"latentforge {' '.join(argv)} failed but wrote {out}"
    assert digest(runs["vae"]) == runs["vae_digest"] and digest(runs["svdd"]) == runs["svdd_digest"]


@settings(max_examples=25, **SETTINGS)
@given(k=st.one_of(st.integers(max_value=-1), st.integers(100_001, 2**80)).map(str)
       | st.sampled_from(["1.5", "abc", "", "1e3", "nan"]),
       iwae_n=st.sampled_from([None, "0", "-1"]))
@example(k="-1", iwae_n=None)
@example(k=str(2**70), iwae_n=None)
def test_evaluate_bad_k(runs, k, iwae_n) -> None:
    argv = ["evaluate", str(runs["vae"]), "--k", k] + ([] if iwae_n is None else ["--iwae-n", iwae_n])
    rc, _, err = cli(argv)
    assert_one_line_error(argv, rc, err)
    assert digest(runs["vae"]) == runs["vae_digest"]


# --- tampered run directories ------------------------------------------------------------------------------

COMMANDS = ("evaluate", "sample", "report", "resume")
ALL = frozenset(COMMANDS)
DELETE = "<deleted>"  # a key removed from the JSON object


def _json_set(file: str, path: tuple, value):
    """A tampering that sets (or deletes) ``path`` in the JSON object of ``file``."""
    def apply(run: Path, _rnd) -> None:
        p = run / file
        obj = json.loads(p.read_text())
        d = obj
        for k in path[:-1]:
            d = d[k]
        if value == DELETE:
            d.pop(path[-1], None)
        else:
            d[path[-1]] = value
        p.write_text(json.dumps(obj))
    return apply


def _write(file: str, content):
    def apply(run: Path, _rnd) -> None:
        (run / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    return apply


def _random_bytes(file: str):
    def apply(run: Path, rnd) -> None:
        (run / file).write_bytes(rnd)
    return apply


def _cut(file: str, keep_last: int = 0):
    """Truncate ``file`` to a random share of its bytes (losing at least ``keep_last`` + 1 bytes)."""
    def apply(run: Path, rnd) -> None:
        p = run / file
        raw = p.read_bytes()
        frac = int.from_bytes(rnd[:2].ljust(2, b"\0"), "big") / 65536
        p.write_bytes(raw[: min(int(len(raw) * frac), len(raw) - 1 - keep_last)])
    return apply


def _delete(file: str):
    def apply(run: Path, _rnd) -> None:
        (run / file).unlink()
    return apply


def _weights(how: str):
    def apply(run: Path, _rnd) -> None:
        from safetensors.torch import load_file, save_file

        w = run / "model.safetensors"
        t = load_file(str(w))
        name = min(t)
        t[name] = torch.full_like(t[name], math.nan) if how == "nan" else torch.zeros(3, 3)
        save_file(t, str(w), metadata={"format": "pt"})
    return apply


# name → (tampering, commands that cannot succeed on the damaged run). The other commands may succeed (they do
# not need what was damaged, or they rewrite it), but where they fail they fail cleanly and change nothing.
TAMPERS: dict[str, tuple] = {}
for _text in ("[1, 2, 3]", "[]", "null", "42", '"vae"', "true", "{}", '{"model": "vae"}', "", "{", b"\xff\xfe"):
    TAMPERS[f"config.json := {_text!r}"] = (_write("config.json", _text), ALL)
TAMPERS["config.json := random bytes"] = (_random_bytes("config.json"), ALL)
TAMPERS["config.json truncated"] = (_cut("config.json", keep_last=1), ALL)  # its last 2 bytes are "}\n"
for _v in ("no-such-model", 5, None, [], "", "VAE", "deep-svdd", "ae", "dcgan", "mult-vae", DELETE):
    TAMPERS[f"config.json model := {_v!r}"] = (_json_set("config.json", ("model",), _v), ALL)
for _v in ([], "x", None, 5, DELETE):
    TAMPERS[f"config.json model_config := {_v!r}"] = (_json_set("config.json", ("model_config",), _v), ALL)
BAD_MODEL_CONFIG: dict[str, list] = {
    "latent_dim": [0, -1, "20", 20.5, None, True, [20], {}, 2**70, 2**40, 21],
    "hidden": [[], [0], "400", [400.5], None, [-1], [2**40], 400, [401], [400, 400]],
    "input_shape": [[], [1, 8], [0, 8, 8], "x", None, [1, -8, 8], [1, 8, 8, 8], [2**40, 8, 8], [1, 8, 9], DELETE],
    "likelihood": ["nope", 5, None],
    "activation": ["nope", 1],
    "arch": ["nope", "conv"],
    "beta": [-1, "x", None],
    "trim": [1.0, -1],
    "scaling": ["x"],
    "channels": [[0], "x"],
    "bogus": [1],
}
for _k, _vs in BAD_MODEL_CONFIG.items():
    for _v in _vs:
        TAMPERS[f"model_config.{_k} := {_v!r}"] = (_json_set("config.json", ("model_config", _k), _v), ALL)
NOT_RESUME = ALL - {"resume"}  # --resume continues from checkpoint/ and writes model.safetensors anew
TAMPERS["model.safetensors truncated"] = (_cut("model.safetensors"), NOT_RESUME)
TAMPERS["model.safetensors := random bytes"] = (_random_bytes("model.safetensors"), NOT_RESUME)
TAMPERS["model.safetensors deleted"] = (_delete("model.safetensors"), NOT_RESUME)
TAMPERS["model.safetensors := NaN weights"] = (_weights("nan"), NOT_RESUME)
TAMPERS["model.safetensors := a tensor of the wrong shape"] = (_weights("shape"), NOT_RESUME)
for _v in (None, 5, [], {}, "no-such-set", "/no/such/file.npy", "", DELETE):  # sample and report do not read data
    TAMPERS[f"config.json data := {_v!r}"] = (_json_set("config.json", ("data",), _v), {"evaluate", "resume"})
for _v in ("x", [1], 5, {"bogus": 1}, {"min_rating": "x"}):
    TAMPERS[f"config.json data_options := {_v!r}"] = (
        _json_set("config.json", ("data_options",), _v), {"evaluate", "resume"} if isinstance(_v, dict) else {"resume"})
for _k, _v in (("lr", -1), ("lr", "x"), ("batch_size", 0), ("seed", -1), ("seed", "x"), ("compile", "x"),
               ("binarize", "x"), ("patience", 0), ("batch_size", 2**70), ("eval_batch_size", 0)):
    TAMPERS[f"config.json train.{_k} := {_v!r}"] = (_json_set("config.json", ("train", _k), _v), {"resume"})
for _text in ("[]", "null", "{", "", "42", b"\xff"):
    TAMPERS[f"checkpoint/state.json := {_text!r}"] = (_write("checkpoint/state.json", _text), {"resume"})
for _k, _v in (("epoch", "1"), ("epoch", 1.5), ("epoch", -1), ("epoch", None), ("epoch", 7), ("epoch", DELETE),
               ("history", "x"), ("history", 5), ("history", [1, 2]), ("history", None), ("history", DELETE),
               ("optimizers", DELETE), ("optimizers", "x"), ("optimizers", {}), ("optimizers", [])):
    TAMPERS[f"checkpoint/state.json {_k} := {_v!r}"] = (_json_set("checkpoint/state.json", (_k,), _v), {"resume"})
for _f in ("checkpoint/train_state.safetensors", "checkpoint/model.safetensors"):
    TAMPERS[f"{_f} truncated"] = (_cut(_f), {"resume"})
    TAMPERS[f"{_f} := random bytes"] = (_random_bytes(_f), {"resume"})
    TAMPERS[f"{_f} deleted"] = (_delete(_f), {"resume"})
for _text in ("[]", "{", "null", b"\xff"):  # evaluate updates metrics.json; report reads it
    TAMPERS[f"metrics.json := {_text!r}"] = (_write("metrics.json", _text), frozenset())
# what each command is tried with: what it reads (checkpoint/ is read by --resume only)
TRIED = {c: sorted(n for n in TAMPERS if c == "resume" or not n.startswith("checkpoint/")) for c in COMMANDS}


def _command_argv(command: str, run: Path, work: Path) -> tuple[list[str], Path | None]:
    if command == "evaluate":
        return ["evaluate", str(run), "--k", "0", "--iwae-n", "10"], None
    if command == "sample":
        out = fresh(work, "tampered-sample-").with_suffix(".npy")
        return ["sample", str(run), "-n", "2", "--out", str(out)], out
    if command == "report":
        return ["report", str(run)], None
    return ["train", "--resume", "--out", str(run), "--epochs", "2", "--eval-k", "0", "--device", "cpu"], None


def tamper_and_run(work: Path, source: Path, command: str, name: str, rnd: bytes) -> None:
    """Damage a copy of ``source`` by TAMPERS[name], run ``command`` on it and check the outcome."""
    tamper, must_fail = TAMPERS[name]
    run = fresh(work, f"tampered-{command}-")
    shutil.copytree(source, run)
    try:
        tamper(run, rnd)
        before = digest(run)
        argv, out = _command_argv(command, run, work)
        rc, _, err = cli(argv)
        if rc == 0 and command not in must_fail:
            return
        what = f"[{name}] latentforge {' '.join(argv)}"
        assert rc != 0, f"{what} succeeded on a damaged run"
        assert_one_line_error([f"[{name}]", *argv], rc, err)
        assert_unchanged(before, run, f"{what} (failed)")
        if out is not None:
            assert not out.exists(), f"{what} failed but wrote {out}"
    finally:
        shutil.rmtree(run, ignore_errors=True)


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(TRIED["evaluate"]), rnd=st.binary(max_size=48))
def test_tampered_run_evaluate(work, runs, name, rnd) -> None:
    tamper_and_run(work, runs["vae"], "evaluate", name, rnd)


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(TRIED["sample"]), rnd=st.binary(max_size=48))
def test_tampered_run_sample(work, runs, name, rnd) -> None:
    tamper_and_run(work, runs["vae"], "sample", name, rnd)


@settings(max_examples=60, **SETTINGS)
@given(name=st.sampled_from(TRIED["report"]), rnd=st.binary(max_size=48))
def test_tampered_run_report(work, runs, name, rnd) -> None:
    tamper_and_run(work, runs["vae"], "report", name, rnd)


@settings(max_examples=50, **SETTINGS)
@given(name=st.sampled_from(TRIED["resume"]), rnd=st.binary(max_size=48))
def test_tampered_run_resume(work, runs, name, rnd) -> None:
    tamper_and_run(work, runs["vae"], "resume", name, rnd)


# --- 3. huge values scored --------------------------------------------------------------------------------

HUGE = st.sampled_from([1e30, -1e30, 3e38, -3e38, 1e300])


@settings(max_examples=25, **SETTINGS)
@given(n=st.integers(1, 8), data=st.data())
def test_score_cli_huge_value(work, runs, table, n, data) -> None:
    use_vae = data.draw(st.booleans(), label="vae run")
    row, value = data.draw(st.integers(0, n - 1), label="row"), data.draw(HUGE, label="value")
    col = data.draw(st.integers(0, 63 if use_vae else TABLE_COLS - 1), label="col")
    case = fresh(work, "score-")
    case.mkdir()
    run = case / "run"
    shutil.copytree(runs["vae"] if use_vae else runs["svdd"], run)
    if use_vae:  # digits images in [0, 1], one pixel huge
        x = np.full((n, 64), 0.5)
        x[row, col] = value
        src = case / "x.npy"
        np.save(src, x.reshape(n, 8, 8))
    else:
        x = np.array(table[:n], dtype=np.float64)
        x[row, col] = value
        src = case / "x.csv"
        pd.DataFrame(x, columns=list("abcde")).to_csv(src, index=False)
    out = case / "scores.csv"
    out.write_text("precious\n")
    before = digest(run)
    argv = ["score", str(run), "--data", str(src), "--out", str(out)]
    rc, _, err = cli(argv)
    what = f"score of {n} rows with {value:g} at row {row}, column {col} ({'vae digits' if use_vae else 'deep-svdd'})"
    if rc == 0:
        scores = pd.read_csv(out)
        assert len(scores) == n, what
        assert np.isfinite(scores["score"].to_numpy()).all(), f"{what}: non-finite scores written: {scores}"
    else:
        line = assert_one_line_error(argv, rc, err)
        assert row in rows_named(line), f"{what}: the error does not name row {row}: {line!r}"
        assert out.read_text() == "precious\n", f"{what}: failed but changed --out"
    changed = [k for k, h in before.items() if digest(run).get(k) != h]
    assert not changed, f"{what}: changed files of the run: {changed}"


@pytest.mark.parametrize("est_name", ["VAE", "AEDetector", "DeepSVDD"])
@settings(max_examples=20, **SETTINGS)
@given(n=st.integers(1, 8), data=st.data())
def test_decision_function_huge_value(fitted, table, est_name, n, data) -> None:
    row, col = data.draw(st.integers(0, n - 1), label="row"), data.draw(st.integers(0, TABLE_COLS - 1), label="col")
    value = data.draw(HUGE, label="value")
    x = np.array(table[:n], dtype=np.float64)
    x[row, col] = value
    what = f"{est_name}.decision_function({n} rows with {value:g} at row {row}, column {col})"
    status, out = call(what, fitted[est_name].decision_function, x)
    if status == "error":
        assert row in rows_named(out), f"{what}: the error does not name row {row}: {out!r}"
        return
    assert out.shape == (n,), what
    assert np.isfinite(out).all(), f"{what} returned non-finite scores {out} (no error naming row {row})"
