"""Text data for topic models: the readers (folders, tables, bags of words, 20newsgroups), the vocabulary
and its round trip, the topic metrics on hand-computed examples, and bad input from the command line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import require_data

from latentforge.cli import main
from latentforge.data.text import count_words, fit_vocabulary, load_text_splits, read_folder
from latentforge.errors import UserError
from latentforge.metrics.topics import npmi, npmi_per_topic, perplexity, top_words, topic_diversity

# ---------------------------------------------------------------- metrics on hand-computed examples

# Four documents over the words a, b, c, d (columns 0..3): {a, b}, {a, b}, {a, c}, {c}; d never occurs.
DOCS = sp.csr_matrix(np.array([[1, 2, 0, 0], [3, 1, 0, 0], [1, 0, 1, 0], [0, 0, 5, 0]], dtype=np.float32))


def test_npmi_of_a_toy_corpus_matches_the_hand_computed_value() -> None:
    # P(a) = 3/4, P(b) = P(c) = 1/2; P(a,b) = 1/2, P(a,c) = 1/4, P(b,c) = 0
    ab = math.log(0.5 / (0.75 * 0.5)) / -math.log(0.5)  # log(4/3) / log 2 = 0.4150
    ac = math.log(0.25 / (0.75 * 0.5)) / -math.log(0.25)  # log(2/3) / log 4 = −0.2925
    bc = -1.0  # never together
    got = npmi_per_topic(np.array([[0, 1, 2]]), DOCS, n=3)
    assert got[0] == pytest.approx((ab + ac + bc) / 3, abs=1e-12)
    assert got[0] == pytest.approx(-0.292481, abs=1e-6)
    # a word that never occurs pairs at −1; only the first n words count; topics are averaged
    assert npmi_per_topic(np.array([[0, 3, 1]]), DOCS, n=2)[0] == -1.0
    assert npmi(np.array([[0, 1], [0, 3]]), DOCS, n=2) == pytest.approx((ab - 1) / 2)


def test_npmi_of_words_in_every_document_is_one() -> None:
    docs = sp.csr_matrix(np.ones((3, 2), dtype=np.float32))
    assert npmi_per_topic(np.array([[0, 1]]), docs)[0] == 1.0


def test_topic_diversity_counts_distinct_words_among_the_top_n() -> None:
    top = np.array([[0, 1, 2, 9], [0, 3, 4, 9]])
    assert topic_diversity(top, n=3) == pytest.approx(5 / 6)  # a repeats: 5 distinct of 6
    assert topic_diversity(top, n=4) == pytest.approx(6 / 8)
    assert topic_diversity(np.array([[0, 1], [2, 3]]), n=25) == 1.0


def test_perplexity_is_exp_of_the_negative_elbo_per_word_and_top_words_rank_best_first() -> None:
    assert perplexity(np.array([-10.0, -20.0]), np.array([5, 5])) == pytest.approx(math.e**3)
    with pytest.raises(ValueError):
        perplexity(np.array([-1.0]), np.array([0]))
    assert top_words(np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2).tolist() == [[1, 2], [0, 2]]


# ---------------------------------------------------------------- readers and the vocabulary


def write_folder(root, docs: dict[str, list[str]]) -> None:
    for label, texts in docs.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(texts):
            (root / label / (f"{i}.txt" if i % 2 else str(i))).write_text(t)  # .txt and extension-less files


FRUIT = ["apple banana cherry", "banana cherry grape", "apple grape cherry", "apple banana grape"] * 3
CARS = ["engine wheel brake", "brake wheel motor", "engine motor wheel", "engine brake motor"] * 3


def test_folder_reader_takes_sub_folders_as_labels_and_train_test_folders_as_splits(tmp_path) -> None:
    write_folder(tmp_path / "flat", {"cars": CARS, "fruit": FRUIT})
    corpus = read_folder(tmp_path / "flat")
    assert len(corpus.texts) == 24 and sorted(set(corpus.labels)) == ["cars", "fruit"] and corpus.split is None
    write_folder(tmp_path / "both" / "news-train", {"cars": CARS, "fruit": FRUIT})
    write_folder(tmp_path / "both" / "news-test", {"cars": CARS[:3], "fruit": FRUIT[:2]})
    s = load_text_splits(str(tmp_path / "both"), min_df=1, max_df=1.0)
    assert len(s.train) == 24 and len(s.test) == 5
    assert s.train.label_names == ["cars", "fruit"] and s.test.y.tolist() == [0, 0, 0, 1, 1]
    assert set(s.extras.vocabulary) == set(" ".join(FRUIT + CARS).split())
    assert s.train.x.sum() == 24 * 3


def test_vocabulary_filters_and_round_trips(tmp_path) -> None:
    texts = ["The apple and the banana", "apple cherry 2024 x1", "banana apple", "a an of apple"]
    vocab = fit_vocabulary(texts, min_df=2, max_df=1.0)
    assert vocab == ["apple", "banana"]  # stop words, digits, short words and rare words are out
    assert fit_vocabulary(texts, min_df=1, max_df=1.0, vocab_size=1) == ["apple"]  # the most frequent
    m = count_words(["banana banana APPLE kiwi"], vocab)
    assert m.toarray().tolist() == [[1.0, 2.0]]
    # saved with the model (its config, JSON) and read back: new text is counted the same way
    from latentforge.checkpoint import load_model, save_model
    from latentforge.models import build_model

    model = build_model("prodlda", input_shape=[2], latent_dim=2, hidden=[4], vocabulary=vocab)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert again.config["vocabulary"] == vocab
    assert (count_words(["banana banana APPLE kiwi"], again.config["vocabulary"]) != m).nnz == 0


def test_table_and_bag_of_words_readers(tmp_path) -> None:
    pd.DataFrame({"body": FRUIT + CARS, "label": ["f"] * 12 + ["c"] * 12}).to_csv(tmp_path / "d.csv", index=False)
    s = load_text_splits(str(tmp_path / "d.csv"), text_column="body", min_df=1, max_df=1.0)
    assert len(s.train) + len(s.test) == 24 and s.train.label_names == ["c", "f"]
    m = sp.random(30, 6, density=0.5, random_state=0, format="csr") * 5
    m.data = np.ceil(m.data)
    sp.save_npz(tmp_path / "train_bow.npz", m.tocsr())
    sp.save_npz(tmp_path / "test_bow.npz", m[:8].tocsr())
    (tmp_path / "vocab.txt").write_text("\n".join("abcdef"))
    np.savetxt(tmp_path / "train_labels.txt", np.arange(30) % 3, fmt="%d")
    s = load_text_splits(str(tmp_path / "train_bow.npz"))
    kept = np.diff(m.indptr) > 0
    assert len(s.train) == kept.sum() and s.extras.vocabulary == list("abcdef") and s.train.y is not None
    assert s.extras.dropped["train"] == (~kept).sum()
    with pytest.raises(UserError, match="--vocab-size: apply to raw text"):
        load_text_splits(str(tmp_path / "train_bow.npz"), vocab_size=3)
    from latentforge import TopicModel  # a path fits the estimator too, with the file's own vocabulary

    tm = TopicModel(n_components=2, hidden=(4,), epochs=1, device="cpu").fit(str(tmp_path / "train_bow.npz"))
    assert tm.get_feature_names_out().tolist() == list("abcdef")
    tm = TopicModel(n_components=2, hidden=(4,), epochs=1, min_df=1, max_df=1.0, text_column="body",
                    device="cpu").fit(tmp_path / "d.csv")
    assert len(tm.vocabulary_) > 3


def test_20newsgroups_is_the_5000_word_bag_of_words() -> None:
    require_data("20news-bow", "train_bow.npz")
    s = load_text_splits("20newsgroups")
    assert (len(s.train), len(s.test), s.train.x.shape[1]) == (11314, 7532, 5000)
    assert s.train.label_names[0] == "alt.atheism" and int(s.train.x.sum()) == 1250680


# ---------------------------------------------------------------- bad input: one error line, exit code 2


def cli_error(capsys, *args: str) -> str:
    code = main(["train", "prodlda", "--epochs", "1", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_text_input_is_one_clear_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a run that started by mistake would land here
    write_folder(tmp_path / "empty_doc", {"a": FRUIT, "b": CARS})
    (tmp_path / "empty_doc" / "a" / "blank.txt").write_text("  \n")
    assert "blank.txt: the document is empty" in cli_error(capsys, "--data", str(tmp_path / "empty_doc"))

    (tmp_path / "no_text" / "x").mkdir(parents=True)
    (tmp_path / "no_text" / "x" / "picture.png").write_bytes(b"\x89PNG")
    assert "no text files found" in cli_error(capsys, "--data", str(tmp_path / "no_text"))

    write_folder(tmp_path / "latin", {"a": FRUIT, "b": CARS})
    (tmp_path / "latin" / "a" / "caf.txt").write_bytes("café crème".encode("latin-1"))
    err = cli_error(capsys, "--data", str(tmp_path / "latin"))
    assert "caf.txt: not valid utf-8 text (byte 0xe9" in err and "--encoding latin-1" in err

    write_folder(tmp_path / "stop", {"a": ["the and of it"] * 4, "b": ["is was be 12345"] * 4})
    assert "no word is left in the vocabulary" in cli_error(capsys, "--data", str(tmp_path / "stop"))

    pd.DataFrame({"body": FRUIT}).to_csv(tmp_path / "t.csv", index=False)
    err = cli_error(capsys, "--data", str(tmp_path / "t.csv"))
    assert "no column 'text' (columns: body)" in err and "--text-column" in err

    assert "--min-rating apply to the recommend task's data" in cli_error(
        capsys, "--data", str(tmp_path / "t.csv"), "--min-rating", "3")
    assert not list(tmp_path.glob("runs*")) and not (tmp_path / "runs").exists()


def test_counts_are_moved_to_a_trained_models_columns() -> None:
    """Another bag of words (other words, other order) read for a trained model: each word to the model's column,
    words the model does not know dropped — never the same column number meaning another word."""
    import scipy.sparse as sp

    from latentforge.data.text import remap_columns

    counts = sp.csr_matrix(np.array([[1, 2, 3], [0, 5, 0]], dtype=np.float32))
    moved = remap_columns(counts, ["zebra", "apple", "car"], ["car", "apple", "dog"])
    np.testing.assert_array_equal(moved.toarray(), [[3, 2, 0], [0, 5, 0]])
    assert remap_columns(counts, ["a", "b", "c"], ["a", "b", "c"]) is counts
