"""One backend per target kind behind one interface (:class:`convtvm.backends.base.Backend`).

    from convtvm import backends
    b = backends.for_target(info)      # info: a convtvm.targets.TargetInfo
    lib = b.compile(b.fallback(func, info), info)

Adding a target kind means adding a module here that defines ``BACKEND`` (a ``Backend``) and
naming it in ``KINDS``. This package imports nothing of convtvm above it.
"""

from __future__ import annotations

import importlib

#: The target kinds (each backend claims the TVM target dicts of its kind only).
KINDS = ("x86", "arm", "cuda")
_MODULES = {"x86": "x86", "arm": "arm", "cuda": "cuda"}


def get(kind: str):
    """The backend of a target kind. Raises ValueError for a kind that has none."""
    if kind not in _MODULES:
        raise ValueError(f"unknown target {kind!r}; use one of {', '.join(KINDS)} or a TVM target dict")
    return importlib.import_module(f"{__name__}.{_MODULES[kind]}").BACKEND


def for_target(info):
    """The backend of a ``TargetInfo`` (anything with a ``kind``)."""
    return get(info.kind)


def claiming(target: dict):
    """The backend whose kind a TVM target dict is for. Raises ValueError when none claims it."""
    for kind in KINDS:
        backend = get(kind)
        if backend.claims(target):
            return backend
    raise ValueError(f"target={target!r}: kind must be 'llvm' or 'cuda'")
