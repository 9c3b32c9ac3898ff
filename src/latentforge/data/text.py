"""Documents as bags of words, for topic models.

Inputs: a folder of text files (one document per ``.txt`` or extension-less file; sub-folders are
labels, and ``…train``/``…test`` sub-folders above them are the splits, as in ``20news-bydate/``), a
CSV/Parquet with a text column (and an optional ``label`` column), a bag-of-words ``.npz``
(``scipy.sparse``, documents × words) with ``vocab.txt`` beside it (``train_bow.npz`` finds its
``test_bow.npz`` and ``*_labels.txt``), and the named set ``20newsgroups`` (the 5,000-word bag of words
of Wu et al. 2023, ``20news-bow/`` under ``LATENTFORGE_DATA_DIR``).

Raw text is counted with scikit-learn's ``CountVectorizer`` fitted on the training documents only:
lower case, words of three or more letters, English stop words out, ``min_df``/``max_df`` and the
``vocab_size`` most frequent words. The vocabulary travels with the model (its config, JSON), so new
text is counted the same way by :func:`count_words`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import UserError
from .dataset import Dataset, Splits

TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"  # three or more letters, no digits (as the 20news-bow preprocessing)
TEXT_SUFFIXES = {".txt", ""}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz")
NEWSGROUPS = "20newsgroups"
NEWSGROUPS_LABELS = ("alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
                     "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
                     "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space",
                     "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc",
                     "talk.religion.misc")
TEST_FRACTION = 0.2  # of documents that come without a test split: enough held-out text for NPMI


@dataclass
class TextData:
    """What the topics task needs beside the count matrices: the words of the columns, and how many
    documents were left out because none of their words is in the vocabulary."""

    vocabulary: list[str]
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class Corpus:
    """Raw documents, their labels (or None) and, where the source fixes it, which split each is in."""

    texts: list[str]
    labels: list[str] | None
    split: list[str] | None
    name: str


# ---------------------------------------------------------------- raw text


def _decode(raw: bytes, where: str, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not valid {encoding} text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        "convert it to UTF-8, or pass --encoding latin-1 if that is how it was written") from None
    except LookupError:
        raise UserError(f"--encoding {encoding}: unknown text encoding; use e.g. utf-8 or latin-1") from None


def _is_doc(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in TEXT_SUFFIXES


def read_folder(path: Path, *, encoding: str = "utf-8") -> Corpus:
    """One document per file; sub-folders are labels; ``*train``/``*test`` sub-folders are the splits."""
    subs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    splits = {s: [d for d in subs if d.name.lower().endswith(s)] for s in ("train", "test")}
    if len(splits["train"]) == 1 and len(splits["test"]) == 1:
        parts = [(root, s) for s in ("train", "test") for root in splits[s]]
    else:
        parts = [(path, None)]
    texts, labels, split = [], [], []
    for root, s in parts:
        for file, label in _documents(root):
            text = _decode(file.read_bytes(), str(file), encoding)
            if not text.strip():
                raise UserError(f"{file}: the document is empty; remove the file or give it text")
            texts.append(text)
            labels.append(label)
            split.append(s)
    if not texts:
        raise UserError(f"{path}: no text files found (one document per .txt or extension-less file, sub-folders "
                        "for labels); point --data at the folder that holds them")
    unlabelled = sum(lab is None for lab in labels)
    if 0 < unlabelled < len(labels):
        raise UserError(f"{path}: {unlabelled} documents lie outside the label sub-folders; move them into one, or "
                        "use a folder without sub-folders")
    return Corpus(texts, None if unlabelled else labels, split if parts[0][1] else None, path.name)


def _documents(root: Path):
    """(file, label) in a stable order: files right in ``root`` (no label), then each sub-folder's (its name)."""
    for f in sorted(root.iterdir()):
        if _is_doc(f):
            yield f, None
    for d in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for f in sorted(d.rglob("*")):
            if _is_doc(f) and not any(part.startswith(".") for part in f.relative_to(d).parts):
                yield f, d.name


def read_table(path: Path, *, text_column: str = "text", encoding: str = "utf-8") -> Corpus:
    """A CSV/TSV/Parquet with one document per row in ``text_column`` (and labels in ``label``, if present)."""
    import pandas as pd

    try:
        if path.name.lower().endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if path.name.lower().endswith(".tsv") else ",", dtype=str,
                             keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid {encoding} text ({e.reason} at byte {e.start}); convert it to UTF-8, or "
                        "pass --encoding latin-1 if that is how it was written") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; give a header row naming a '{text_column}' column") from None
    except ImportError as e:
        raise UserError(f"{path}: reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
    except (pd.errors.ParserError, ValueError, OSError) as e:
        raise UserError(f"{path}: cannot parse the table ({str(e).splitlines()[0]})") from None
    if text_column not in df.columns:
        raise UserError(f"{path}: no column {text_column!r} (columns: {', '.join(map(str, df.columns))}); name the "
                        "documents' column with --text-column")
    texts = df[text_column].tolist()
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise UserError(f"{path}: the document at data row {i + 1} is empty; remove the row or give it text")
    labels = df["label"].astype(str).str.strip().tolist() if "label" in df.columns else None
    return Corpus(texts, labels, None, path.stem)


# ---------------------------------------------------------------- counting


def fit_vocabulary(texts: list[str], *, vocab_size: int = 5000, min_df: float = 2, max_df: float = 0.5,
                   stop_words: str | None = "english", where: str = "data") -> list[str]:
    """The words to count: the ``vocab_size`` most frequent, each in at least ``min_df`` documents (a count
    if ≥ 1, else a share) and at most ``max_df`` (a share if ≤ 1, else a count)."""
    from sklearn.feature_extraction.text import CountVectorizer

    if vocab_size < 1:
        raise UserError(f"--vocab-size must be at least 1, got {vocab_size}")
    for flag, v in (("--min-df", min_df), ("--max-df", max_df)):
        if not v > 0 or (v > 1 and v != int(v)):
            raise UserError(f"{flag} must be a share in (0, 1] or a whole number of documents, got {v:g}")
    # min_df 1 or more is a number of documents; max_df up to 1 is a share (1 = no upper limit)
    vec = CountVectorizer(token_pattern=TOKEN_PATTERN, stop_words=stop_words,
                          min_df=int(min_df) if min_df >= 1 else float(min_df),
                          max_df=float(max_df) if max_df <= 1 else int(max_df), max_features=vocab_size)
    try:
        vec.fit(texts)
    except ValueError as e:
        raise UserError(f"{where}: no word is left in the vocabulary ({e}); the documents hold no words of 3+ letters "
                        "that are not stop words in enough documents: lower --min-df, raise --max-df, or add "
                        "documents") from None
    return vec.get_feature_names_out().tolist()


def count_words(texts: list[str], vocabulary: list[str]) -> sp.csr_matrix:
    """Documents × words counts (float32 CSR) over a fixed vocabulary; other words are ignored."""
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(token_pattern=TOKEN_PATTERN, vocabulary=list(vocabulary), dtype=np.float32)
    m = vec.transform(texts).tocsr()
    m.sort_indices()
    return m


# ---------------------------------------------------------------- bags of words


def read_vocab(path: Path) -> list[str]:
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    while words and not words[-1]:
        words.pop()
    if not words or any(not w for w in words):
        raise UserError(f"{path}: the vocabulary must hold one word per line, no blank lines")
    return words


def read_counts(path: Path, n_words: int) -> sp.csr_matrix:
    """A scipy.sparse documents × words count matrix, checked."""
    try:
        m = sp.load_npz(path).tocsr().astype(np.float32)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path}: not a scipy.sparse .npz ({e}); save the counts with scipy.sparse.save_npz") from None
    if m.shape[1] != n_words:
        raise UserError(f"{path}: {m.shape[1]} columns but vocab.txt lists {n_words} words; they must match")
    if m.shape[0] == 0 or not np.isfinite(m.data).all() or (m.data < 0).any():
        raise UserError(f"{path}: counts must be finite and 0 or more, with at least one document")
    m.sort_indices()
    return m


def read_bow(path: Path) -> tuple[dict[str, sp.csr_matrix], dict[str, np.ndarray | None], list[str]]:
    """``X_bow.npz`` (or a folder with ``train_bow.npz``), ``vocab.txt`` beside it, labels from
    ``X_labels.txt``; ``train_…`` finds its ``test_…``. Returns counts and labels per split, and the words."""
    if path.is_dir():
        path = path / "train_bow.npz"
    vocab_file = path.parent / "vocab.txt"
    if not vocab_file.is_file():
        raise UserError(f"{path}: a bag of words needs its words in {vocab_file} (one per line, line i = column i)")
    vocab = read_vocab(vocab_file)
    stem = path.name[: -len("_bow.npz")] if path.name.endswith("_bow.npz") else path.stem
    files = {"train": path}
    if stem == "train" and (path.parent / "test_bow.npz").is_file():
        files["test"] = path.parent / "test_bow.npz"
    counts, labels = {}, {}
    for split, f in files.items():
        counts[split] = read_counts(f, len(vocab))
        lab = f.parent / f"{stem if split == 'train' else 'test'}_labels.txt"
        labels[split] = np.loadtxt(lab, dtype=np.int64, ndmin=1) if lab.is_file() else None
        if labels[split] is not None and len(labels[split]) != counts[split].shape[0]:
            raise UserError(f"{lab}: {len(labels[split])} labels for {counts[split].shape[0]} documents")
    return counts, labels, vocab


NEWSGROUPS_FILES = (
    ("train_bow.npz", "sha256:7830fde7dbbbe11133533acb2ef84b0cb17d2df1a99bce78170bf7f646b7ed1b"),
    ("test_bow.npz", "sha256:e1ac477525a8b5abd08467e3b4117b59afd64fe3fda9d9931160018c8adb301e"),
    ("vocab.txt", "sha256:d701f638652b77a573ca27100047e18e53dbf60823646d82f2f3d4dab396d2af"),
    ("train_labels.txt", "sha256:7d27582295c8a2ef2de4a8f84ca5253d8b486b7f08b40a39a8d6c5f653e04c40"),
    ("test_labels.txt", "sha256:51a0a12da489b2b83ab7ba086cbb6b3f3b50c164736cc9162796fe12d72f85c8"),
)
NEWSGROUPS_MIRROR = "https://raw.githubusercontent.com/BobXWu/ECRTM/d7cc442a526522357f57f3df26ca8f20c485370d/data/20NG/"


def newsgroups_folder() -> Path:
    """``20news-bow/`` in the data folders (or downloaded and hash-checked into the cache)."""
    from .store import RemoteFile, find_or_fetch

    files = tuple(RemoteFile(n, d) for n, d in NEWSGROUPS_FILES)
    return find_or_fetch("20news-bow", files, (NEWSGROUPS_MIRROR,), NEWSGROUPS)[0].parent


# ---------------------------------------------------------------- splits


def is_bag_of_words(spec: str | Path) -> bool:
    """Whether ``spec`` names counts with their vocabulary (no vectorizer options apply) rather than raw text."""
    path = Path(spec).expanduser()
    return str(spec) == NEWSGROUPS or path.name.lower().endswith(".npz") or (path / "train_bow.npz").is_file()


def load_text_splits(spec: str, *, text_column: str | None = None, encoding: str | None = None,
                     vocab_size: int | None = None, min_df: float | None = None, max_df: float | None = None,
                     seed: int = 0, vocabulary: list[str] | None = None) -> Splits:
    """Train/test counts of ``spec`` (a name or a path) with :class:`TextData` extras. Documents without a
    vocabulary word are left out (counted in ``extras.dropped``). With ``vocabulary`` (a trained model's), the
    columns are those words, whatever the source's own vocabulary (the vectorizer options made it: ignored)."""
    vec = {k: v for k, v in (("vocab_size", vocab_size), ("min_df", min_df), ("max_df", max_df)) if v is not None}
    path, kind = _text_source(spec, text_column)
    if kind == "bow":
        if vec or text_column is not None:
            flags = [*vec, *(["text_column"] if text_column is not None else [])]
            given = ", ".join("--" + k.replace("_", "-") for k in flags)
            raise UserError(f"{given}: apply to raw text; {path.name} is a bag of words with its vocabulary already")
        counts, labels, vocab = read_bow(path)
        if vocabulary is not None:
            counts, vocab = {s: remap_columns(m, vocab, vocabulary) for s, m in counts.items()}, list(vocabulary)
        names = list(NEWSGROUPS_LABELS) if spec == NEWSGROUPS else None
        return _splits(counts, labels, vocab, names, NEWSGROUPS if spec == NEWSGROUPS else path.stem, seed)
    corpus = _read_corpus(path, kind, text_column, encoding)
    return corpus_splits(corpus, seed=seed, vocabulary=vocabulary, **({} if vocabulary is not None else vec))


def _text_source(spec: str, text_column: str | None) -> tuple[Path, str]:
    """(path, "bow" | "folder" | "table") of a text data spec, or a clear error."""
    path = newsgroups_folder() if spec == NEWSGROUPS else Path(spec).expanduser()
    if spec != NEWSGROUPS and not path.exists():
        hint = "" if ("/" in spec or "." in spec) else f"use {NEWSGROUPS} or "
        raise UserError(f"{spec}: no such file or folder; topic models read text: {hint}a folder of .txt files, a "
                        "CSV/Parquet with a text column, or a bag-of-words .npz with vocab.txt")
    if is_bag_of_words(path):
        return path, "bow"
    if path.is_dir():
        if text_column not in (None, "text"):
            raise UserError(f"--text-column applies to CSV/Parquet tables; {path} is a folder of text files")
        return path, "folder"
    if path.name.lower().endswith(TABLE_SUFFIXES):
        return path, "table"
    raise UserError(f"{path}: not text data a topic model reads; give a folder of .txt files, a CSV/TSV/Parquet "
                    "with a text column, or a bag-of-words .npz with vocab.txt")


def _read_corpus(path: Path, kind: str, text_column: str | None, encoding: str | None) -> Corpus:
    if kind == "folder":
        return read_folder(path, encoding=encoding or "utf-8")
    return read_table(path, text_column=text_column or "text", encoding=encoding or "utf-8")


def remap_columns(counts: sp.csr_matrix, words: list[str], vocabulary: list[str]) -> sp.csr_matrix:
    """Counts over ``words`` as counts over ``vocabulary`` (the same word, its column; words not in it dropped)."""
    if list(words) == list(vocabulary):
        return counts
    where = {w: j for j, w in enumerate(vocabulary)}
    src = [i for i, w in enumerate(words) if w in where]
    select = sp.csr_matrix((np.ones(len(src), np.float32), (src, [where[words[i]] for i in src])),
                           shape=(len(words), len(vocabulary)))
    return (counts @ select).tocsr()


def read_documents(spec: str, vocabulary: list[str], *, text_column: str | None = None,
                   encoding: str | None = None) -> Dataset:
    """Every document of ``spec``, in its order (a bag of words: its train file, then its test file), counted over
    a trained model's ``vocabulary``; documents with none of its words stay, as empty rows."""
    path, kind = _text_source(spec, text_column)
    if kind == "bow":
        counts, labels, words = read_bow(path)
        parts = [remap_columns(counts[s], words, vocabulary) for s in counts]
        ys = [labels[s] for s in counts]
        y = np.concatenate(ys) if all(v is not None for v in ys) else None
        names = list(NEWSGROUPS_LABELS) if spec == NEWSGROUPS else None
        return Dataset(x=sp.vstack(parts, format="csr"), y=y, name=path.stem, label_names=names)
    corpus = _read_corpus(path, kind, text_column, encoding)
    names = sorted(set(corpus.labels)) if corpus.labels is not None else None
    y = None if names is None else np.array([names.index(v) for v in corpus.labels], dtype=np.int64)
    return Dataset(x=count_words(corpus.texts, vocabulary), y=y, name=corpus.name, label_names=names)


def corpus_splits(corpus: Corpus, *, seed: int = 0, vocabulary: list[str] | None = None, **vectorizer) -> Splits:
    """Split raw documents (their own split, else a seeded 20 % test), fit the vocabulary on the training ones
    (or take the given one)."""
    n = len(corpus.texts)
    if corpus.split is not None:
        idx = {s: [i for i, v in enumerate(corpus.split) if v == s] for s in ("train", "test")}
    else:
        tr, te = test_rows(n, seed, corpus.name)
        idx = {"train": tr.tolist(), "test": te.tolist()}
    vocab = vocabulary if vocabulary is not None else fit_vocabulary([corpus.texts[i] for i in idx["train"]],
                                                                     where=corpus.name, **vectorizer)
    counts = {s: count_words([corpus.texts[i] for i in ids], vocab) for s, ids in idx.items()}
    names = sorted(set(corpus.labels)) if corpus.labels is not None else None
    labels = {s: None if names is None else np.array([names.index(corpus.labels[i]) for i in ids], dtype=np.int64)
              for s, ids in idx.items()}
    return _splits(counts, labels, vocab, names, corpus.name, seed)


def test_rows(n: int, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows): a seeded ``TEST_FRACTION`` held out, for documents without their own split."""
    if n < 2:
        raise UserError(f"{name}: need at least 2 documents to hold out a test set, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * TEST_FRACTION))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _splits(counts: dict, labels: dict, vocab: list[str], names: list[str] | None, name: str, seed: int) -> Splits:
    if "test" not in counts:  # a bag of words without its own test file
        tr, te = test_rows(counts["train"].shape[0], seed, name)
        m, y = counts["train"], labels["train"]
        counts = {"train": m[tr], "test": m[te]}
        labels = {"train": None if y is None else y[tr], "test": None if y is None else y[te]}
    data, dropped = {}, {}
    for s in ("train", "test"):
        keep = np.flatnonzero(np.diff(counts[s].indptr) > 0)
        dropped[s] = counts[s].shape[0] - len(keep)
        if len(keep) < (2 if s == "train" else 1):
            raise UserError(f"{name}: only {len(keep)} {s} documents hold a vocabulary word; add documents, or lower "
                            "--min-df / raise --max-df")
        y = labels[s]
        data[s] = Dataset(x=counts[s][keep], y=None if y is None else y[keep], name=name, label_names=names)
    return Splits(train=data["train"], test=data["test"], name=name,
                  extras=TextData(vocabulary=list(vocab), dropped=dropped))
