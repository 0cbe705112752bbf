"""TVM RPC for targets that measure on other machines: addresses, sessions, the CPU a server reports,
and MetaSchedule's builder and RPCRunner hooks (module-level, so the pools' worker processes unpickle
them by name).

Servers are TVM's own (``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``) behind its
tracker (``python -m tvm.exec.rpc_tracker``), or one server named directly (``rpc=HOST:PORT``).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path


def check_remote_args(rpc: str | None, tracker: str | None, key: str | None) -> None:
    """ValueError unless the arguments name one server (``rpc``) or a tracker with a ``key``."""
    if rpc and tracker:
        raise ValueError("give either rpc=HOST:PORT or tracker=HOST:PORT (with key), not both")
    if tracker and not key:
        raise ValueError("tracker=HOST:PORT needs key=DEVICE_KEY")


def split_addr(addr: str, what: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT``; ValueError naming ``what`` otherwise."""
    host, sep, port = str(addr).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT, got {addr!r}")
    return host, int(port)


def probe(addr: str, what: str, timeout: float = 5.0) -> None:
    """ValueError naming ``what`` unless something accepts a TCP connection at ``addr`` (HOST:PORT)
    within ``timeout`` seconds (TVM's own connect retries for a minute)."""
    import socket
    host, port = split_addr(addr, what)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"{what} {addr}: nothing answers there ({e.strerror or e})") from None


def open_remote(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                session_timeout: float = 0):
    """A TVM RPC session: on the server ``rpc`` names, or on a free server the ``tracker`` holds under
    ``key`` (waiting until one is free)."""
    from tvm import rpc as tvm_rpc
    check_remote_args(rpc, tracker, key)
    if tracker:
        host, port = split_addr(tracker, "tracker")
        return tvm_rpc.connect_tracker(host, port).request(key, session_timeout=session_timeout)
    if not rpc:
        raise ValueError("give rpc=HOST:PORT or tracker=HOST:PORT with key=KEY")
    host, port = split_addr(rpc, "rpc")
    return tvm_rpc.connect(host, port, key=key or "", session_timeout=session_timeout)


def server_cpu(session) -> str:
    """LLVM's name for the CPU of the machine a session runs on (as ``x86.host_cpu`` there). Raises
    ValueError for a server without TVM's LLVM (a runtime-only server cannot say)."""
    try:
        return str(session.get_function("target.llvm_get_system_cpu")())
    except Exception as e:  # noqa: BLE001 - TVM raises its own error for a missing remote function
        raise ValueError(f"an RPC server cannot report its CPU ({_last_line(e)}): run TVM's full "
                         "`python -m tvm.exec.rpc_server`, not a runtime-only server") from None


def server_threads(session) -> int:
    """The threads TVM's pool runs kernels with on the machine a session runs on."""
    return int(session.get_function("runtime.NumThreads")())


def _last_line(e: BaseException) -> str:
    """The last non-blank line of an error (where TVM puts its message), for a one-line message."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def tracker_servers(tracker: str, key: str) -> int:
    """How many servers the tracker holds under ``key`` (free or busy)."""
    from tvm import rpc as tvm_rpc
    probe(tracker, "--rpc-tracker")
    host, port = split_addr(tracker, "tracker")
    try:
        info = tvm_rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError) as e:
        raise ValueError(f"--rpc-tracker {tracker}: no RPC tracker answers there ({e})") from None
    return sum(1 for s in info.get("server_info", []) if s.get("key", "").split(":", 1)[-1] == key)


def check_servers(cpu: str, threads: int, rpc: str | None = None, tracker: str | None = None,
                  key: str | None = None, wait: float = 60.0) -> int:
    """Open a session on every server (one ``rpc``, or each the ``tracker`` holds under ``key``, all at
    once so that each is a different one) and check that each reports ``cpu`` and runs kernels on
    ``threads`` threads, as the log's timings assume. Returns how many servers there are. Raises
    ValueError when there is none, when they are not all free within ``wait`` seconds, or naming
    the servers whose CPU or thread count differs."""
    check_remote_args(rpc, tracker, key)
    n = tracker_servers(tracker, key) if tracker else 1
    where = f"the tracker {tracker} under key {key!r}" if tracker else f"the RPC server {rpc}"
    if n == 0:
        raise ValueError(f"no RPC server is registered at {where}: start one with "
                         f"`TVM_NUM_THREADS={threads} python -m tvm.exec.rpc_server --tracker {tracker} --key {key}`")
    sessions = _open_all(n, wait, rpc, tracker, key)
    if isinstance(sessions, str):
        raise ValueError(f"the {n} server(s) at {where} {sessions}")
    try:
        found = [(server_cpu(s), server_threads(s)) for s in sessions]
    finally:
        sessions.clear()  # each session closes with its last reference
    wrong = sorted({c for c, _ in found if c != cpu})
    if wrong:
        raise ValueError(f"{sum(c != cpu for c, _ in found)} of the {n} server(s) at {where} report CPU "
                         f"{', '.join(wrong)}, not the log's {cpu}: records are kept only when measured on the "
                         f"CPU the log is for. Register only {cpu} servers under this key.")
    other = sorted({t for _, t in found if t != threads})
    if other:
        raise ValueError(f"{sum(t != threads for _, t in found)} of the {n} server(s) at {where} run kernels on "
                         f"{', '.join(map(str, other))} thread(s), not the {threads} this log's timings assume: "
                         f"start each with TVM_NUM_THREADS={threads}")
    return n


def _open_all(n: int, wait: float, rpc, tracker, key):
    """``n`` sessions opened at once (each request waits while its server is busy), or, when they are
    not all open within ``wait`` seconds or one fails, a message saying so. The requests run on daemon
    threads: one still waiting for a busy server never holds up the process's exit."""
    import queue
    import threading
    done: queue.Queue = queue.Queue()

    def one():
        try:
            done.put(open_remote(rpc, tracker, key, 60))
        except Exception as e:  # noqa: BLE001 - reported as the message
            done.put(e)

    for _ in range(n):
        threading.Thread(target=one, daemon=True).start()
    sessions, deadline = [], time.monotonic() + wait
    while len(sessions) < n:
        try:
            got = done.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            return f"were not all free within {wait:.0f} s (another client holds one, or one stopped)"
        if isinstance(got, Exception):
            return f"could not all be reached: {_last_line(got)}"
        sessions.append(got)
    return sessions


# ---------------------------------------------------------------------------------------------
# MetaSchedule hooks


class WrongServerCPU(RuntimeError):
    """A server that reports another CPU than the log's: its measurements are not kept."""


def session_for(rpc_config, rpc: str | None = None, cpu: str | None = None):
    """RPCRunner f_create_session (bind ``rpc``/``cpu`` with functools.partial): a session on the server
    ``rpc`` names, or else from the tracker the RPCConfig names. With ``cpu``, a server reporting
    another CPU raises ``WrongServerCPU``, so the candidate counts as failed and its time is not kept."""
    if rpc:
        sess = open_remote(rpc=rpc, session_timeout=rpc_config.session_timeout_sec)
    else:
        sess = rpc_config.connect_server()
    if cpu is not None:
        found = server_cpu(sess)
        if found != cpu:
            raise WrongServerCPU(f"a server reports CPU {found}, not the log's {cpu}")
    return sess


def build_candidate(mod, target, _params=None):
    """LocalBuilder f_build: MetaSchedule's default_build without its `import tvm.s_tir.tensor_intrin`.

    Candidates reach the builder already scheduled (and tensorized), so compiling them needs no
    intrinsic registry. LocalBuilder starts a fresh worker pool for every batch and once more for
    its sanity check, so with the default build each batch pays that import (~40 s on 2 idle
    cores); with this one a batch of 4 conv candidates builds in ~12 s."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def export_shared(mod, fcompile=None) -> str:
    """LocalBuilder f_export: link the built module as a shared object (``fcompile``: the linker, None
    for the host's); returns its path. A server loads it as it is, with no compiler of its own."""
    path = os.path.join(tempfile.mkdtemp(prefix="convtvm_ms_"), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=fcompile)
    return path


def ensure_importable_in_workers() -> None:
    """MetaSchedule workers are fresh Pythons: make sure they can import convtvm."""
    pkg_parent = str(Path(__file__).resolve().parents[2])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if pkg_parent not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([pkg_parent, *parts])


def remote_runner(evaluator, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                  cpu: str | None = None, timeout: float = 120, max_workers: int = 1):
    """A MetaSchedule RPCRunner measuring on the server ``rpc`` names or on the tracker's servers under
    ``key``, ``max_workers`` candidates at a time; with ``cpu``, only on servers reporting that CPU."""
    from tvm.s_tir.meta_schedule.runner import RPCConfig, RPCRunner
    ensure_importable_in_workers()
    check_remote_args(rpc, tracker, key)
    host, port = split_addr(tracker or rpc, "tracker" if tracker else "rpc")
    cfg = RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key or "server", session_timeout_sec=timeout)
    return RPCRunner(cfg, evaluator_config=evaluator, max_workers=max_workers,
                     f_create_session=functools.partial(session_for, rpc=rpc, cpu=cpu))
