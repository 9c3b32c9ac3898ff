"""Neural topic models: VAEs over a document's bag of words whose decoder columns are topics and whose
latent code represents the document.

* ``nvdm`` — Miao, Yu & Blunsom 2016, "Neural Variational Inference for Text Processing"
  (arXiv:1511.06038): an MLP encoder, a Gaussian code z ~ N(0, I) and a softmax decoder
  p(w | z) = softmax(R z + b); topic k is column k of R.
* ``prodlda`` — Srivastava & Sutton 2017, "Autoencoding Variational Inference for Topic Models"
  (arXiv:1703.01488): a logistic-normal code whose prior is the Laplace approximation of a
  Dirichlet(α) (§3.2), topic proportions θ = softmax(z), and a product-of-experts decoder
  p(w | θ) = softmax(BN(β θ)) with batch norm on the word logits (§3.4, it keeps the decoder from
  collapsing onto a few topics); dropout on the encoder's last hidden layer and on θ.

Beside the papers, each a setting or documented here: the decoder's word bias starts at the corpus's
log word frequencies; ProdLDA's encoder reads log(1 + count) by default (``log_counts``, chosen on
validation documents); topic words are ranked by relevance (default) or FREX, with a document-frequency
floor and optional ceiling (:meth:`NeuralTopicModel.topic_word`), since raw decoder weights list one post's
rare tokens. Two training options, off by default: ``kl_warmup`` (the KL weight rises from 0 over that many
updates) and ``length_power`` (documents weighted by words^−p in the training loss; on 20 Newsgroups
validation documents p = 1 raised coherence at K = 50 by about 0.2 NPMI at the cost of diversity). The setting
measured in docs/results.md adds ``alpha=0.1, dropout=0`` and ``ranking="frex", frex_weight=0.7,
topic_min_docs_k=0.3`` to p = 1.

Documents come in as word counts. The encoder's first layer reads only a document's distinct
words (a few dozen of thousands), as a weighted sum of word rows (``embedding_bag``), so rows are
dense only in the decoder's softmax. Likelihoods are multinomial without the count coefficient,
the convention of the topic-model literature, so perplexity = exp(−ELBO / words).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn import exporting
from ..settings import SettingError, default, setting
from .base import Batch, Model, ModelConfig
from .registry import register


def word_floor(min_docs: float, min_docs_k: float, k: int) -> float:
    """The least share of training documents a topic word must be in: ``min_docs``, or ``min_docs_k`` / K where
    that is higher."""
    return max(min_docs, min_docs_k / k)


@dataclass
class TopicConfig(ModelConfig):
    """Settings every topic model has; ``vocabulary`` comes from the data."""

    latent_dim: int = setting(50, "number of topics K (size of the document code)", min=1, max=100000)
    hidden: tuple[int, ...] = setting((500,), "encoder hidden layer sizes", min=1)
    dropout: float = setting(0.0, "dropout on the encoder's last hidden layer (and, for prodlda, on θ)", min=0,
                             below=1)
    log_counts: bool = setting(False, "the encoder reads log(1 + count) rather than counts, so that long documents "
                               "do not dominate its input")
    topic_min_docs: float = setting(0.005, "a topic word must occur in at least this share of the training documents "
                                    "(rarer words are one post's signature or header)", min=0, below=1)
    topic_min_docs_k: float = setting(0.0, "a topic word must also occur in at least this share of an average topic's "
                                      "documents, i.e. this / K of the training documents (the floor that applies "
                                      "is the larger of the two): with few topics each covers more documents, and "
                                      "a word in fewer of them is one author's signature rather than the topic's",
                                      min=0, max=1)
    topic_max_docs: float = setting(1.0, "a topic word must occur in at most this share of the training documents "
                                    "(words in nearly every document, such as mail headers' subject, lines and "
                                    "organization, say nothing of a topic); 1: no ceiling", min=0, max=1)
    ranking: str = setting("relevance", "how topic words are ranked: relevance (see relevance) or frex (Roberts, "
                           "Stewart & Airoldi 2016: a word's rank by probability within the topic and by exclusivity "
                           "to the topic, combined by their harmonic mean, weighted by frex_weight)",
                           choices=("relevance", "frex"))
    relevance: float = setting(0.6, "with ranking relevance: words ranked by λ·log p(w|topic) + (1 − λ)·log lift "
                               "(Sievert & Shirley 2014); 1 = most probable words, 0 = most topic-specific", min=0,
                               max=1)
    frex_weight: float = setting(0.5, "with ranking frex: the weight of exclusivity against frequency (STM's 0.5: "
                                 "equal; 1: by exclusivity alone)", min=0, max=1)
    kl_warmup: int = setting(0, "updates over which the KL term's weight in the training loss rises linearly from 0 "
                             "to its full value (Bowman et al. 2016); 0: full weight from the start", min=0)
    length_power: float = setting(0.0, "each training document's loss is weighted by (words)^−p, normalised to mean 1 "
                                  "over the batch, so that the longest documents do not attract topics of their own; "
                                  "0: unweighted (the ELBO), 1: per word", min=0, max=1)
    vocabulary: Any = setting(None, "the data's words, one per input column", cli=False)

    def check(self) -> None:
        super().check()
        floor = word_floor(self.topic_min_docs, self.topic_min_docs_k, self.latent_dim)
        if self.topic_max_docs < floor:
            raise SettingError("topic_max_docs", f"{self.topic_max_docs} is below the floor on a topic word's share "
                               f"of documents ({floor:g}, from topic_min_docs {self.topic_min_docs} and "
                               f"topic_min_docs_k {self.topic_min_docs_k}): no word could be listed; raise it "
                               "(1: no ceiling)")
        if self.vocabulary is not None:
            v = self.vocabulary
            if (not isinstance(v, (list, tuple)) or len(v) != int(self.input_shape[-1])
                    or not all(isinstance(w, str) for w in v)):
                raise SettingError("vocabulary", f"must list one word (a string) per input column "
                                   f"({int(self.input_shape[-1])})")
            self.vocabulary = list(v)


@dataclass
class ProdLDAConfig(TopicConfig):
    """Settings of ProdLDA. Defaults chosen on 20 Newsgroups validation documents (docs/results.md); the
    authors' setting is ``hidden=(100, 100), dropout=0.6, log_counts=False`` (Adam 2e-3, batch 200)."""

    latent_dim: int = default(TopicConfig, "latent_dim", 20)
    hidden: tuple[int, ...] = default(TopicConfig, "hidden", (200, 200))
    dropout: float = default(TopicConfig, "dropout", 0.2)
    log_counts: bool = default(TopicConfig, "log_counts", True)
    relevance: float = default(TopicConfig, "relevance", 0.75)
    alpha: float = setting(1.0, "concentration of the Dirichlet prior the Gaussian prior approximates", above=0)


class NeuralTopicModel(Model):
    """What NVDM and ProdLDA share: the sparse-aware encoder, the ELBO, IWAE bound and the topic matrix."""

    likelihood = "multinomial"
    variational = True
    default_epochs = 100

    def __init__(self, c: TopicConfig) -> None:
        super().__init__()
        self.n_words, self.latent_dim, self.dropout = int(c.input_shape[-1]), c.latent_dim, c.dropout
        self.relevance, self.log_counts, self.topic_min_docs = c.relevance, c.log_counts, c.topic_min_docs
        self.topic_max_docs, self.ranking, self.frex_weight = c.topic_max_docs, c.ranking, c.frex_weight
        self.topic_min_docs_k = c.topic_min_docs_k
        self.kl_warmup, self.length_power = c.kl_warmup, c.length_power
        dims = [*c.hidden]
        self.word_weight = nn.Parameter(torch.empty(self.n_words, dims[0]))  # first layer, word-major
        self.word_bias = nn.Parameter(torch.zeros(dims[0]))
        layers: list[nn.Module] = [self.activation()]
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), self.activation()]
        self.encoder = nn.Sequential(*layers, nn.Dropout(c.dropout))
        self.to_mu, self.to_logvar = nn.Linear(dims[-1], c.latent_dim), nn.Linear(dims[-1], c.latent_dim)
        nn.init.xavier_uniform_(self.word_weight)
        self.register_buffer("prior_mu", torch.zeros(c.latent_dim))
        self.register_buffer("prior_logvar", torch.zeros(c.latent_dim))
        self.register_buffer("word_docs", torch.zeros(self.n_words))  # share of training documents holding each word
        # training updates so far, for the KL warm-up (not saved: a resumed run starts its warm-up again)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long), persistent=False)

    @staticmethod
    def activation() -> nn.Module:
        return nn.ReLU()

    def word_bias_param(self) -> torch.Tensor:
        """The decoder's per-word bias (the background word frequencies every topic is measured against)."""
        raise NotImplementedError

    @torch.no_grad()
    def prepare(self, data) -> None:
        """Start the decoder's word bias at the training corpus's log word frequencies: otherwise Adam spends
        thousands of steps learning the unigram distribution before topics can form (as in SCHOLAR,
        Card et al. 2018)."""
        counts = torch.as_tensor(np.asarray(data.x.sum(0), dtype=np.float64).ravel(), dtype=torch.float32)
        log_freq = (counts + 1.0).log()
        self.word_bias_param().copy_(log_freq - log_freq.mean())
        docs = np.asarray((data.x > 0).sum(0), dtype=np.float64).ravel() / max(data.x.shape[0], 1)
        self.word_docs.copy_(torch.as_tensor(docs, dtype=torch.float32))
        self.listed_words()  # a band of document shares no word falls in is refused before training

    def listed_words(self) -> torch.Tensor:
        """(V,) True for the words a topic may list: those in at least the floor (the larger of ``topic_min_docs``
        and ``topic_min_docs_k`` / K) and at most ``topic_max_docs`` of the training documents. Every word of a
        model that has seen no data. An empty band is an error, not a silent return to listing every word."""
        if not self.word_docs.any():
            return torch.ones_like(self.word_docs, dtype=torch.bool)
        floor = word_floor(self.topic_min_docs, self.topic_min_docs_k, self.latent_dim)
        listed = (self.word_docs >= floor) & (self.word_docs <= self.topic_max_docs)
        if not listed.any():
            raise UserError(f"no word is in between {floor:.4g} (topic_min_docs {self.topic_min_docs}, "
                            f"topic_min_docs_k {self.topic_min_docs_k} / {self.latent_dim} topics) and "
                            f"{self.topic_max_docs:.4g} (topic_max_docs) of the training documents (the commonest is "
                            f"in {float(self.word_docs.max()):.4g}), so topics would have no words to list; lower "
                            "--topic-min-docs / --topic-min-docs-k or raise --topic-max-docs")
        return listed

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W + b`` from the non-zero counts of ``x`` only (the dense product while exporting)."""
        if exporting():
            return (x.log1p() if self.log_counts else x) @ self.word_weight + self.word_bias
        rows, cols = x.nonzero(as_tuple=True)
        counts = torch.bincount(rows, minlength=len(x))
        offsets = torch.cumsum(counts, 0) - counts
        weights = x[rows, cols].log1p() if self.log_counts else x[rows, cols]
        return F.embedding_bag(cols, self.word_weight, offsets, mode="sum", per_sample_weights=weights) + self.word_bias

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x) for word-count rows ``x``."""
        h = self.encoder(self.first_layer(x.flatten(1)))
        # counts reach the thousands in long documents; a bounded log-variance keeps exp() finite
        return self.to_mu(h), self.to_logvar(h).clamp(-10.0, 10.0)

    def word_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Word probabilities p(w | z) for codes ``z``."""
        return F.softmax(self.word_logits(z), dim=-1)

    def kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ prior) per document, Gaussians with diagonal covariance."""
        pv = self.prior_logvar
        return 0.5 * ((logvar - pv).exp() + (mu - self.prior_mu).square() / pv.exp() - 1 + pv - logvar).sum(-1)

    def recon_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """−Σ_w x_w log p(w | z) per document."""
        return -(F.log_softmax(logits, dim=-1) * x).sum(-1)

    def kl_weight(self) -> torch.Tensor:
        """The KL term's weight in the training loss now: min(1, updates / kl_warmup)."""
        if self.kl_warmup == 0:
            return torch.ones((), device=self.updates.device)
        return torch.clamp(self.updates.float() / self.kl_warmup, max=1.0)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Negative ELBO per document (one reparameterised sample), averaged over the batch. In training, the
        KL term is weighted by :meth:`kl_weight` and documents by ``length_power``; outside training (the
        validation loss that picks the kept epoch) it is the plain negative ELBO."""
        x = batch.x.flatten(1)
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        nll, kl = self.recon_nll(self.word_logits(z), x), self.kl(mu, logvar)
        out = {"loss": (nll + kl).mean(), "nll": nll.mean(), "kl": kl.mean()}
        if self.training and (self.kl_warmup or self.length_power):
            w = self.kl_weight()
            per_doc = nll + w * kl
            if self.length_power:
                doc_w = x.sum(-1).clamp_min(1.0).pow(-self.length_power)
                per_doc = per_doc * doc_w / doc_w.mean()
            out["loss"], out["kl_weight"] = per_doc.mean(), w
            self.updates += 1
        return out

    def _samples(self, x: torch.Tensor, noise: torch.Tensor | None, k: int):
        mu, logvar = self.encode(x.flatten(1))
        eps = noise if noise is not None else torch.randn(k, self.latent_dim, device=mu.device)
        return mu, logvar, eps.to(mu)

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, *, k: int = 1, noise: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO per document in nats, averaged over ``k`` posterior samples (or the given ``noise``, (S, K))."""
        x = x.flatten(1)
        mu, logvar, eps = self._samples(x, noise, k)
        std = (0.5 * logvar).exp()
        nll = torch.stack([self.recon_nll(self.word_logits(mu + e * std), x) for e in eps]).mean(0)
        return -(nll + self.kl(mu, logvar))

    @torch.no_grad()
    def iwae_nll(self, x: torch.Tensor, *, k: int = 1000, noise: torch.Tensor | None = None) -> torch.Tensor:
        """−log p(x) by importance sampling with q(z|x) as proposal (Burda et al. 2016), per document."""
        x = x.flatten(1)
        mu, logvar, eps = self._samples(x, noise, k)
        std = (0.5 * logvar).exp()
        pm, pv = self.prior_mu, self.prior_logvar
        logw = []
        for e in eps:
            z = mu + e * std
            log_prior = -0.5 * ((z - pm).square() / pv.exp() + pv + math.log(2 * math.pi)).sum(-1)
            log_q = -0.5 * (e.square() + logvar + math.log(2 * math.pi)).sum(-1)
            logw.append(-self.recon_nll(self.word_logits(z), x) + log_prior - log_q)
        return -(torch.logsumexp(torch.stack(logw), 0) - math.log(len(eps)))

    @torch.no_grad()
    def doc_topics(self, x: torch.Tensor) -> torch.Tensor:
        """Each document's code as the task and estimator show it (posterior mean μ here)."""
        return self.encode(x)[0]

    def topic_logits(self) -> torch.Tensor:
        """(K + 1, V) decoder logits of a document made of one topic only, for each topic, and (last row) of
        the background: the code that favours no topic."""
        raise NotImplementedError

    @torch.no_grad()
    def topic_word(self) -> torch.Tensor:
        """(K, V) word scores per topic (higher: listed first), by ``ranking``.

        ``relevance`` (Sievert & Shirley 2014, "LDAvis", §3.1): λ·log p(w|k) + (1 − λ)·log(p(w|k) /
        p(w|background)). λ = 1 ranks by probability, which puts the corpus's frequent words (subject, lines,
        organization) at the top of every topic; λ = 0 by lift, which puts rare words (a single post's
        signature) there, and raw decoder weights do much the same. Between the two (λ = 0.6, the value of
        Sievert & Shirley's user study; ProdLDA's 0.75 was chosen on 20 Newsgroups validation documents)
        topics read well and their words co-occur in held-out text.

        ``frex`` (Roberts, Stewart & Airoldi 2016, "A model of text for experimentation in the social
        sciences", §4.4; STM's ``calcfrex``): the weighted harmonic mean 1 / (w / E + (1 − w) / F) of a word's
        rank by probability in the topic (F, its empirical CDF among the listable words) and its rank by
        exclusivity to the topic (E, the same for p(w|k) / Σ_j p(w|j)), w = ``frex_weight``. A word frequent
        in several topics ranks low in each, so near-duplicate topics list their distinct words.

        Words in fewer than ``topic_min_docs`` of the training documents (at 20 Newsgroups' size one author's
        signature or a header field), or fewer than ``topic_min_docs_k`` / K of them, or in more than
        ``topic_max_docs`` of them (words of nearly every document) are not listed (score −∞)."""
        logp = F.log_softmax(self.topic_logits().float(), dim=-1)
        topics, background = logp[:-1], logp[-1:]
        unlisted = ~self.listed_words()
        if self.ranking == "frex":
            exclusivity = topics - torch.logsumexp(topics, dim=0, keepdim=True)  # log p(w|k) / Σ_j p(w|j)
            freq, excl = self.listed_ecdf(topics, unlisted), self.listed_ecdf(exclusivity, unlisted)
            w = self.frex_weight
            scores = 1.0 / (w / excl + (1 - w) / freq)
        else:
            scores = topics - (1 - self.relevance) * background
        return scores.masked_fill(unlisted, -torch.inf)

    @staticmethod
    def listed_ecdf(scores: torch.Tensor, unlisted: torch.Tensor) -> torch.Tensor:
        """Each row's empirical CDF over its listed words: the lowest listed score gets 1/n, the highest 1
        (ties: the lower column first); unlisted words get values ≤ 0, which the caller masks. ``unlisted`` is
        one (V,) mask shared by every row (it counts the unlisted words once)."""
        s = scores.masked_fill(unlisted, -torch.inf).double()
        ranks = torch.argsort(torch.argsort(s, dim=-1, stable=True), dim=-1, stable=True).to(scores.dtype)
        n_unlisted = int(unlisted.sum())
        return (ranks - n_unlisted + 1) / (scores.shape[-1] - n_unlisted)


class CentredBatchNorm(nn.Module):
    """Batch norm with a learnt shift and no scale (TensorFlow's ``batch_norm`` default, which ProdLDA used)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n, affine=False)
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.shift


@register("nvdm", TopicConfig, task="topics")
class NVDM(NeuralTopicModel):
    """Neural Variational Document Model: Gaussian code, one softmax layer as decoder."""

    def __init__(self, c: TopicConfig) -> None:
        super().__init__(c)
        self.decoder = nn.Linear(c.latent_dim, self.n_words)

    def word_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def word_bias_param(self) -> torch.Tensor:
        return self.decoder.bias

    @torch.no_grad()
    def topic_logits(self) -> torch.Tensor:
        k = self.latent_dim  # one prior standard deviation along each latent axis; the origin as background
        return self.decoder(torch.cat([torch.eye(k), torch.zeros(1, k)]).to(self.decoder.weight))


@register("prodlda", ProdLDAConfig, task="topics")
class ProdLDA(NeuralTopicModel):
    """ProdLDA: Laplace-approximated Dirichlet prior, θ = softmax(z), decoder softmax(BN(β θ))."""

    default_epochs = 200

    def __init__(self, c: ProdLDAConfig) -> None:
        super().__init__(c)
        k = c.latent_dim
        # Laplace approximation of Dirichlet(α) in the softmax basis (Srivastava & Sutton 2017, eq. 3-4)
        a = torch.full((k,), float(c.alpha))
        self.prior_mu.copy_(a.log() - a.log().mean())
        self.prior_logvar.copy_(((1 / a) * (1 - 2 / k) + (1 / a).sum() / k**2).log())
        # batch norms as in the authors' code (TensorFlow's default: a learnt shift, no scale)
        self.bn_mu, self.bn_logvar = CentredBatchNorm(k), CentredBatchNorm(k)
        self.theta_drop = nn.Dropout(c.dropout)
        self.beta = nn.Linear(k, self.n_words, bias=False)
        self.bn_words = CentredBatchNorm(self.n_words)
        nn.init.xavier_uniform_(self.beta.weight)

    @staticmethod
    def activation() -> nn.Module:
        return nn.Softplus()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.first_layer(x.flatten(1)))
        return self.bn_mu(self.to_mu(h)), self.bn_logvar(self.to_logvar(h))

    def word_bias_param(self) -> torch.Tensor:
        return self.bn_words.shift

    def word_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.bn_words(self.beta(self.theta_drop(F.softmax(z, dim=-1))))

    @torch.no_grad()
    def doc_topics(self, x: torch.Tensor) -> torch.Tensor:
        """Topic proportions θ = softmax(μ) of each document (rows sum to 1)."""
        return F.softmax(self.encode(x)[0], dim=-1)

    @torch.no_grad()
    def topic_logits(self) -> torch.Tensor:
        k = self.latent_dim  # θ one-hot per topic; the background is θ uniform
        theta = torch.cat([torch.eye(k), torch.full((1, k), 1 / k)]).to(self.beta.weight)
        bn = self.bn_words.norm  # its running statistics, whether the model is in training mode or not
        return (self.beta(theta) - bn.running_mean) * (bn.running_var + bn.eps).rsqrt() + self.bn_words.shift
