"""Topic models (nvdm, prodlda), the topics task and the TopicModel estimator: the prior and the word
ranking as the papers define them, a planted two-topic corpus recovered, the command line end to end on a
tiny text folder, and the estimator's scikit-learn contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from latentforge.cli import main
from latentforge.errors import UserError
from latentforge.settings import SettingError
from latentforge.estimators import TopicModel
from latentforge.models import build_model

FRUIT = "apple banana cherry grape lemon mango orange peach pear plum".split()
CARS = "engine wheel brake gear motor piston clutch tire exhaust throttle".split()


def planted(n: int = 120, length: int = 30, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Documents that each draw their words from one of two disjoint word sets."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return [" ".join(rng.choice((FRUIT, CARS)[c], length)) for c in y], y


def test_prodlda_prior_is_the_laplace_approximation_of_the_dirichlet() -> None:
    k, a = 4, 0.5
    m = build_model("prodlda", input_shape=[10], latent_dim=k, hidden=[8], alpha=a)
    # Srivastava & Sutton 2017, eq. 4: μ_k = log α_k − mean log α; σ²_k = (1/α_k)(1 − 2/K) + Σ_i 1/α_i / K²
    assert torch.allclose(m.prior_mu, torch.zeros(k))
    want = (1 / a) * (1 - 2 / k) + (k / a) / k**2
    assert torch.allclose(m.prior_logvar.exp(), torch.full((k,), want))


@pytest.mark.parametrize("name", ["prodlda", "nvdm"])
def test_relevance_ranks_between_probability_and_lift(name: str) -> None:
    torch.manual_seed(0)
    m = build_model(name, input_shape=[12], latent_dim=3, hidden=[8], relevance=1.0).eval()
    logp = torch.log_softmax(m.topic_logits(), -1)
    assert torch.allclose(m.topic_word(), logp[:-1], atol=1e-6)  # λ = 1: by probability
    m.relevance = 0.0
    assert torch.allclose(m.topic_word(), logp[:-1] - logp[-1:], atol=1e-6)  # λ = 0: by lift


def test_words_too_rare_in_the_training_documents_are_not_listed() -> None:
    from latentforge.data import Dataset

    torch.manual_seed(0)
    m = build_model("prodlda", input_shape=[5], latent_dim=2, hidden=[4], topic_min_docs=0.01)
    x = np.zeros((1000, 5), np.float32)
    x[:, 1:] = 1
    x[0, 0] = 50  # word 0: one document of 1,000 (a signature), below the 1 % floor
    m.prepare(Dataset(x=sp.csr_matrix(x)))
    assert m.word_docs[0] == pytest.approx(0.001) and m.word_docs[1] == 1.0
    assert torch.isinf(m.topic_word()[:, 0]).all() and torch.isfinite(m.topic_word()[:, 1:]).all()


def test_the_floor_relative_to_the_number_of_topics_applies_when_it_is_the_higher() -> None:
    from latentforge.data import Dataset

    x = np.zeros((1000, 5), np.float32)
    x[:, 0] = 1
    x[:20, 1], x[:80, 2], x[:200, 3], x[:3, 4] = 1, 1, 1, 1  # words in 2 %, 8 %, 20 % and 0.3 % of the documents
    listed = {}
    for k in (2, 5):
        m = build_model("prodlda", input_shape=[5], latent_dim=k, hidden=[4], topic_min_docs=0.005,
                        topic_min_docs_k=0.3)
        m.prepare(Dataset(x=sp.csr_matrix(x)))
        listed[k] = torch.isfinite(m.topic_word()[0]).nonzero().ravel().tolist()
    assert listed[2] == [0, 3]  # floor 0.3 / 2 = 15 %
    assert listed[5] == [0, 2, 3]  # floor 6 %; word 4 stays below the absolute 0.5 % at both K
    with pytest.raises(SettingError, match="floor"):
        build_model("prodlda", input_shape=[5], latent_dim=2, topic_min_docs_k=0.5, topic_max_docs=0.2)
    high = build_model("prodlda", input_shape=[5], latent_dim=1, hidden=[4], topic_min_docs_k=1.0)
    x[:, 0] = 0  # the commonest word is now in 20 % of the documents, below a floor of 1 / 1
    with pytest.raises(UserError, match="no word is in between"):  # refused at the start, not a silent list of all
        high.prepare(Dataset(x=sp.csr_matrix(x)))


def test_topic_model_passes_the_floor_per_topic_to_its_model_and_keeps_it(tmp_path) -> None:
    texts, _ = planted(60)
    tm = TopicModel(n_components=2, hidden=(8,), epochs=1, batch_size=16, min_df=1, max_df=1.0, random_state=0,
                    device="cpu", topic_min_docs_k=0.3).fit(texts)
    assert tm.model_.topic_min_docs_k == 0.3 and tm.get_params()["topic_min_docs_k"] == 0.3
    tm.save_pretrained(tmp_path / "tm")
    assert TopicModel.from_pretrained(tmp_path / "tm").model_.topic_min_docs_k == 0.3
    with pytest.raises(UserError, match="topic_min_docs_k"):
        TopicModel(n_components=2, hidden=(8,), epochs=1, device="cpu", topic_min_docs_k=2).fit(texts)


def test_frex_ranks_by_the_harmonic_mean_of_frequency_and_exclusivity_ranks() -> None:
    torch.manual_seed(0)
    m = build_model("prodlda", input_shape=[6], latent_dim=2, hidden=[4], ranking="frex", frex_weight=0.5).eval()
    # two topics over 6 words, p(w|k) by hand: word 0 frequent in both, word 1 frequent in topic 0 only,
    # word 2 rare but only in topic 0
    p = torch.tensor([[0.40, 0.30, 0.10, 0.10, 0.05, 0.05],
                      [0.40, 0.02, 0.01, 0.17, 0.20, 0.20]])
    m.topic_logits = lambda: torch.cat([p.log(), p.mean(0, keepdim=True).log()])
    scores = m.topic_word()
    # topic 0: ranks by probability (ECDF, ties: lower column first) and by exclusivity p(w|0) / Σ_j p(w|j)
    freq = torch.tensor([6, 5, 3, 4, 1, 2]) / 6  # 0.40 > 0.30 > 0.10 (col 3 after col 2) > 0.05 ...
    excl = torch.tensor([0.5, 0.30 / 0.32, 0.10 / 0.11, 0.10 / 0.27, 0.05 / 0.25, 0.05 / 0.25])
    excl_rank = torch.tensor([4, 6, 5, 3, 1, 2]) / 6
    assert torch.argsort(excl, descending=True, stable=True).tolist() == [1, 2, 0, 3, 4, 5]
    want = 1 / (0.5 / excl_rank + 0.5 / freq)
    assert torch.allclose(scores[0], want.float(), atol=1e-6)
    assert scores[0].argmax() == 1  # frequent and exclusive beats frequent in both topics (word 0)
    m.frex_weight = 0.0  # by frequency alone: the order of p(w|k)
    assert torch.argsort(m.topic_word()[0], descending=True).tolist()[:2] == [0, 1]


def test_words_in_nearly_every_training_document_are_not_listed() -> None:
    from latentforge.data import Dataset

    torch.manual_seed(0)
    for ranking in ("relevance", "frex"):
        m = build_model("prodlda", input_shape=[5], latent_dim=2, hidden=[4], topic_max_docs=0.5, ranking=ranking)
        x = np.zeros((100, 5), np.float32)
        x[:, 0] = 3  # word 0 in every document (a header field)
        x[:40, 1:] = 1  # the others in 40 %
        m.prepare(Dataset(x=sp.csr_matrix(x)))
        scores = m.topic_word()
        assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
        if ranking == "frex":  # the ECDF runs over the listed words only: the best listed word scores 1 at most
            assert scores[:, 1:].max() <= 1.0 and scores[:, 1:].min() > 0.0


def test_counts_are_read_sparsely_and_the_elbo_does_not_depend_on_batch_mates() -> None:
    torch.manual_seed(0)
    m = build_model("prodlda", input_shape=[20], latent_dim=3, hidden=[8]).eval()
    x = torch.poisson(torch.full((6, 20), 0.7))
    assert m.log_counts and torch.allclose(m.first_layer(x), x.log1p() @ m.word_weight + m.word_bias, atol=1e-5)
    m.log_counts = False
    assert torch.allclose(m.first_layer(x), x @ m.word_weight + m.word_bias, atol=1e-5)
    noise = torch.randn(4, 3)
    assert torch.allclose(m.elbo(x[:2], noise=noise), m.elbo(x, noise=noise)[:2], atol=1e-4)
    assert torch.allclose(m.doc_topics(x).sum(1), torch.ones(6))
    assert (m.iwae_nll(x, k=16) <= -m.elbo(x, k=16) + 1e-3).all()  # the IWAE bound is at least as tight


@pytest.mark.parametrize("name", ["prodlda", "nvdm"])
def test_kl_warmup_ramps_the_kl_weight_in_training_only(name: str) -> None:
    from latentforge.models.base import Batch

    torch.manual_seed(0)
    m = build_model(name, input_shape=[12], latent_dim=3, hidden=[8], dropout=0.0, kl_warmup=4).train()
    x = torch.poisson(torch.full((5, 12), 2.0))
    weights = []
    for _ in range(6):
        out = m.loss(Batch(x))
        weights.append(float(out["kl_weight"]))
        assert out["loss"].item() == pytest.approx((out["nll"] + out["kl_weight"] * out["kl"]).item(), rel=1e-5)
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    m.eval()
    m.updates.zero_()
    out = m.loss(Batch(x))  # the validation loss that picks the kept epoch: the plain negative ELBO
    assert "kl_weight" not in out and out["loss"].item() == pytest.approx((out["nll"] + out["kl"]).item(), rel=1e-5)
    assert m.updates == 0 and "updates" not in m.state_dict()  # saved runs keep their keys
    assert build_model(name, input_shape=[12], latent_dim=3, hidden=[8]).kl_weight() == 1.0  # default: no warm-up


def test_length_power_weights_each_document_by_its_length() -> None:
    from latentforge.models.base import Batch

    torch.manual_seed(0)
    m = build_model("prodlda", input_shape=[12], latent_dim=3, hidden=[8], length_power=1.0).train()
    x = torch.poisson(torch.full((4, 12), 1.0))
    x[0] *= 20  # one long document
    torch.manual_seed(1)
    got = m.loss(Batch(x))["loss"]
    torch.manual_seed(1)  # the same random draws, in the same order, by hand
    mu, logvar = m.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    per_doc = m.recon_nll(m.word_logits(z), x) + m.kl(mu, logvar)
    w = 1 / x.sum(1)
    assert got.item() == pytest.approx((per_doc * w / w.mean()).mean().item(), rel=1e-5)
    assert got.item() < per_doc.mean().item() / 2  # the long document's loss no longer dominates the batch
    m.eval()
    out = m.loss(Batch(x))
    assert out["loss"].item() == pytest.approx((out["nll"] + out["kl"]).item(), rel=1e-5)  # validation: the ELBO


def test_a_planted_two_topic_corpus_is_recovered() -> None:
    texts, y = planted()
    tm = TopicModel(n_components=2, hidden=(32,), dropout=0.2, epochs=60, batch_size=20, lr=1e-2, min_df=1,
                    max_df=1.0, random_state=0, device="cpu").fit(texts)
    tops = [set(words) for words in tm.top_words(5)]
    assert tops[0] <= set(FRUIT) and tops[1] <= set(CARS) or tops[0] <= set(CARS) and tops[1] <= set(FRUIT), tops
    from sklearn.metrics import normalized_mutual_info_score

    assert normalized_mutual_info_score(y, tm.transform(texts).argmax(1)) == 1.0  # each document in its topic


def test_nvdm_codes_separate_a_planted_corpus() -> None:
    # NVDM's code is Gaussian, not a mixture: one axis may carry both word sets (one per sign), so its
    # topics (directions) need not split them; its document codes must.
    texts, y = planted()
    tm = TopicModel(n_components=2, kind="nvdm", hidden=(32,), dropout=0.0, epochs=60, batch_size=20, lr=1e-2,
                    min_df=1, max_df=1.0, random_state=0, device="cpu").fit(texts)
    from latentforge.metrics.representation import kmeans_scores

    assert kmeans_scores(tm.transform(texts), y)["nmi"] == 1.0
    assert any(set(t) <= set(FRUIT) or set(t) <= set(CARS) for t in tm.top_words(5))


def test_topic_model_estimator_contract(tmp_path) -> None:
    texts, _ = planted(60)
    tm = TopicModel(n_components=3, hidden=(16,), epochs=3, batch_size=16, min_df=1, max_df=1.0, random_state=0,
                    device="cpu").fit(texts)
    theta = tm.transform(texts[:5])
    assert theta.shape == (5, 3) and np.allclose(theta.sum(1), 1, atol=1e-5)
    assert tm.components_.shape == (3, 20) and np.allclose(tm.components_.sum(1), 1)
    names = tm.get_feature_names_out()
    assert sorted(names) == sorted(FRUIT + CARS)
    best = names[np.argsort(-tm.components_, axis=1)[:, :4]].tolist()
    assert best == tm.top_words(4)  # components_ sorts the way top_words ranks
    assert tm.perplexity(texts) > 1 and tm.score(texts) == -tm.perplexity(texts)
    counts = tm._counts(texts[:5])
    assert np.allclose(tm.transform(counts), theta, atol=1e-6)  # counts over the vocabulary, or the text itself
    tm.save_pretrained(tmp_path / "tm")
    again = TopicModel.from_pretrained(tmp_path / "tm")
    assert np.allclose(again.transform(texts[:5]), theta, atol=1e-6) and again.top_words(4) == tm.top_words(4)
    import latentforge

    assert isinstance(latentforge.load(tmp_path / "tm"), TopicModel)
    assert main(["topics", str(tmp_path / "tm"), "--top", "3"]) == 0  # names no data: words without NPMI
    with pytest.raises(UserError, match="X has 7 features"):
        tm.transform(np.ones((2, 7)))
    frex = TopicModel(n_components=3, hidden=(16,), epochs=1, batch_size=16, min_df=1, max_df=1.0, random_state=0,
                      device="cpu", ranking="frex", frex_weight=0.6, topic_max_docs=0.9).fit(texts)
    assert (frex.model_.ranking, frex.model_.frex_weight, frex.model_.topic_max_docs) == ("frex", 0.6, 0.9)
    with pytest.raises(UserError, match="kind must be one of"):
        TopicModel(kind="lda").fit(texts)
    m = sp.random(40, 12, density=0.4, random_state=0, format="csr")
    bare = TopicModel(n_components=2, hidden=(8,), epochs=1, device="cpu").fit(m * 3)
    assert bare.get_feature_names_out()[0] == "w0" and bare.transform(m).shape == (40, 2)
    with pytest.raises(UserError, match="fitted on a count matrix"):
        bare.transform(["apple"])


def test_cli_end_to_end_on_a_tiny_text_folder(tmp_path, capsys) -> None:
    texts, y = planted(100)
    for i, (t, c) in enumerate(zip(texts, y)):
        folder = tmp_path / "docs" / ("fruit", "cars")[c]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(t)
    run = tmp_path / "run"
    code = main(["train", "prodlda", "--data", str(tmp_path / "docs"), "--epochs", "30", "--latent-dim", "2",
                 "--hidden", "32", "--dropout", "0.2", "--lr", "0.01", "--batch-size", "20", "--max-df", "1.0",
                 "--min-df", "1", "--eval-k", "0", "--device", "cpu", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    for f in ("config.json", "model.safetensors", "metrics.json", "history.csv", "topics.json", "documents.png",
              "curves.png", "report.html"):
        assert (run / f).exists(), f
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert {"npmi", "diversity", "perplexity", "probe_acc", "nmi"} <= set(test) and test["n_topics"] == 2
    assert -1 <= test["npmi"] <= 1 and 0 < test["diversity"] <= 1 and math.isfinite(test["perplexity"])
    config = json.loads((run / "config.json").read_text())
    assert sorted(config["model_config"]["vocabulary"]) == sorted(FRUIT + CARS)
    assert "<h2 style='margin-top:1.5rem'>Topics</h2>" in (run / "report.html").read_text()
    capsys.readouterr()
    assert main(["topics", str(run), "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 topics; NPMI on 20 test documents of docs") and len(out.splitlines()) == 3, out
    assert main(["topics", str(run), "--top", "3", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [len(t["words"]) for t in table["topics"]] == [3, 3] and all(-1 <= t["npmi"] <= 1 for t in table["topics"])
    assert sorted(set(t["words"]) <= set(FRUIT) for t in table["topics"]) == [False, True]
    assert main(["topics", str(run), "--top", "0"]) == 2 and main(["topics", str(run), "--top", "21"]) == 2
    assert main(["topics", str(run), "--top", "3", "--json", "--ranking", "frex", "--frex-weight", "1"]) == 0
    by_exclusivity = json.loads(capsys.readouterr().out)["topics"]  # the same weights, words by another rule
    assert [len(t["words"]) for t in by_exclusivity] == [3, 3]
    model_config = json.loads((run / "config.json").read_text())["model_config"]
    assert model_config["ranking"] == "relevance"  # nothing saved
    assert main(["topics", str(run), "--frex-weight", "1.5"]) == 2
    assert "--frex-weight must be at most 1" in capsys.readouterr().err
    assert main(["topics", str(run), "--ranking", "lift"]) == 2
    assert main(["topics", str(run), "--topic-min-docs-k", "1", "--topic-max-docs", "0.3"]) == 2
    assert "no word could be listed" in capsys.readouterr().err
    assert main(["topics", str(tmp_path / "docs")]) == 2  # not a run
    capsys.readouterr()
    assert main(["embed", str(run), "--split", "all", "--out", str(tmp_path / "z.npy")]) == 0  # documents' codes
    assert np.load(tmp_path / "z.npy").shape == (100, 2)
    capsys.readouterr()
    assert main(["cluster", str(run), "--split", "all", "--k", "2", "--json"]) == 0
    clusters = json.loads(capsys.readouterr().out)
    assert clusters["n"] == 100 and clusters["acc"] > 0.9  # the two planted themes are found again
    other = tmp_path / "other"  # new text, with words the model never saw: counted over the model's vocabulary
    other.mkdir()
    (other / "a.txt").write_text("apple banana cherry grape unknownword another")
    (other / "b.txt").write_text("engine wheel brake clutch gearbox")
    (other / "c.txt").write_text("nothing of the vocabulary here")
    assert main(["embed", str(run), "--data", str(other), "--out", str(tmp_path / "w.npy")]) == 0
    assert np.load(tmp_path / "w.npy").shape == (3, 2)  # every document, in order, also the one without known words
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(tmp_path / "docs"), "--json"]) == 0  # same corpus, same columns
    again = json.loads(capsys.readouterr().out)["test"]
    assert again["npmi"] == pytest.approx(test["npmi"]) and again["perplexity"] == pytest.approx(test["perplexity"], rel=1e-4)


def test_a_word_ceiling_below_the_floor_is_refused() -> None:
    with pytest.raises(UserError, match="topic_max_docs"):
        build_model("prodlda", input_shape=[20], latent_dim=2, topic_min_docs=0.2, topic_max_docs=0.1)


def test_the_floor_per_topic_flag_is_checked_and_named(tmp_path, capsys) -> None:
    texts, _ = planted(20)
    (tmp_path / "docs").mkdir()
    for i, t in enumerate(texts):
        (tmp_path / "docs" / f"{i}.txt").write_text(t)
    base = ["train", "prodlda", "--data", str(tmp_path / "docs"), "--epochs", "1", "--latent-dim", "2",
            "--min-df", "1", "--max-df", "1.0", "--device", "cpu", "--eval-k", "0"]
    assert main([*base, "--topic-min-docs-k", "2", "--out", str(tmp_path / "a")]) == 2
    assert "--topic-min-docs-k" in capsys.readouterr().err
    assert main([*base, "--topic-min-docs-k", "0.6", "--topic-max-docs", "0.2", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "topic_min_docs_k 0.6" in err and "no word could be listed" in err  # the floor 0.3 is above the ceiling
