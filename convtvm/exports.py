"""Exported libraries and their sealed manifests, for single ops (``module``) and networks (``network``).

An export is two regular files: the shared library at ``path`` (written by the target's backend) and
``path.json``, a manifest sealed by ``artifact.seal`` holding convtvm's and TVM's versions, the target,
the library's sha256 and the kind-specific fields. ``read(path)`` returns a manifest only when the seal
and the library's hash both hold.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import artifact
from .targets import TargetInfo
from .version import __version__


def manifest_path(path) -> Path:
    """Where the manifest of the library at ``path`` lives: ``path.json``."""
    return Path(str(path) + ".json")


def tvm_version() -> str:
    """The running TVM's version (a library loads only into the TVM that exported it)."""
    import tvm
    return tvm.__version__


def write_library(lib, target: TargetInfo, path: str) -> None:
    """Write a built library to ``path`` as a shared object for its target (the backend's ``export``:
    cross-linked for ARM; for CUDA carrying the kernels compiled for the target's arch)."""
    target.backend.export(lib, target, path)


def export_with_manifest(path, lib, target: TargetInfo, fields: dict) -> str:
    """Write ``lib`` (``write_library``) and its sealed manifest beside it. Both paths are checked
    first (each absent or a regular file, else ValueError), both files are written to temp files in
    the folder, and then renamed into place, the library first: an interrupted export leaves the old
    pair, or a library whose manifest no longer matches it (refused on load), never a lone manifest.
    ``fields`` are the kind-specific manifest entries, completed with the backend's description of
    the written library (``manifest_entry``: a CUDA library's arch, format and kernels).
    Returns the library's path."""
    path = artifact.writable(path, "module")
    mpath = artifact.writable(manifest_path(path), "manifest")
    with artifact.atomic_file(path, executable=True) as tmp_lib, artifact.atomic_file(mpath) as tmp_manifest:
        write_library(lib, target, tmp_lib)
        fields = {**fields, **target.backend.manifest_entry(tmp_lib)}
        manifest = {"convtvm": __version__,
                    "target": {"kind": target.kind, "tvm_target": json.loads(target.target_json)},
                    "tvm": tvm_version(), "sha256": artifact.sha256_file(tmp_lib),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        with open(tmp_manifest, "w") as f:
            json.dump(artifact.seal(manifest), f, indent=2)
    return str(path)


def read(path) -> tuple[Path, dict]:
    """(absolute path, manifest) of the export at ``path``. Raises FileNotFoundError when ``path`` is
    missing, ValueError when its manifest is missing, malformed or edited, or when the library's sha256
    does not match the manifest's."""
    path = Path(path).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such module")
    manifest = artifact.read_manifest(manifest_path(path))
    if manifest.get("sha256") != artifact.sha256_file(path):
        raise ValueError(f"{path}: sha256 does not match its manifest (file changed after export)")
    return path, manifest
