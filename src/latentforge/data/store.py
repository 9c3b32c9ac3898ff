"""Where data files live: the data folders (``$LATENTFORGE_DATA_DIR``, then the user cache), file
digests, and downloads checked against published hashes. Offline, the error says which files to put where.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import atomic_path


@dataclass(frozen=True)
class RemoteFile:
    name: str
    digest: str  # "sha256:<hex>" or "md5:<hex>"


def data_dirs() -> list[Path]:
    """Where named data sets are searched, in order."""
    dirs = []
    if os.environ.get("LATENTFORGE_DATA_DIR"):
        dirs.append(Path(os.environ["LATENTFORGE_DATA_DIR"]).expanduser())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latentforge"
    dirs.append(cache)
    return dirs


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MB blocks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_or_fetch(folder: str, files: tuple[RemoteFile, ...], mirrors: tuple[str, ...], what: str) -> list[Path]:
    for d in data_dirs():
        paths = [d / folder / f.name for f in files]
        if all(p.exists() for p in paths):
            return paths
    if os.environ.get("LATENTFORGE_OFFLINE"):
        raise missing_files(folder, files, what, "downloads are off (LATENTFORGE_OFFLINE is set)")
    target = data_dirs()[-1] / folder
    out = []
    for f in files:
        dest = target / f.name
        if not dest.exists():
            _download(f, mirrors, dest, folder, files, what)
        out.append(dest)
    return out


class _DigestMismatch(Exception):
    """A downloaded file that is not the published one."""


def _download(f: RemoteFile, mirrors: tuple[str, ...], dest: Path, folder: str, files, what: str) -> None:
    algo, want = f.digest.split(":")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for base in mirrors:
        try:
            with urllib.request.urlopen(base + f.name, timeout=30) as r, atomic_path(dest) as tmp:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(r, out)
                got = file_digest(tmp, algo)
                if got != want:  # leaving the block by the exception removes the temporary file
                    raise _DigestMismatch(f"{base}{f.name} has {algo} {got}, expected {want}")
            return
        except _DigestMismatch as e:
            last = str(e)
        except OSError as e:
            last = f"{base}{f.name}: {e}"
    raise missing_files(folder, files, what, f"download failed ({last})")


def missing_files(folder: str, files, what: str, why: str) -> UserError:
    """The error for files not found anywhere: which of them were found where, and where to put the rest."""
    where = " or ".join(str(d / folder) for d in data_dirs())
    for d in data_dirs():
        found = [f.name for f in files if (d / folder / f.name).exists()]
        if found:
            lost = [f.name for f in files if f.name not in found]
            return UserError(f"{what}: found {', '.join(found)} in {d / folder}, but {', '.join(lost)} "
                             f"{'is' if len(lost) == 1 else 'are'} missing there and {why}. Put "
                             f"{'it' if len(lost) == 1 else 'them'} next to the others, then run the command again.")
    names = ", ".join(f.name for f in files)
    return UserError(
        f"{what} is not available locally and {why}. Put the files {names} into {where} "
        f"(set LATENTFORGE_DATA_DIR to the folder that holds '{folder}/'), then run the command again."
    )
