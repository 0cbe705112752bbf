"""Files convtvm writes (modules, manifests, logs, results): atomic, regular files only, sealed.

A leaf module: it imports nothing of convtvm.

- ``writable(path)`` refuses a path that exists and is not a regular file (a folder, a device node, a
  symlink, a socket), so that nothing but a regular file is ever replaced;
- ``atomic_file(path)`` yields a temp path in the same folder; on success it is renamed over ``path``
  with an ordinary file's permissions (0666 or, for ``executable``, 0777, less the umask), on failure
  removed: a reader sees the old file or the new one, never half of one;
- a manifest is sealed with ``seal`` (the sha256 of its canonical JSON, the library's own sha256
  among its fields) and checked with ``check_seal``, so that editing any field is refused on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

SEAL = "manifest_sha256"


def writable(path, what: str = "output") -> Path:
    """``path`` as an absolute Path that may be (re)written: not empty, and either absent or a regular
    file. Raises ValueError naming the path otherwise."""
    if not str(path).strip():
        raise ValueError(f"{what} path is empty")
    path = Path(path).absolute()
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode)
                else "a device or special file")
        raise ValueError(f"{what} {path} is {kind}: only a regular file is ever replaced")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, executable: bool = False):
    """Yield a temp path beside ``path``; rename it over ``path`` when the block succeeds."""
    path = writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if executable else 0o666) & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path, data) -> None:
    """``data`` as indented JSON at ``path``, atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)


def copy_atomic(src, dst) -> None:
    """Copy the file ``src`` to ``dst``, atomically."""
    import shutil
    with atomic_file(dst) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(manifest: dict) -> bytes:
    return json.dumps({k: v for k, v in manifest.items() if k != SEAL}, sort_keys=True,
                      separators=(",", ":")).encode()


def seal(manifest: dict) -> dict:
    """``manifest`` with its seal: the sha256 of every other field, canonically serialised."""
    return {**manifest, SEAL: hashlib.sha256(_canonical(manifest)).hexdigest()}


def read_manifest(path) -> dict:
    """A sealed manifest from ``path``. Raises ValueError naming the file when it is missing, not a
    JSON object, unsealed, or edited since it was sealed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: the manifest is missing (export modules with their .export())")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: the manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: the manifest must be a JSON object")
    if SEAL not in manifest:
        raise ValueError(f"{path}: the manifest has no {SEAL} (written by an older convtvm, or by hand): "
                         f"export the module again")
    if manifest[SEAL] != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise ValueError(f"{path}: the manifest was edited after export (its {SEAL} does not match)")
    return manifest
