"""Using what a model learned: embed, cluster (and DEC/IDEC refinement), denoise, plot — the functions and the verbs."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits, make_blobs

from latentforge import AutoEncoder, DenoisingAutoEncoder
from latentforge.cli import main
from latentforge.data import from_array
from latentforge.errors import UserError
from latentforge.metrics.reconstruction import psnr
from latentforge.models.dec import DeepClustering
from latentforge.metrics.representation import clustering_scores
from latentforge.tasks.represent import cluster_codes, denoise, embed, refine


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32).reshape(-1, 1, 8, 8), y


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, args in {"vae": ["vae", "--epochs", "3"], "ae2": ["ae", "--epochs", "3", "--latent-dim", "2"]}.items():
        assert main(["train", *args, "--data", "digits", "--out", str(root / name)]) == 0
    return root


def test_clustering_scores_on_a_known_answer() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = clustering_scores(y, np.array([5, 5, 3, 3, 9, 9]))  # cluster names do not matter
    assert perfect == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    one_wrong = clustering_scores(y, np.array([0, 0, 1, 2, 2, 2]))
    assert one_wrong["acc"] == pytest.approx(5 / 6)
    assert one_wrong["nmi"] < 1 and one_wrong["ari"] < 1
    with pytest.raises(ValueError):
        clustering_scores(y, y[:3])


@pytest.mark.parametrize("method", ["kmeans", "gmm", "umap-gmm"])
def test_every_method_finds_well_separated_groups(method: str) -> None:
    z, y = make_blobs(n_samples=300, centers=4, n_features=5, cluster_std=0.5, random_state=0)
    found = cluster_codes(z, 4, method=method, seed=0)
    assert clustering_scores(y, found.labels)["acc"] == 1.0
    assert (found.confidence is None) == (method == "kmeans")
    again = cluster_codes(z, 4, method=method, seed=0)
    assert np.array_equal(found.labels, again.labels)  # seeded: the same codes give the same clusters


def test_cluster_codes_refuses_what_it_cannot_do() -> None:
    z = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(UserError, match="--k"):
        cluster_codes(z, 1)
    with pytest.raises(UserError, match="more clusters than rows"):
        cluster_codes(z, 21)
    with pytest.raises(UserError, match="NaN"):
        cluster_codes(np.where(np.eye(20, 3) > 0, np.nan, z), 2)
    with pytest.raises(UserError, match="--method"):
        cluster_codes(z, 2, method="dbscan")


def test_embed_is_chunked_deterministic_and_equals_transform(digits) -> None:
    X, y = digits
    est = AutoEncoder(latent_dim=6, epochs=2, random_state=0).fit(X)
    ds = from_array(X, y)
    z = embed(est.model_, ds)
    assert z.shape == (len(X), 6) and z.dtype == np.float32
    np.testing.assert_array_equal(z, embed(est.model_, ds))
    np.testing.assert_allclose(z, est.transform(X), atol=1e-5)


def test_idec_refinement_sharpens_clusters_and_trains_through_the_one_trainer(digits) -> None:
    X, y = digits
    est = AutoEncoder(latent_dim=10, epochs=15, random_state=0).fit(X)
    ds = from_array(X, y)
    before = embed(est.model_, ds)
    start = cluster_codes(before, 10, seed=0)
    centres = np.stack([before[start.labels == c].mean(0) for c in range(10)])
    first_q = DeepClustering(copy.deepcopy(est.model_), centres).predict_proba(ds)
    refined = refine(est.model_, ds, start, epochs=5, gamma=0.1, seed=0, tol=0)
    assert refined.method == "kmeans+idec" and len(refined.history) == 5
    assert {"train_kl", "train_model_loss", "changed"} <= set(refined.history[-1])
    assert refined.confidence.mean() > float(first_q.max(1).values.mean()) + 0.02  # self-training sharpens
    assert not np.allclose(before, embed(est.model_, ds))  # the encoder itself moved
    assert clustering_scores(y, refined.labels)["acc"] > 0.5
    dec = refine(est.model_, ds, start, epochs=1, gamma=0.0)
    assert dec.method == "kmeans+dec" and "train_model_loss" not in dec.history[0]
    settled = refine(est.model_, ds, start, epochs=50, gamma=0.1, tol=0.05)  # DEC's stopping rule, no labels
    assert len(settled.history) < 50 and settled.history[-1]["changed"] < 0.05
    assert all(h["changed"] >= 0.05 for h in settled.history[:-1])
    assert [h["epoch"] for h in settled.history] == list(range(1, len(settled.history) + 1))
    with pytest.raises(UserError, match="--refine-epochs"):
        refine(est.model_, ds, start, epochs=0)


def test_a_denoising_autoencoder_improves_psnr(digits) -> None:
    X, _ = digits
    rng = np.random.default_rng(0)
    noisy = np.clip(X + 0.3 * rng.standard_normal(X.shape), 0, 1).astype(np.float32)
    dae = DenoisingAutoEncoder(latent_dim=32, noise="gaussian:0.3", epochs=30, random_state=0).fit(X[:1500])
    clean = denoise(dae.model_, from_array(noisy[1500:]))
    assert clean.shape == X[1500:].shape
    assert psnr(clean, X[1500:]) > psnr(noisy[1500:], X[1500:]) + 2  # dB


def test_embed_and_denoise_need_the_capability(digits) -> None:
    from latentforge.models import model_class

    gan = model_class("dcgan")(input_shape=[1, 8, 8])
    with pytest.raises(UserError, match="no encoder"):
        embed(gan, from_array(digits[0][:4]))
    with pytest.raises(UserError, match="does not reconstruct"):
        denoise(gan, from_array(digits[0][:4]))


def test_embed_cluster_commands(runs, tmp_path, capsys) -> None:
    assert main(["embed", str(runs / "vae"), "--split", "all", "--out", str(tmp_path / "z.npy")]) == 0
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (1797, 20)
    assert main(["embed", str(runs / "vae"), "--out", str(tmp_path / "z.csv")]) == 0
    table = pd.read_csv(tmp_path / "z.csv")
    assert list(table.columns) == [f"z{i}" for i in range(20)] and len(table) < 1797  # the test split
    capsys.readouterr()
    assert main(["cluster", str(runs / "vae"), "--k", "10", "--method", "gmm", "--json",
                 "--out", str(tmp_path / "c.csv"), "--map", str(tmp_path / "m.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == len(table) and sum(result["sizes"]) == len(table) and 0 < result["acc"] <= 1
    assignments = pd.read_csv(tmp_path / "c.csv")
    assert list(assignments.columns) == ["index", "cluster", "confidence", "label"]
    assert clustering_scores(assignments["label"], assignments["cluster"])["acc"] == pytest.approx(result["acc"])
    assert (tmp_path / "m.png").stat().st_size > 0


def test_cluster_refines_with_augmented_images(runs, tmp_path, capsys) -> None:
    work = tmp_path / "ae2"
    shutil.copytree(runs / "ae2", work)  # --refine trains the encoder of the model it loaded, not the run's files
    capsys.readouterr()
    assert main(["cluster", str(work), "--k", "10", "--refine", "--refine-epochs", "2", "--gamma", "0",
                 "--refine-lr", "1e-4", "--augment", "shift:1,rotate:10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "kmeans+dec" and 0 < result["acc"] <= 1
    assert main(["cluster", str(work), "--k", "10", "--refine", "--refine-epochs", "1", "--recluster", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "kmeans+idec+kmeans"  # (γ 0.1 by default)
    assert main(["cluster", str(work), "--k", "10", "--recluster"]) == 2
    assert "add --refine" in capsys.readouterr().err
    assert main(["cluster", str(work), "--k", "10", "--augment", "shift:1"]) == 2
    assert "add --refine" in capsys.readouterr().err
    assert main(["cluster", str(work), "--k", "10", "--refine", "--augment", "shake:1"]) == 2
    assert "unknown change 'shake'" in capsys.readouterr().err
    assert main(["cluster", str(work), "--k", "10", "--refine", "--refine-lr", "0"]) == 2
    assert "--refine-lr must be" in capsys.readouterr().err
    assert main(["cluster", str(work), "--k", "10", "--refine", "--refine-tol", "1.5"]) == 2
    assert "--refine-tol must be" in capsys.readouterr().err


def test_cluster_saves_the_refined_model_as_a_run(runs, tmp_path, capsys) -> None:
    saved = tmp_path / "refined"
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--refine", "--refine-epochs", "2", "--gamma", "0",
                 "--refine-tol", "0", "--save", str(saved), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["saved"] == str(saved)
    config = json.loads((saved / "config.json").read_text())
    assert config["refined_from"] == str(runs / "ae2") and config["refinement"]["epochs"] == 2
    assert config["model_config"] == json.loads((runs / "ae2" / "config.json").read_text())["model_config"]
    for run, name in ((runs / "ae2", "before.npy"), (saved, "after.npy")):
        assert main(["embed", str(run), "--out", str(tmp_path / name)]) == 0
    before, after = np.load(tmp_path / "before.npy"), np.load(tmp_path / "after.npy")
    assert before.shape == after.shape and not np.allclose(before, after)  # the refined encoder, not the original
    assert main(["cluster", str(saved), "--k", "10", "--json"]) == 0  # a run like any other
    assert main(["report", str(saved)]) == 0
    page = (saved / "report.html").read_text()
    assert "self-trained on its own clusters" in page and "0 epochs" not in page and "s training" not in page
    capsys.readouterr()
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--refine", "--save", str(saved)]) == 2
    assert "not empty" in capsys.readouterr().err  # checked before the refinement, nothing overwritten
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--refine", "--save", str(runs / "ae2")]) == 2
    assert "is the run being refined" in capsys.readouterr().err
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--save", str(tmp_path / "new")]) == 2
    assert "add --refine" in capsys.readouterr().err and not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--refine", "--save", str(tmp_path / "afile" / "sub")]) == 2
    assert "is a file, so no folder can be made" in capsys.readouterr().err
    assert main(["cluster", str(runs / "ae2"), "--k", "10", "--refine", "--save", str(tmp_path / "m.png"),
                 "--map", str(tmp_path / "m.png")]) == 2
    assert "another output of this command" in capsys.readouterr().err


def test_a_failed_save_leaves_nothing_behind(runs, tmp_path, monkeypatch) -> None:
    from latentforge import checkpoint
    from latentforge.run import load_run
    from latentforge.tasks.represent import save_refined

    model, _ = load_run(runs / "ae2")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_tensors", full_disk)
    with pytest.raises(UserError, match=f"cannot save the model in {tmp_path / 'out'}: No space left"):
        save_refined(model, runs / "ae2", tmp_path / "out", {"k": 10})
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary one


def test_a_file_is_used_whole_and_in_order(runs, tmp_path, digits) -> None:
    X = digits[0][:50]
    np.save(tmp_path / "x.npy", X)
    assert main(["embed", str(runs / "ae2"), "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npy")]) == 0
    est = AutoEncoder.from_pretrained(runs / "ae2")
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), est.transform(X), atol=1e-5)


def test_denoise_command_reports_psnr_against_the_clean_rows(runs, tmp_path, digits, capsys) -> None:
    X = digits[0][:40]
    noisy = np.clip(X + 0.3 * np.random.default_rng(1).standard_normal(X.shape), 0, 1).astype(np.float32)
    np.save(tmp_path / "clean.npy", X)
    np.save(tmp_path / "noisy.npy", noisy)
    assert main(["denoise", str(runs / "vae"), "--data", str(tmp_path / "noisy.npy"), "--out",
                 str(tmp_path / "d.npy"), "--clean", str(tmp_path / "clean.npy")]) == 0
    out = capsys.readouterr().out
    assert "noisy: PSNR" in out and "denoised: PSNR" in out and "SSIM" in out
    assert np.load(tmp_path / "d.npy").shape == (40, 1, 8, 8)
    assert main(["denoise", str(runs / "vae"), "--data", str(tmp_path / "noisy.npy"), "--out",
                 str(tmp_path / "d.png")]) == 0
    np.save(tmp_path / "short.npy", X[:10])
    assert main(["denoise", str(runs / "vae"), "--data", str(tmp_path / "noisy.npy"), "--out",
                 str(tmp_path / "e.npy"), "--clean", str(tmp_path / "short.npy")]) == 2
    assert "same rows" in capsys.readouterr().err


@pytest.mark.parametrize("run,kind", [("vae", "latent-map"), ("vae", "traversals"), ("vae", "interpolations"),
                                      ("ae2", "manifold"), ("ae2", "latent-map")])
def test_plot_writes_each_picture(runs, tmp_path, run: str, kind: str) -> None:
    from PIL import Image

    out = tmp_path / f"{kind}.png"
    args = ["--color", "cluster", "--projection", "pca"] if kind == "latent-map" else []
    assert main(["plot", str(runs / run), kind, "--out", str(out), *args]) == 0
    w, h = Image.open(out).size
    assert w > 50 and h > 50


def test_use_commands_refuse_bad_requests(runs, tmp_path, capsys) -> None:
    cases = [
        (["plot", str(runs / "vae"), "manifold"], "2-D latent space"),
        (["plot", str(runs / "ae2"), "traversals"], "need a VAE"),
        (["plot", str(runs / "vae"), "histogram"], "unknown picture"),
        (["cluster", str(runs / "vae"), "--k", "1"], "--k"),
        (["cluster", str(runs / "vae"), "--k", "3", "--method", "spectral"], "--method"),
        (["embed", str(runs / "vae"), "--split", "everything", "--out", str(tmp_path / "z.npy")], "--split"),
        (["embed", str(runs / "vae"), "--out", str(tmp_path / "z.txt")], "--out"),
        (["embed", str(runs / "vae"), "--data", "mnist-does-not-exist.npy", "--out", str(tmp_path / "z.npy")],
         "no such file"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "z.npy").exists()


def test_report_shows_interpolations_and_a_2d_manifold(runs) -> None:
    assert (runs / "ae2" / "manifold.png").exists() and (runs / "ae2" / "interpolations.png").exists()
    html = (runs / "ae2" / "report.html").read_text()
    assert "Latent manifold" in html and "Interpolations" in html


def test_a_dae_run_reports_how_much_it_denoises(tmp_path) -> None:
    run = tmp_path / "dae"
    assert main(["train", "dae", "--data", "digits", "--epochs", "8", "--noise", "clipped:0.3", "--out", str(run)]) == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["denoise_psnr"] > test["noisy_psnr"]  # it removes some of its own training noise
    assert 0 < test["denoise_ssim"] <= 1
    assert (run / "denoising.png").exists() and "Denoising" in (run / "report.html").read_text()
