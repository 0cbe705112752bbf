"""The ARM (aarch64) backend: modules cross-compiled here and run in this process on an aarch64 host,
elsewhere on an aarch64 device over TVM RPC: the emulated one (qemu-user and a cross-built runtime,
:mod:`convtvm.backends.arm_runtime`) unless ``set_remote`` names a board. Also the sessions and the
MetaSchedule builder and runner hooks for that device.

    from convtvm.backends import arm
    sess = arm.open_session()                   # emulated device (or rpc="HOST:PORT" / tracker=..., key=...)
    mod = arm.load_module(sess, "/tmp/k.so")    # exported with arm_runtime.export_library
    mod["main"](*[tvm.runtime.tensor(x, sess.cpu()) for x in ...])

MetaSchedule: `make_rpc_runner()` gives an RPCRunner measuring on the emulated device through the
module-level hooks `ms_create_session` / `ms_upload_module` / `ms_cleanup`; pair it with
`make_local_builder()` (LocalBuilder with ``rpc.build_candidate``, ``ms_export``). A board's server
and tracker are reached through :mod:`convtvm.backends.rpc`.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import weakref

from . import arm_runtime, rpc as remote
from .base import Backend, load_fresh

# Where modules run when this host is not aarch64: {} = the emulated device; or {"rpc": "HOST:PORT"} /
# {"tracker": "HOST:PORT", "key": KEY} for a real board (``set_remote``).
REMOTE: dict = {}
_SESSION = None


def session():
    """The process-wide session on the device ``REMOTE`` names (opened on first use)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = open_session(**REMOTE)
    return _SESSION


def set_remote(rpc: str | None = None, tracker: str | None = None, key: str | None = None) -> None:
    """Run ARM modules on a board: ``rpc`` a TVM RPC server HOST:PORT, or ``tracker`` HOST:PORT with
    ``key``; none of them: the emulated device. The next run opens a new session."""
    global _SESSION
    REMOTE.clear()
    REMOTE.update({k: v for k, v in dict(rpc=rpc, tracker=tracker, key=key).items() if v})
    _SESSION = None


class _ArmLibrary:
    """An exported aarch64 library, loaded into the ARM session on first call. With ``temp_dir``
    (where a library built in this process was cross-linked), that folder goes with the object."""

    def __init__(self, path, temp_dir: str | None = None):
        self.path, self._mod = path, None
        if temp_dir is not None:
            weakref.finalize(self, shutil.rmtree, temp_dir, ignore_errors=True)

    def remote(self):
        if self._mod is None:
            self._mod = load_module(session(), self.path)
        return self._mod


class Arm(Backend):
    kind = "arm"
    tensor_intrinsics = ("arm_cpu",)  # TVM's ARM search space checks NEON dot products

    def flops_per_cycle(self, cpuinfo: dict) -> int | None:
        """NEON: 1 FMA x 4 fp32 x 2 per core."""
        return 8

    def claims(self, target: dict) -> bool:
        return target.get("kind") == "llvm" and "aarch64" in str(target.get("mtriple", ""))

    def target(self, base, arm_cpu, cuda_arch, num_cores):
        out = {**base, "num-cores": num_cores or 2}
        if arm_cpu:
            out["mcpu"] = arm_cpu
        return out

    def runs_in_process(self) -> bool:
        return platform.machine() in ("aarch64", "arm64")

    def export(self, lib, info, path: str) -> None:
        """Cross-linked with aarch64-linux-gnu-g++."""
        arm_runtime.export_library(lib, path)

    def load(self, info, path: str):
        """Here on an aarch64 host; else a handle loaded into the ARM session on first call."""
        if self.runs_in_process():
            return load_fresh(path)
        return _ArmLibrary(path)

    def connect(self, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                tuning: bool = False) -> None:
        """``set_remote``: the board modules run on from now on (none named: the emulated device)."""
        set_remote(rpc=rpc, tracker=tracker, key=key)

    def device(self):
        """This CPU on an aarch64 host, else the ARM session's CPU."""
        if self.runs_in_process():
            return super().device()
        return session().cpu()

    def remote_library(self, module):
        """(``module.lib`` loaded on the ARM session, the session's CPU device) for a convtvm Module or
        Model. A library built here is cross-linked to a temp folder first, removed with the module; the
        handle is cached on the module (``module._remote``) and its own ``lib`` stays as built, so it
        still exports."""
        if module._remote is None:
            lib = module.lib
            if not isinstance(lib, _ArmLibrary):
                temp_dir = tempfile.mkdtemp(prefix="convtvm_arm_")
                path = os.path.join(temp_dir, "library.so")
                lib = _ArmLibrary(path, temp_dir)  # owns temp_dir from here, also if the export fails
                self.export(module.lib, None, path)
            module._remote = lib
        return module._remote.remote(), session().cpu()

    def open_vm(self, model):
        if self.runs_in_process():
            return super().open_vm(model)
        from tvm import relax
        lib, dev = self.remote_library(model)
        return relax.VirtualMachine(lib, dev), dev

    def call_vm(self, vm, args):
        """On a remote device the VM's outputs stay there: set, invoke, then fetch them."""
        if self.runs_in_process():
            return super().call_vm(vm, args)
        vm.set_input("main", *args)
        vm.invoke_stateful("main")
        return vm.get_outputs("main")

    def builder_runner(self, evaluator, initializer=None, info=None):
        """(LocalBuilder cross-linking for aarch64, RPCRunner on the device ``REMOTE`` names); the
        runner keeps its own short evaluator on the emulated device."""
        return make_local_builder(timeout_sec=180), make_rpc_runner(**REMOTE)


BACKEND = Arm()


# ---------------------------------------------------------------------------------------------
# sessions


def _emulated_session(setup_if_needed: bool):
    from tvm import rpc
    if arm_runtime.runtime_info() is None:
        if not setup_if_needed:
            raise RuntimeError("the emulated aarch64 device is not set up (no runtime in "
                               f"{arm_runtime.runtime_dir()}): "
                               f"run `{arm_runtime.SETUP_COMMAND}` (or {arm_runtime.SETUP_PYTHON})")
        try:
            arm_runtime.setup(verbose=True)
        except RuntimeError as e:
            raise RuntimeError(f"could not set up the emulated aarch64 device: {e}\n"
                               f"Fix the above, then run `{arm_runtime.SETUP_COMMAND}`.") from e
    return rpc.PopenSession(arm_runtime.server_command())


def is_emulated(session) -> bool:
    """Whether session is an emulated-device (minrpc popen) session opened here."""
    return bool(getattr(session, "_convtvm_emulated", False))


def open_session(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                 session_timeout: float = 0, setup_if_needed: bool = True):
    """A tvm.rpc session on an aarch64 device.

    - no arguments: the emulated device (qemu-user + minrpc server over pipes; set up if needed);
    - rpc="HOST:PORT": a TVM RPC server (tvm.rpc.connect);
    - tracker="HOST:PORT", key=KEY: a device from an RPC tracker (connect_tracker(...).request(key))."""
    remote.check_remote_args(rpc, tracker, key)
    if tracker or rpc:
        return remote.open_remote(rpc, tracker, key, session_timeout=session_timeout)
    if key:
        raise ValueError("key= is only meaningful with tracker=HOST:PORT")
    sess = _emulated_session(setup_if_needed)
    sess._convtvm_emulated = True
    return sess


def load_module(session, path):
    """Load an exported aarch64 library into session.

    The emulated device shares this machine's filesystem and its minrpc server has no upload
    area, so the library is loaded by absolute path; a real remote gets it uploaded first."""
    path = os.path.abspath(str(path))
    if is_emulated(session):
        return session.get_function("ffi.ModuleLoadFromFile")(path)
    name = os.path.basename(path)
    session.upload(path, name)
    return session.load_module(name)


# ---------------------------------------------------------------------------------------------
# MetaSchedule hooks (module-level so RPCRunner / LocalBuilder workers can unpickle them)


def ms_create_session(rpc_config):
    """RPCRunner f_create_session: a fresh emulated-device session (never builds in a worker)."""
    return open_session(setup_if_needed=False)


def ms_upload_module(session, local_path, remote_path):
    """RPCRunner f_upload_module for the emulated device: load the artifact by absolute path."""
    return session.get_function("ffi.ModuleLoadFromFile")(os.path.abspath(local_path))


def ms_cleanup(session, remote_path):
    """RPCRunner f_cleanup for the emulated device: nothing was uploaded; the session ends with it."""
    return None


def ms_export(mod) -> str:
    """LocalBuilder f_export: link the built module for aarch64; returns the .so path."""
    return remote.export_shared(mod, fcompile=arm_runtime.cross_compiler())


def make_local_builder(timeout_sec: float = 120, max_workers: int = 1):
    """A MetaSchedule LocalBuilder for aarch64: f_build=rpc.build_candidate, f_export=ms_export."""
    from tvm.s_tir.meta_schedule.builder import LocalBuilder
    remote.ensure_importable_in_workers()
    return LocalBuilder(f_build=remote.build_candidate, f_export=ms_export, timeout_sec=timeout_sec,
                        max_workers=max_workers)


_EMULATED_KEY = "convtvm-arm-emulated"


def make_rpc_runner(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                    timeout: float = 120, evaluator_config=None, max_workers: int = 1,
                    setup_if_needed: bool = True):
    """A MetaSchedule RPCRunner measuring on an aarch64 device.

    No arguments: the emulated device (hooks ms_create_session / ms_upload_module / ms_cleanup;
    the worker processes inherit this environment, so they find the runtime where runtime_dir()
    says, as here). rpc=HOST:PORT:
    a TVM RPC server; tracker=HOST:PORT + key: a tracker. timeout: seconds per measurement
    (RPCConfig.session_timeout_sec). Use with LocalBuilder(f_export=ms_export)."""
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, RPCConfig, RPCRunner
    remote.ensure_importable_in_workers()
    remote.check_remote_args(rpc, tracker, key)
    if tracker or rpc:
        return remote.remote_runner(evaluator_config, rpc, tracker, key, timeout=timeout, max_workers=max_workers)
    if arm_runtime.runtime_info() is None:
        if not setup_if_needed:
            raise RuntimeError(f"the emulated aarch64 device is not set up: run `{arm_runtime.SETUP_COMMAND}`")
        arm_runtime.setup(verbose=True)
    # tracker fields are only sanity-checked: ms_create_session does not use a tracker
    cfg = RPCConfig(tracker_host="localhost", tracker_port=1, tracker_key=_EMULATED_KEY,
                    session_timeout_sec=timeout)
    if evaluator_config is None:
        # emulated timings only rank candidates roughly; keep each measurement short
        evaluator_config = EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0, enable_cpu_cache_flush=False)
    return RPCRunner(cfg, evaluator_config=evaluator_config, f_create_session=ms_create_session,
                     f_upload_module=ms_upload_module, f_cleanup=ms_cleanup, max_workers=max_workers)

