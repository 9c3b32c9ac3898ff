"""What a recommender keeps next to its weights: id lookup keys, known users' histories on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import interactions_frame

from latentforge.data.histories import Histories, find_key, histories_for, id_key, read_histories, text_id_key, write_histories
from latentforge.data.interactions import binarize, from_frame
from latentforge.errors import UserError


def test_id_keys_read_float_looking_text_as_the_number() -> None:
    assert id_key(42.0) == id_key("42") == id_key(np.int64(42)) == "42" and id_key(" a ") == "a"
    assert text_id_key("100.0") == "100" and text_id_key("1.5") == "1.5" and text_id_key("x1") == "x1"
    index = {"100": 0, "1.0": 1, "1": 2, "a": 3}
    assert find_key("100.0", index) == "100" and find_key(100.0, index) == "100"
    assert find_key("1.0", index) == "1.0" and find_key("1", index) == "1"  # an exact match wins
    assert find_key("7.0", index) == "7.0" and find_key("b", index) == "b"  # unknown: the text as given


def test_histories_round_trip_keeps_ids(tmp_path: Path) -> None:
    raw = from_frame(interactions_frame())
    pos = binarize(raw, 4)
    h = histories_for(raw, pos, raw.item_ids[::2])
    write_histories(tmp_path, h)
    back = read_histories(tmp_path)
    assert back.user_ids == raw.user_ids.tolist()
    assert (back.liked != h.liked).nnz == 0 and (back.seen != (h.seen != 0)).nnz == 0
    assert back.user_ids[back.row("u3")] == "u3"
    numeric = Histories([3, 7], h.liked[:2], h.seen[:2])  # integer user ids, as in MovieLens
    assert numeric.row("7.0") == numeric.row(7) == numeric.row(" 7") == 1
    with pytest.raises(UserError, match="unknown user"):
        back.row("nobody")
