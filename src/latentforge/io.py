"""Writing files so that a crash never leaves a half-written one where a good one was, and reading
them back with errors a user can act on. The one place that knows how: JSON, safetensors, any file.

Every writer goes through :func:`atomic_path`: it yields a temporary name in the destination's
folder and renames it into place only when the block finished without an exception.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary file next to ``path``, renamed onto it when the block succeeds (removed when it fails).

    ``suffix`` keeps an extension on the temporary name for writers that choose a format by it
    (``np.save`` adds ``.npy``, matplotlib reads ``.png``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(final: str | Path, *, prefix: str | None = None) -> Iterator[Path]:
    """A temporary folder next to ``final`` (named ``prefix``…, default ``.<name>.``) to write into, put in
    ``final``'s place by :func:`replace_folder` when the block succeeds and removed when it fails: ``final`` is
    the old folder or the complete new one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=prefix or f".{final.name}."))
    try:
        yield tmp
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: str | Path, final: str | Path) -> None:
    """Put the complete folder ``new`` where ``final`` is. On Linux the two are exchanged in one atomic step, so
    a process killed at any moment leaves either the old or the new folder at ``final``. Elsewhere the old
    ``final`` is moved aside first and removed only once the new one is in place (if the swap fails, the old one
    is put back; a kill between the two renames leaves it as ``.<name>.old-<pid>``)."""
    new, final = Path(new), Path(final)
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # now the old folder
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    rename = _renameat2()
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # an old kernel, or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


_RENAMEAT2: list = []


def _renameat2():
    if not _RENAMEAT2:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
            except OSError:
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write JSON (numpy values and paths become plain JSON)."""
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is corrupt ({e}); restore it or train again") from None


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object (config.json, state.json, …)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path} is corrupt (a JSON {type(obj).__name__}, not an object); restore it or train again")
    return obj


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()},
                  str(tmp), metadata=metadata)  # contiguous: channels-last weights are stored as plain (C, H, W)


def load_tensors(path: str | Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise UserError(f"{path} is missing; this is not a complete latentforge run directory")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is corrupt or not a safetensors file ({e}); restore it or train again") from None


def tensor_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file's header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}
