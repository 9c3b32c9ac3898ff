"""What a trained recommender keeps next to its weights, and how ids given by a user find them: the
known users' histories (``histories.safetensors`` + ``users.json``, no pickle), the items' display
names (``item_names.json``) and the lookup keys that make 42, 42.0, "42" and "42.0" one id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import UserError
from ..io import load_tensors, read_json_object, save_tensors, tensor_metadata, write_json

HISTORIES = "histories.safetensors"
USERS = "users.json"
ITEM_NAMES = "item_names.json"


def id_key(v) -> str:
    """The lookup key of an id given on a command line or in a file: 42, 42.0 and "42" are one id."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return str(v).strip()


def text_id_key(v) -> str:
    """``id_key`` for an id read as text, where "100.0" (a spreadsheet's way of writing 100) is id 100."""
    key = id_key(v)
    try:
        f = float(key)
    except ValueError:
        return key
    return id_key(f) if f.is_integer() else key


def find_key(v, index) -> str:
    """The key under which ``index`` knows the id ``v``: its exact text first, then read as a number
    ("100.0" finds 100); the exact text when neither is known, for the caller's error message."""
    key = id_key(v)
    if key in index:
        return key
    alt = text_id_key(key)
    return alt if alt in index else key


@dataclass
class Histories:
    """Known users' items over a model's item columns: ``liked`` (the positives a model folds in)
    and ``seen`` (every interaction, never recommended again)."""

    user_ids: list
    liked: sp.csr_matrix
    seen: sp.csr_matrix

    def row(self, user) -> int:
        index = getattr(self, "_index", None)
        if index is None:
            index = self._index = {id_key(u): i for i, u in enumerate(self.user_ids)}
        key = find_key(user, index)
        if key not in index:
            raise UserError(f"unknown user {user!r}: not in the training data ({len(self.user_ids)} users, e.g. "
                            f"{', '.join(map(str, self.user_ids[:3]))}); for a new user pass their items with --history")
        return index[key]


def histories_for(raw, positives, item_ids: np.ndarray) -> Histories:
    """Every user's rows restricted (and re-indexed) to the model's items."""
    cols = np.searchsorted(raw.item_ids, item_ids)  # item_ids ⊆ raw.item_ids, both sorted
    return Histories(raw.user_ids.tolist(), positives.matrix[:, cols].tocsr(), raw.matrix[:, cols].tocsr())


def write_histories(directory: Path, h: Histories) -> None:
    """``histories.safetensors`` (CSR index arrays) + ``users.json`` (the user id map); no pickle."""
    import torch

    directory = Path(directory)
    tensors = {}
    for name, m in (("liked", h.liked), ("seen", h.seen)):
        tensors[f"{name}.indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
        tensors[f"{name}.indices"] = torch.from_numpy(m.indices.astype(np.int32))
    save_tensors(directory / HISTORIES, tensors, {"n_items": str(h.liked.shape[1])})
    write_json(directory / USERS, {"user_ids": list(h.user_ids)})


def names_of(names: dict[str, str] | None, item_ids) -> dict[str, str] | None:
    """The display names of ``item_ids`` only (a model's items), or None when the data has no names."""
    if not names:
        return None
    return {k: names[k] for k in map(id_key, item_ids) if k in names}


def write_item_names(directory: Path, names: dict[str, str] | None, item_ids: list) -> None:
    """``item_names.json``: the display names of the model's items (only when the data has names)."""
    if names:
        write_json(Path(directory) / ITEM_NAMES, {"item_names": names_of(names, item_ids)})


def read_item_names(directory: Path) -> dict[str, str] | None:
    """The item names saved with a model, or None."""
    path = Path(directory) / ITEM_NAMES
    if not path.is_file():
        return None
    names = read_json_object(path).get("item_names")
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise UserError(f"{path} is corrupt (no 'item_names' mapping of ids to names); restore it or delete it")
    return names


def read_histories(directory: Path) -> Histories | None:
    """The known users saved with a model, or None when it has none (a model fitted on a bare matrix)."""
    directory = Path(directory)
    if not (directory / HISTORIES).exists():
        return None
    t = load_tensors(directory / HISTORIES)
    damaged = f"{directory}: the saved users' histories are damaged ({HISTORIES}, {USERS}); restore them or train again"
    try:
        n_items = int(tensor_metadata(directory / HISTORIES)["n_items"])
        users = read_json_object(directory / USERS)["user_ids"]
        if not isinstance(users, list) or len(set(map(id_key, users))) != len(users):
            raise ValueError("user ids")

        def csr(name: str) -> sp.csr_matrix:
            indptr, indices = t[f"{name}.indptr"].numpy(), t[f"{name}.indices"].numpy()
            return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(users), n_items))

        return Histories(users, csr("liked"), csr("seen"))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{damaged} ({type(e).__name__}: {e})") from None
