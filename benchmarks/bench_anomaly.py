"""Anomaly detection: latentforge's detectors against PyOD's, measured in the same run.

    python benchmarks/bench_anomaly.py odds            # the ten ODDS tables, seeds 0 1 2
    python benchmarks/bench_anomaly.py mnist           # one-class MNIST (Ruff et al. 2018 protocol)

ODDS protocol: stratified 70/30 split per seed, fit on the training part without labels, AUROC and
average precision (AP) on the test part. Every detector runs with its default settings (no per-table
tuning: users have no labels to tune on). For our detectors a second table gives what their fitted
default threshold (``fpr:0.01``) does on the test part: the share of its normal rows flagged (the
realised false-alarm rate; ``fpr:0.01`` promises at most 1 % of rows like the held-out slice) and the share
of its anomalies flagged (detection rate), with the size and the anomaly share of the held-out training
slice the threshold came from; a third table gives the same after ``calibrate`` on that slice's normal
rows (what ``fpr:0.01`` then promises for normal rows is printed under it). The
classical peers get standardised inputs (scikit-learn's StandardScaler); PyOD's deep detectors
standardise inside, as they do by default.

One-class MNIST: train on one digit's training images, score all 10,000 test images, anomaly = any
other digit; AUROC per digit and the mean.

Needs PyOD in the environment (``pip install pyod`` after torch==2.13.0). Results go to stdout as
Markdown tables; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from latentforge.data import load_data  # noqa: E402
from latentforge.data.store import data_dirs  # noqa: E402
from latentforge.detectors import AEDetector, DeepSVDD, EnsembleDetector  # noqa: E402

TABLES = ["18_Ionosphere", "23_mammography", "28_pendigits", "2_annthyroid", "30_satellite", "32_shuttle",
          "38_thyroid", "42_WBC", "6_cardio", "arrhythmia"]

Scorer = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (X_train, X_test, seed) -> test scores


def odds_dir() -> Path:
    for d in data_dirs():
        if (d / "odds").is_dir():
            return d / "odds"
    sys.exit("the ODDS tables were not found: set LATENTFORGE_DATA_DIR to the folder holding odds/")


def load_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    d = odds_dir()
    if name == "arrhythmia":
        from scipy.io import loadmat

        m = loadmat(d / "arrhythmia.mat")
        return m["X"].astype(np.float64), m["y"].ravel().astype(int)
    z = np.load(d / f"{name}.npz", allow_pickle=False)
    return z["X"].astype(np.float64), z["y"].astype(int)


OURS: dict[str, Callable[[int], object]] = {
    "lf vae (elbo)": lambda s: AEDetector(kind="vae", random_state=s, device="cpu"),
    "lf ae (recon)": lambda s: AEDetector(kind="ae", random_state=s, device="cpu"),
    "lf deep-svdd": lambda s: DeepSVDD(random_state=s, device="cpu"),
    "lf ensemble": lambda s: EnsembleDetector(random_state=s, device="cpu"),
    "lf deep-svdd (1 net)": lambda s: DeepSVDD(n_nets=1, random_state=s, device="cpu"),
}


def pyod(cls_path: str, scale: bool, **kw) -> Scorer:
    def score(xtr, xte, seed):
        import importlib

        mod, name = cls_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(mod), name)
        if scale:
            sc = StandardScaler().fit(xtr)
            xtr, xte = sc.transform(xtr), sc.transform(xte)
        extra = {"n_features": xtr.shape[1]} if name == "DeepSVDD" else {}
        try:
            det = cls(random_state=seed, **extra, **kw)
        except TypeError:
            det = cls(**extra, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det.fit(xtr)
            s = det.decision_function(xte)
        return np.nan_to_num(np.asarray(s, dtype=np.float64), nan=0.0, posinf=1e300, neginf=-1e300)
    return score


def pca_reconstruction(variance: float = 0.9) -> Scorer:
    """Squared reconstruction error from the principal components that keep ``variance`` of the
    training variance (scikit-learn's PCA on the inputs as given: raw grey levels for images)."""
    def score(xtr, xte, seed):
        from sklearn.decomposition import PCA

        pca = PCA(n_components=variance, random_state=seed).fit(xtr)
        return ((pca.inverse_transform(pca.transform(xte)) - xte) ** 2).sum(1)
    return score


PEERS: dict[str, Scorer] = {
    "IForest": pyod("pyod.models.iforest.IForest", True),
    "ECOD": pyod("pyod.models.ecod.ECOD", True),
    "OCSVM": pyod("pyod.models.ocsvm.OCSVM", True),
    "PCA": pyod("pyod.models.pca.PCA", True),
    "PCA (unscaled)": pyod("pyod.models.pca.PCA", False, standardization=False),
    "PCA recon error": pca_reconstruction(0.9),
    "PyOD AutoEncoder": pyod("pyod.models.auto_encoder.AutoEncoder", False, verbose=0),
    "PyOD VAE": pyod("pyod.models.vae.VAE", False, verbose=0),
    "PyOD DeepSVDD": pyod("pyod.models.deep_svdd.DeepSVDD", False, verbose=0),
}


def promised_rate(n: int, rate: float = 0.01) -> float:
    """What ``fpr:rate`` promises on n calibration rows: (n + 1 − k)/(n + 1) with k = ⌈(n + 1)(1 − rate)⌉,
    or 1/(n + 1) when n is too small for k ≤ n (the largest score is used)."""
    k = min(int(np.ceil((n + 1) * (1 - rate) - 1e-9)), n)
    return (n + 1 - k) / (n + 1)


def fit_ours(det: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, seed: int):
    """Test scores of one of our detectors, and what its fitted default threshold does: the share of
    the test part's normal rows and of its anomalies that ``predict`` flags, and the held-out training
    slice the threshold came from (rows, share of anomalies in it). Then the same after ``calibrate`` on
    that slice's normal rows (labels used only to pick them: a user who checked a slice by hand)."""
    xtr, xte = xtr.astype(np.float32), xte.astype(np.float32)
    model = OURS[det](seed).fit(xtr)
    held = ytr[model._held_rows]
    out = {"false_alarm": model.predict(xte[yte == 0]).mean(), "detection": model.predict(xte[yte == 1]).mean(),
           "held_rows": len(held), "held_anomalies": held.mean()}
    scores = model.decision_function(xte)
    normal_held = model._held_rows[held == 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too few rows for 1 %: recorded as promised_rate instead
        model.calibrate(xtr[normal_held])
    out.update(cal_false_alarm=model.predict(xte[yte == 0]).mean(), cal_detection=model.predict(xte[yte == 1]).mean(),
               cal_rows=len(normal_held), cal_promised=promised_rate(len(normal_held)))
    return scores, out


def run_odds(names: list[str], seeds: list[int]) -> dict:
    res: dict = {n: {} for n in names}
    for det in names:
        t0 = time.time()
        for table in TABLES:
            x, y = load_table(table)
            au, ap, thr = [], [], []
            for seed in seeds:
                xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
                torch.manual_seed(seed)
                if det in OURS:
                    s, t = fit_ours(det, xtr, ytr, xte, yte, seed)
                    thr.append(t)
                else:
                    s = PEERS[det](xtr, xte, seed)
                au.append(roc_auc_score(yte, s))
                ap.append(average_precision_score(yte, s))
            res[det][table] = {"auroc": float(np.mean(au)), "ap": float(np.mean(ap))}
            if thr:  # ours: the threshold's rates, mean over seeds
                res[det][table].update({k: float(np.mean([t[k] for t in thr])) for k in thr[0]})
        res[det]["_seconds"] = time.time() - t0
        mean_au = np.mean([res[det][t]["auroc"] for t in TABLES])
        mean_ap = np.mean([res[det][t]["ap"] for t in TABLES])
        print(f"{det:<18} mean AUROC {mean_au:.3f}  AP {mean_ap:.3f}  ({res[det]['_seconds']:.0f} s)", flush=True)
    return res


def odds_markdown(res: dict) -> str:
    short = [t.split("_", 1)[-1] for t in TABLES]
    lines = ["| detector | " + " | ".join(short) + " | **mean AUROC** | **mean AP** | wall s |",
             "|---" * (len(TABLES) + 4) + "|"]
    for det, r in res.items():
        au = [r[t]["auroc"] for t in TABLES]
        ap = [r[t]["ap"] for t in TABLES]
        lines.append(f"| {det} | " + " | ".join(f"{a:.3f}" for a in au)
                     + f" | **{np.mean(au):.3f}** | **{np.mean(ap):.3f}** | {r['_seconds']:.0f} |")
    return "\n".join(lines)


def threshold_markdown(res: dict) -> str:
    """Our detectors' default threshold on the test part: false alarms among normal rows / detected
    anomalies, in %, mean over seeds; then the held-out slice (rows, % anomalies) it was set on, the
    same for all of ours (it depends only on the seed and the number of training rows)."""
    ours = {det: r for det, r in res.items() if "false_alarm" in r[TABLES[0]]}
    if not ours:
        return ""
    short = [t.split("_", 1)[-1] for t in TABLES]
    lines = ["| `fpr:0.01` threshold: false alarms % / detected % | " + " | ".join(short) + " | **mean** |",
             "|---" * (len(TABLES) + 2) + "|"]
    for det, r in ours.items():
        fa = [100 * r[t]["false_alarm"] for t in TABLES]
        hit = [100 * r[t]["detection"] for t in TABLES]
        lines.append(f"| {det} | " + " | ".join(f"{a:.1f} / {h:.1f}" for a, h in zip(fa, hit))
                     + f" | **{np.mean(fa):.1f} / {np.mean(hit):.1f}** |")
    r = next(iter(ours.values()))
    lines.append("| held-out slice: rows / % anomalies | "
                 + " | ".join(f"{r[t]['held_rows']:.0f} / {100 * r[t]['held_anomalies']:.1f}" for t in TABLES) + " | |")
    lines += ["", "| `fpr:0.01` calibrated on the slice's normal rows: false alarms % / detected % | "
              + " | ".join(short) + " | **mean** | **mean, tables with ≥ 99 rows** |", "|---" * (len(TABLES) + 3) + "|"]
    big = [t for t in TABLES if r[t]["cal_rows"] >= 99]
    for det, r in ours.items():
        fa = {t: 100 * r[t]["cal_false_alarm"] for t in TABLES}
        hit = {t: 100 * r[t]["cal_detection"] for t in TABLES}
        lines.append(f"| {det} | " + " | ".join(f"{fa[t]:.1f} / {hit[t]:.1f}" for t in TABLES)
                     + f" | **{np.mean(list(fa.values())):.1f} / {np.mean(list(hit.values())):.1f}** | "
                     f"**{np.mean([fa[t] for t in big]):.2f} / {np.mean([hit[t] for t in big]):.1f}** |")
    lines.append("| calibration rows / promised false alarms % | "
                 + " | ".join(f"{r[t]['cal_rows']:.0f} / {100 * r[t]['cal_promised']:.2f}" for t in TABLES)
                 + f" | | {100 * np.mean([r[t]['cal_promised'] for t in big]):.2f} |")
    return "\n".join(lines)


def run_mnist(names: list[str], digits: list[int]) -> dict:
    splits = load_data("mnist")
    xtr_all, ytr_all = splits.train.x, splits.train.y.astype(int)
    xte, yte = splits.test.x, splits.test.y.astype(int)
    res: dict = {n: {} for n in names}
    for det in names:
        t0 = time.time()
        for d in digits:
            xtr = xtr_all[ytr_all == d]
            if det in OURS:
                s = OURS[det](0).fit(xtr).decision_function(xte)
            else:  # the peers see flat grey levels in [0, 1]
                flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
                s = PEERS[det](flat(xtr), flat(xte), 0)
            res[det][d] = float(roc_auc_score(yte != d, s))
            print(f"  {det} digit {d}: AUROC {res[det][d]:.4f}", flush=True)
        res[det]["_seconds"] = time.time() - t0
        print(f"{det:<18} mean AUROC {np.mean([res[det][d] for d in digits]):.4f} ({res[det]['_seconds']:.0f} s)", flush=True)
    return res


def mnist_markdown(res: dict, digits: list[int]) -> str:
    lines = ["| detector | " + " | ".join(str(d) for d in digits) + " | **mean** | wall s |",
             "|---" * (len(digits) + 3) + "|"]
    for det, r in res.items():
        vals = [r[d] for d in digits]
        lines.append(f"| {det} | " + " | ".join(f"{v:.3f}" for v in vals)
                     + f" | **{np.mean(vals):.3f}** | {r['_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=("odds", "mnist"))
    ap.add_argument("--detectors", default=None, help="comma-separated names (default: all of ours and the peers)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    default = [*OURS, *PEERS] if args.task == "odds" else [*OURS, "PCA (unscaled)", "PCA recon error", "IForest",
                                                                      "PyOD AutoEncoder", "PyOD DeepSVDD"]
    names = args.detectors.split(",") if args.detectors else default
    unknown = [n for n in names if n not in OURS and n not in PEERS]
    if unknown:
        sys.exit(f"unknown detectors {unknown}; choose from {[*OURS, *PEERS]}")
    t0 = time.time()
    if args.task == "odds":
        res = run_odds(names, [int(s) for s in args.seeds.split(",")])
        print(odds_markdown(res))
        if det_table := threshold_markdown(res):
            print("\n" + det_table)
    else:
        digits = [int(d) for d in args.digits.split(",")]
        res = run_mnist(names, digits)
        print(mnist_markdown(res, digits))
    print(f"total wall time {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
