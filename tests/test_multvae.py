"""Mult-VAE / Mult-DAE: learning planted structure, recommending (known and new users), save/load,
the CLI end to end (train, evaluate, recommend) and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import require_data

from latentforge import MultDAE, MultVAE, load
from latentforge.cli import main
from latentforge.data.interactions import from_frame, ranking_splits
from latentforge.errors import UserError
from latentforge.metrics.ranking import evaluate_ranking
from latentforge.models import build_model
from latentforge.tasks.recommend import EASE, Popularity, validation_monitor
from latentforge.train import TrainConfig, fit

SMALL = {"hidden": [32], "latent_dim": 8}


def planted(n_users: int = 240, n_items: int = 60, groups: int = 3, seed: int = 0) -> pd.DataFrame:
    """Users in ``groups`` taste groups, each liking (rating 5) items of its own block, plus a few
    disliked (rating 2) random items. Every block is equally popular, so popularity cannot tell
    which block a user wants; a model that reads the user's items can."""
    rng = np.random.default_rng(seed)
    block = n_items // groups
    rows = []
    for u in range(n_users):
        g = u % groups
        liked = rng.choice(np.arange(g * block, (g + 1) * block), size=int(rng.integers(6, 12)), replace=False)
        other = np.setdiff1d(rng.choice(n_items, size=3, replace=False), liked)
        rows += [(u, f"i{i:02d}", 5) for i in liked] + [(u, f"i{i:02d}", 2) for i in other]
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


@pytest.fixture(scope="module")
def fitted() -> MultVAE:
    return MultVAE(**SMALL, epochs=40, batch_size=32, anneal_steps=100, random_state=0).fit(planted())


def test_mult_vae_learns_planted_structure_that_popularity_cannot() -> None:
    splits = ranking_splits(from_frame(planted()), seed=1)
    torch.manual_seed(0)
    model = build_model("mult-vae", input_shape=[splits.train.x.shape[1]], anneal_steps=100, **SMALL)
    r = splits.extras
    result = fit(model, splits.train, None, TrainConfig(epochs=40, batch_size=32, seed=0),
                 monitor=validation_monitor(r.val_fold_in, r.val_holdout))
    test = (splits.test.x, splits.extras.test_holdout)
    ours = evaluate_ranking(lambda x: model.scores(x).numpy(), *test)
    pop = evaluate_ranking(Popularity().fit(splits.train.x).scores, *test)
    ease = evaluate_ranking(EASE(10.0).fit(splits.train.x).scores, *test)
    assert ours["recall@20"] > 0.9 and ease["recall@20"] > 0.9
    assert ours["ndcg@100"] > pop["ndcg@100"] + 0.2, (ours, pop)
    assert result.best_epoch is not None and "val_ndcg@100" in result.history[0] and "beta" in result.history[0]


def test_recommend_known_and_new_users_never_returns_seen_items(fitted: MultVAE) -> None:
    df = planted()
    seen = set(df.loc[df.user == 4, "item"])  # user 4 is in group 1: items i20..i39
    top = fitted.recommend(4, top=10)
    assert len(top) == 10 and not seen & set(top)
    assert sum(20 <= int(i[1:]) < 40 for i in top) >= 8
    new = fitted.recommend(history=["i00", "i03", "i05", "i07"], top=5, return_scores=True)
    assert [s for _, s in new] == sorted((s for _, s in new), reverse=True)
    assert not {"i00", "i03", "i05", "i07"} & {i for i, _ in new} and all(int(i[1:]) < 20 for i, _ in new)
    everything = fitted.recommend(history=fitted.item_ids_[:-2], top=10)
    assert everything == fitted.item_ids_[-2:][::-1] or set(everything) == set(fitted.item_ids_[-2:])


@pytest.mark.parametrize("call, message", [
    (lambda r: r.recommend("nobody"), "unknown user"),
    (lambda r: r.recommend(history=[]), "no items"),
    (lambda r: r.recommend(history=["i01", "i01"]), "listed 2 times"),
    (lambda r: r.recommend(history=["i01", "zzz"]), "unknown item"),
    (lambda r: r.recommend(4, history=["i01"]), "either"),
    (lambda r: r.recommend(history=["i01"], ratings=[1]), "no item is rated"),
])
def test_recommend_rejects_bad_requests(fitted: MultVAE, call, message: str) -> None:
    with pytest.raises(UserError, match=message):
        call(fitted)


def test_float_looking_item_ids_find_the_numeric_items(tmp_path: Path) -> None:
    from latentforge.tasks.recommend import Recommender, read_history

    torch.manual_seed(0)
    rec = Recommender(build_model("mult-vae", input_shape=[5], latent_dim=4, item_ids=[10, 20, 30, 40, 50]))
    assert rec.for_history(["10.0", "20"], top=5) == rec.for_history([10, 20], top=5)
    assert {i for i, _ in rec.for_history(["10.0", "20"], top=5)} == {30, 40, 50}
    with pytest.raises(UserError, match="listed 2 times"):
        rec.columns(["10", "10.0"])
    with pytest.raises(UserError, match=r"unknown item id\(s\) \(12.5\)"):
        rec.columns(["10", "12.5"])
    (tmp_path / "bare.csv").write_text("10.0\n30.0\n")  # a headerless list as a spreadsheet writes it
    items, _ = read_history(tmp_path / "bare.csv", known=set(rec.index))
    assert rec.columns(items).tolist() == [0, 2]


def test_save_and_load_keep_the_id_maps(fitted: MultVAE, tmp_path: Path) -> None:
    fitted.save_pretrained(tmp_path / "rec")
    config = json.loads((tmp_path / "rec" / "config.json").read_text())
    assert config["model_config"]["item_ids"] == fitted.item_ids_
    back = MultVAE.from_pretrained(tmp_path / "rec")
    assert back.item_ids_ == fitted.item_ids_ and back.recommender_.histories.user_ids == list(range(240))
    assert back.recommend(7, top=10) == fitted.recommend(7, top=10)
    assert back.recommend(history=["i41", "i44"], top=5) == fitted.recommend(history=["i41", "i44"], top=5)
    assert isinstance(load(tmp_path / "rec"), MultVAE)
    assert not list((tmp_path / "rec").glob("*.pkl")) and not list((tmp_path / "rec").glob("*.pt"))


def test_item_names_travel_with_a_saved_recommender(tmp_path: Path) -> None:
    inter = from_frame(planted(90))
    inter.item_names = {f"i{j:02d}": f"Film {j}" for j in range(60)}
    rec = MultVAE(**SMALL, epochs=2, batch_size=32, random_state=0).fit(inter)
    assert rec.item_names_["i07"] == "Film 7"
    rec.save_pretrained(tmp_path / "rec")
    back = MultVAE.from_pretrained(tmp_path / "rec")
    assert back.item_names_ == rec.item_names_ == {k: v for k, v in inter.item_names.items() if k in set(rec.item_ids_)}


def test_mult_dae_and_sparse_matrix_input() -> None:
    import scipy.sparse as sp

    m = from_frame(planted(120)).matrix
    dae = MultDAE(**SMALL, epochs=5, batch_size=32, random_state=0).fit(sp.csr_matrix(m))
    assert len(dae.recommend(0, top=3)) == 3 and dae.best_epoch_ is not None
    assert "beta_cap" not in dae.model_.config


# ---------------------------------------------------------------- CLI


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rec")
    planted(150).to_csv(d / "ratings.csv", index=False)
    out = d / "run"
    assert main(["train", "mult-vae", "--data", str(d / "ratings.csv"), "--epochs", "3", "--hidden", "16",
                 "--latent-dim", "4", "--batch-size", "32", "--anneal-steps", "50", "--out", str(out)]) == 0
    return out


def test_cli_train_writes_a_recommender_run(csv_run: Path) -> None:
    m = json.loads((csv_run / "metrics.json").read_text())
    assert m["model"] == "mult-vae" and m["likelihood"] == "multinomial" and 1 <= m["best_epoch"] <= 3
    assert {"recall@20", "recall@50", "ndcg@100"} <= set(m["test"])
    assert not {"elbo", "nll_iwae", "psnr", "ssim", "recon_mse"} & set(m["test"])
    for f in ("config.json", "model.safetensors", "history.csv", "report.html", "users.json", "histories.safetensors"):
        assert (csv_run / f).exists(), f
    assert not (csv_run / "samples.png").exists() and not (csv_run / "reconstructions.png").exists()
    report = (csv_run / "report.html").read_text()
    assert "ndcg@100" in report and (csv_run / "curves.png").exists()
    n_items = len(json.loads((csv_run / "config.json").read_text())["model_config"]["item_ids"])
    assert f"{n_items:,} values: " in report  # the item ids are summarised, not listed in full
    examples = json.loads((csv_run / "examples.json").read_text())
    assert len(examples) == 4 and "Example recommendations" in report and f"User {examples[0]['user']}" in report
    split = ranking_splits(from_frame(planted(150)))  # the run's split: the same data, seed and protocol
    test, ids = split.test, split.extras.item_ids
    for ex in examples:  # liked items are the user's folded-in ones; a hit is exactly a held-out item
        row = split.extras.test_user_ids.index(ex["user"])
        folded = {ids[c] for c in test.x[row].indices}
        held = {ids[c] for c in split.extras.test_holdout[row].indices}
        liked = {r["item"] for r in ex["liked"]}
        assert liked <= folded and len(ex["recommended"]) == 10 and ex["held_out"] == len(held)
        assert all(r["hit"] == (r["item"] in held) and r["item"] not in folded for r in ex["recommended"])


def test_example_recommendations_mark_held_out_hits() -> None:
    import scipy.sparse as sp

    from latentforge.data.dataset import Dataset
    from latentforge.data.interactions import RankingData
    from latentforge.tasks.recommend import example_recommendations

    def ranking(holdout, item_ids, user_ids) -> RankingData:
        return RankingData(item_ids=item_ids, test_holdout=holdout, test_user_ids=user_ids, val_fold_in=None,
                           val_holdout=None, users={}, raw=None, positives=None)

    class Fixed(torch.nn.Module):  # scores item j as j: the top list is the highest unseen columns
        def scores(self, x: torch.Tensor) -> torch.Tensor:
            return torch.arange(x.shape[1], dtype=torch.float32).expand(len(x), -1)

    fold_in = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0]], np.float32))
    held = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], np.float32))
    test = Dataset(x=fold_in)
    out = example_recommendations(Fixed(), test, ranking(held, list("abcdef"), [7, 9]), {"f": "Film F"}, top=3)
    assert out[0] == {"user": 7, "folded_in": 2, "held_out": 1,
                      "liked": [{"item": "a", "name": None}, {"item": "f", "name": "Film F"}],
                      "recommended": [{"item": "e", "name": None, "hit": False}, {"item": "d", "name": None, "hit": True},
                                      {"item": "c", "name": None, "hit": False}]}
    assert [(r["item"], r["hit"]) for r in out[1]["recommended"]] == [("f", True), ("e", False), ("d", False)]
    lengths = [5, 1, 3, 2, 4, 6, 1, 2]  # users 10..17; the examples spread from short to long histories
    many = sp.csr_matrix(np.arange(8)[None, :] < np.array(lengths)[:, None], dtype=np.float32)
    test = Dataset(x=many)
    out = example_recommendations(Fixed(), test, ranking(sp.csr_matrix(many.shape, dtype=np.float32), list(range(8)),
                                                         list(range(10, 18))), users=4, top=2)
    assert [(ex["user"], ex["folded_in"]) for ex in out] == [(16, 1), (17, 2), (14, 4), (15, 6)]


def test_cli_evaluate_and_recommend(csv_run: Path, capsys, tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "evaluate", str(csv_run), "--json")
    assert code == 0 and json.loads(out)["test"]["ndcg@100"] > 0
    code, out, _ = cli(capsys, "recommend", str(csv_run), "--user", "4", "--top", "5", "--json")
    rows = json.loads(out)
    seen = set(planted(150).query("user == 4").item)
    assert code == 0 and len(rows) == 5 and not seen & {r["item"] for r in rows}
    (tmp_path / "h.csv").write_text("item,rating\ni00,5\ni02,4\ni04,1\n")
    code, out, _ = cli(capsys, "recommend", str(csv_run), "--history", str(tmp_path / "h.csv"), "--top", "3")
    assert code == 0 and out.count("\n") == 5 and "i00" not in out and "i04" not in out
    (tmp_path / "bare.csv").write_text("i00\ni02\n")
    assert cli(capsys, "recommend", str(csv_run), "--history", str(tmp_path / "bare.csv"))[0] == 0


@pytest.mark.parametrize("history, message", [
    ("item\n", "empty"),
    ("item\ni00\ni00\n", "listed 2 times"),
    ("item\ni00\nnope\n", "unknown item"),
    ("item,rating\ni00,great\n", "not a number"),
    ("product\ni00\ni01\n", "no column 'item'"),
])
def test_cli_recommend_bad_histories(csv_run: Path, capsys, tmp_path: Path, history: str, message: str) -> None:
    (tmp_path / "h.csv").write_text(history)
    code, out, err = cli(capsys, "recommend", str(csv_run), "--history", str(tmp_path / "h.csv"))
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_cli_recommend_unknown_user_and_missing_choice(csv_run: Path, capsys) -> None:
    code, _, err = cli(capsys, "recommend", str(csv_run), "--user", "99999")
    assert code == 2 and "unknown user" in err
    code, _, err = cli(capsys, "recommend", str(csv_run))
    assert code == 2 and "--user" in err


@pytest.mark.parametrize("table, message", [
    ("user,item\n1,a\n1,a\n", "duplicate"),
    ("user,item,rating\n1,a,5\n2,a,-3\n", "negative rating"),
    ("user,item,rating\n1,a,5\n2,a,five\n", "non-numeric"),
    ("user,product\n1,a\n2,b\n", "no column 'item'"),
])
def test_cli_train_rejects_bad_interaction_files(capsys, tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "r.csv").write_text(table)
    code, _, err = cli(capsys, "train", "mult-vae", "--data", str(tmp_path / "r.csv"), "--out", str(tmp_path / "run"))
    assert code == 2 and message in err and not (tmp_path / "run").exists(), err


def test_cli_flags_and_data_that_do_not_fit(capsys, tmp_path: Path) -> None:
    code, _, err = cli(capsys, "train", "vae", "--beta-cap", "0.3", "--out", str(tmp_path / "a"))
    assert code == 2 and "--beta-cap" in err
    code, _, err = cli(capsys, "train", "mult-vae", "--data", "digits", "--out", str(tmp_path / "b"))
    assert code == 2 and "interaction" in err


def test_cli_resume_keeps_the_best_epoch(csv_run: Path, capsys, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(csv_run, run)
    code, _, err = cli(capsys, "train", "--resume", "--out", str(run), "--epochs", "5")
    assert code == 0, err
    m = json.loads((run / "metrics.json").read_text())
    hist = pd.read_csv(run / "history.csv")
    assert m["epochs"] == 5 and m["best_epoch"] == int(hist["val_ndcg@100"].idxmax()) + 1


def test_cli_movielens_100k(capsys, tmp_path: Path) -> None:
    require_data("ml-100k", "u.data")
    out = tmp_path / "ml"
    code, stdout, err = cli(capsys, "train", "mult-vae", "--data", "movielens-100k", "--epochs", "2", "--out", str(out))
    assert code == 0, err
    assert "ndcg@100" in stdout
    code, stdout, _ = cli(capsys, "recommend", str(out), "--user", "196", "--top", "20", "--json")
    import latentforge.data.interactions as li

    raw = li.read_movielens_100k()
    seen = set(raw.item_ids[raw.matrix[raw.user_ids.tolist().index(196)].indices].tolist())
    rows = json.loads(stdout)
    items = [r["item"] for r in rows]
    assert code == 0 and len(items) == 20 and not seen & set(items)
    if (Path(li.find_movielens_100k()).with_name("u.item")).is_file():  # the titles travel with the run
        assert raw.item_names["50"] == "Star Wars (1977)" and len(raw.item_names) == 1682
        assert all(r["name"] == raw.item_names[str(r["item"])] for r in rows)
        code, stdout, _ = cli(capsys, "recommend", str(out), "--user", "196", "--top", "3")
        assert stdout.splitlines()[1] == "rank\titem\tscore\tname"
        assert stdout.splitlines()[2].split("\t")[3] == raw.item_names[str(items[0])]


def test_render_ranked_keeps_the_table_intact() -> None:
    from latentforge.tasks.recommend import render_ranked

    out = render_ranked([(100, 2.0), (7, 1.0)], "user 1", {"100": "A\ttitle\nwith breaks"})
    assert out.splitlines()[2:] == ["1\t100\t2.0000\tA title with breaks", "2\t7\t1.0000\t"]
    assert json.loads(render_ranked([(7, 1.0)], "u", {}, as_json=True)) == [{"rank": 1, "item": 7, "score": 1.0,
                                                                             "name": None}]


def test_item_names_file_ids_written_as_floats(tmp_path: Path) -> None:
    from latentforge.tasks.recommend import read_item_names_csv

    (tmp_path / "n.csv").write_text("movieId;title\n50.0;Star Wars\n7;Other\n")  # sniffed ';', float-looking ids
    assert read_item_names_csv(tmp_path / "n.csv", item_col="movieId", known={"50"}) == {"50": "Star Wars", "7": "Other"}


def test_cli_recommend_with_item_names(csv_run: Path, capsys, tmp_path: Path) -> None:
    (tmp_path / "names.csv").write_text("item,title\n" + "".join(f"i{j:02d},Film {j}\n" for j in range(0, 60, 2)))
    code, out, _ = cli(capsys, "recommend", str(csv_run), "--user", "4", "--top", "60", "--names",
                       str(tmp_path / "names.csv"), "--json")
    rows = json.loads(out)
    assert code == 0 and all(r["name"] == (f"Film {int(r['item'][1:])}" if int(r["item"][1:]) % 2 == 0 else None)
                             for r in rows)
    (tmp_path / "names.tsv").write_text("product\tname\n" + "".join(f"i{j:02d}\tFilm {j}\n" for j in range(60)))
    code, out, _ = cli(capsys, "recommend", str(csv_run), "--user", "4", "--top", "3", "--item-col", "product",
                       "--names", str(tmp_path / "names.tsv"))  # a TSV (sniffed) keyed by the --item-col column
    line = out.splitlines()[2].split("\t")
    assert code == 0 and line[3] == f"Film {int(line[1][1:])}"
    code, out, _ = cli(capsys, "recommend", str(csv_run), "--user", "4", "--top", "2")
    assert code == 0 and out.splitlines()[1] == "rank\titem\tscore"  # no names known: no name column
    (tmp_path / "bad.csv").write_text("item\ni00\n")
    code, _, err = cli(capsys, "recommend", str(csv_run), "--user", "4", "--names", str(tmp_path / "bad.csv"))
    assert code == 2 and "name column" in err
    for wrong in ("item,name\nx1,Film\n", "item,name\n"):  # names for none of the model's items
        (tmp_path / "wrong.csv").write_text(wrong)
        code, _, err = cli(capsys, "recommend", str(csv_run), "--user", "4", "--names", str(tmp_path / "wrong.csv"))
        assert code == 2 and "none of its" in err, err
    code, _, err = cli(capsys, "recommend", str(csv_run), "--user", "4", "--names", str(tmp_path / "none.csv"))
    assert code == 2 and "no such file" in err
