"""The aarch64 toolchain and the emulated device's runtime: a cross-built TVM runtime and minrpc
server run under qemu-user. Sessions and running live in :mod:`convtvm.backends.arm`.

    from convtvm.backends import arm_runtime
    arm_runtime.setup()                          # once: cross-build the runtime (cached)
    lib = tvm.compile(mod, target=arm_runtime.default_target())
    arm_runtime.export_library(lib, "/tmp/k.so") # cross-linked with aarch64-linux-gnu-g++

`setup()` needs the Debian packages in APT_PACKAGES (cross g++, binutils, qemu-user) and PyPI
(the aarch64 apache-tvm-ffi wheel).  It builds `libtvm_runtime.so` for aarch64 from the runtime
sources that ship in the installed apache-tvm wheel, plus the compatibility headers in
third_party/tvm/ (the wheel lacks them), and TVM's minrpc popen server.  Everything lands in
`runtime_dir()`, keyed by the host's TVM and tvm-ffi versions, so a second setup is a cache hit.
`python -m convtvm.backends.arm_runtime [--force] [--jobs N] [--quiet]` runs `main`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# constants

CROSS_CXX = "aarch64-linux-gnu-g++"
CROSS_OBJDUMP = "aarch64-linux-gnu-objdump"
QEMU = "qemu-aarch64"
#: Debian packages that provide the tools above (qemu-user provides qemu-aarch64).
APT_PACKAGES = ("g++-aarch64-linux-gnu", "binutils-aarch64-linux-gnu", "qemu-user")
#: Which package provides which tool.
TOOL_PACKAGES = {CROSS_CXX: "g++-aarch64-linux-gnu", CROSS_OBJDUMP: "binutils-aarch64-linux-gnu",
                 QEMU: "qemu-user"}
#: aarch64 glibc + libstdc++ as installed by Debian's cross packages (libc6-arm64-cross,
#: libstdc++6-arm64-cross, pulled in by g++-aarch64-linux-gnu); qemu-aarch64 -L points here.
SYSROOT_CANDIDATES = ("/usr/aarch64-linux-gnu",)
SETUP_COMMAND = "convtvm device setup arm-emulated"
SETUP_PYTHON = "python -m convtvm.backends.arm_runtime"

ENV_CACHE = "CONVTVM_CACHE"                 # cache root (default ~/.cache/convtvm)
ENV_RUNTIME_DIR = "CONVTVM_ARM_RUNTIME_DIR"  # use exactly this runtime dir (set for MS workers)
ENV_SYSROOT = "CONVTVM_AARCH64_SYSROOT"     # override the qemu -L sysroot
ENV_HEADERS = "CONVTVM_TVM_HEADERS"         # override third_party/tvm
ENV_FFI_WHEEL = "CONVTVM_FFI_AARCH64_WHEEL"  # use this local aarch64 tvm-ffi wheel (no download)
ENV_JOBS = "CONVTVM_BUILD_JOBS"             # parallel compile jobs (default: CPU count)
ENV_QEMU = "CONVTVM_QEMU_AARCH64"           # the wrapper runs this qemu (default qemu-aarch64)

#: Bump when the build recipe or third_party/tvm changes: a runtime with another recipe stamp is
#: rebuilt (the stamp also records a digest of the headers, for information).
RECIPE_VERSION = 1

RUNTIME_LIB = "libtvm_runtime.so"
FFI_LIB = "libtvm_ffi.so"
SERVER = "tvm_minrpc_server"
SERVER_WRAPPER = "tvm_minrpc_server.sh"
STAMP = "stamp.json"

#: EM_AARCH64 in the ELF header's e_machine.
EM_AARCH64 = 183

_PREFIX = "[convtvm arm]"


# ---------------------------------------------------------------------------------------------
# versions, paths


def host_versions() -> tuple[str, str]:
    """(apache-tvm version, apache-tvm-ffi version) of this Python environment.

    From the imported modules when TVM is already imported, else from the installed
    distributions' metadata (avoids a slow `import tvm` on a cache hit)."""
    if "tvm" not in sys.modules:
        from importlib import metadata
        try:
            return metadata.version("apache-tvm"), metadata.version("apache-tvm-ffi")
        except metadata.PackageNotFoundError:
            pass
    import tvm
    import tvm_ffi
    return str(tvm.__version__), str(tvm_ffi.__version__)


def cache_root() -> Path:
    """$CONVTVM_CACHE, else $XDG_CACHE_HOME/convtvm, else ~/.cache/convtvm."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "convtvm"


def runtime_key() -> str:
    tvm_v, ffi_v = host_versions()
    return f"arm-runtime-tvm{tvm_v}-ffi{ffi_v}"


def runtime_dir() -> Path:
    """Where the aarch64 runtime for this host's TVM lives ($CONVTVM_ARM_RUNTIME_DIR overrides)."""
    if os.environ.get(ENV_RUNTIME_DIR):
        return Path(os.environ[ENV_RUNTIME_DIR]).expanduser()
    return cache_root() / runtime_key()


def headers_dir() -> Path:
    """The compatibility headers (third_party/tvm in the source tree, or $CONVTVM_TVM_HEADERS)."""
    if os.environ.get(ENV_HEADERS):
        return Path(os.environ[ENV_HEADERS]).expanduser()
    return Path(__file__).resolve().parents[2] / "third_party" / "tvm"


def server_command() -> str:
    """Path of the wrapper script that starts the aarch64 minrpc server under qemu."""
    return str(runtime_dir() / SERVER_WRAPPER)


def _tvm_package_dir() -> Path:
    import tvm
    return Path(tvm.__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# tools


def _missing_tools_message(missing: list[str], extra: str = "") -> str:
    pkgs = " ".join(APT_PACKAGES)
    return (f"the emulated aarch64 device needs {', '.join(missing)}, not found on PATH{extra}. "
            f"Install the Debian packages: sudo apt-get update && sudo apt-get install -y "
            f"--no-install-recommends {pkgs}")


def find_sysroot() -> str | None:
    """The aarch64 sysroot for qemu -L ($CONVTVM_AARCH64_SYSROOT or Debian's /usr/aarch64-linux-gnu)."""
    cands = [os.environ[ENV_SYSROOT]] if os.environ.get(ENV_SYSROOT) else list(SYSROOT_CANDIDATES)
    for c in cands:
        if os.path.exists(os.path.join(c, "lib", "ld-linux-aarch64.so.1")):
            return c
    return None


def check_tools(need_objdump: bool = False) -> dict:
    """Check that the cross toolchain and qemu-user are installed.

    Returns {"cxx": path, "qemu": path, "sysroot": path[, "objdump": path]}; raises RuntimeError
    naming the Debian packages to install when something is missing."""
    tools = [CROSS_CXX, QEMU] + ([CROSS_OBJDUMP] if need_objdump else [])
    found = {t: shutil.which(t) for t in tools}
    missing = [f"{t} (Debian package {TOOL_PACKAGES[t]})" for t, p in found.items() if not p]
    if missing:
        raise RuntimeError(_missing_tools_message(missing))
    sysroot = find_sysroot()
    if sysroot is None:
        raise RuntimeError(_missing_tools_message(
            ["an aarch64 sysroot (ld-linux-aarch64.so.1 under /usr/aarch64-linux-gnu/lib, "
             "Debian package libc6-arm64-cross, a dependency of g++-aarch64-linux-gnu)"]))
    out = {"cxx": found[CROSS_CXX], "qemu": found[QEMU], "sysroot": sysroot}
    if need_objdump:
        out["objdump"] = found[CROSS_OBJDUMP]
    return out


def elf_machine(path) -> int:
    """e_machine of an ELF file (183 = EM_AARCH64, 62 = EM_X86_64); ValueError if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    order = "little" if head[5] == 1 else "big"
    return int.from_bytes(head[18:20], order)


# ---------------------------------------------------------------------------------------------
# setup


class _Progress:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        if self.verbose:
            print(f"{_PREFIX} [{time.time() - self.t0:6.1f}s] {msg}", flush=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _headers_digest(hdir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(hdir.rglob("*.h")):
        h.update(str(p.relative_to(hdir)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _expected_stamp() -> dict:
    tvm_v, ffi_v = host_versions()
    return {"tvm": tvm_v, "tvm_ffi": ffi_v, "recipe": RECIPE_VERSION}


def runtime_info(rdir: Path | None = None) -> dict | None:
    """The stamp of a complete, up-to-date runtime in rdir (default runtime_dir()), else None."""
    rdir = Path(rdir) if rdir else runtime_dir()
    try:
        stamp = json.loads((rdir / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if any(stamp.get(k) != v for k, v in _expected_stamp().items()):
        return None
    for name in (RUNTIME_LIB, FFI_LIB, SERVER, SERVER_WRAPPER):
        p = rdir / name
        if not p.is_file():
            return None
        if name != SERVER_WRAPPER:
            try:
                if elf_machine(p) != EM_AARCH64:
                    return None
            except (OSError, ValueError):
                return None
    if not os.access(rdir / SERVER_WRAPPER, os.X_OK):
        return None
    return stamp


def is_setup() -> bool:
    return runtime_info() is not None


def _result(rdir: Path, stamp: dict, cached: bool, seconds: float) -> dict:
    return {
        "runtime_dir": str(rdir),
        "runtime": str(rdir / RUNTIME_LIB),
        "ffi": str(rdir / FFI_LIB),
        "server": str(rdir / SERVER),
        "server_command": str(rdir / SERVER_WRAPPER),
        "sysroot": stamp.get("sysroot"),
        "tvm": stamp.get("tvm"),
        "tvm_ffi": stamp.get("tvm_ffi"),
        "cached": cached,
        "seconds": round(seconds, 2),
    }


def setup(verbose: bool = True, force: bool = False, jobs: int | None = None) -> dict:
    """Set up the emulated aarch64 device (cached; a second call is a fast cache hit).

    Checks the tools, downloads the aarch64 apache-tvm-ffi wheel of the host's exact version,
    cross-builds libtvm_runtime.so and the minrpc popen server, writes the qemu wrapper script.
    Returns a dict: runtime_dir, runtime, ffi, server, server_command, sysroot, tvm, tvm_ffi,
    cached, seconds."""
    say = _Progress(verbose)
    tools = check_tools()
    say(f"tools ok: {tools['cxx']}, {tools['qemu']}, sysroot {tools['sysroot']}")
    rdir = runtime_dir()
    with _file_lock(rdir.parent / f".{rdir.name}.lock"):
        stamp = None if force else runtime_info(rdir)
        if stamp is not None:
            if stamp.get("sysroot") != tools["sysroot"]:
                _write_wrapper(rdir, tools["sysroot"])
                stamp["sysroot"] = tools["sysroot"]
                _write_text_atomic(rdir / STAMP, json.dumps(stamp, indent=2) + "\n")
            say(f"cached runtime: {rdir}")
            return _result(rdir, stamp, True, time.time() - say.t0)
        say(f"building the aarch64 runtime into {rdir}")
        stamp = _build(rdir, tools, say, jobs)
        say(f"done: {rdir}")
        return _result(rdir, stamp, False, time.time() - say.t0)


def _download_ffi_wheel(dest: Path, ffi_version: str, say) -> Path:
    local = os.environ.get(ENV_FFI_WHEEL)
    if local:
        say(f"using the aarch64 tvm-ffi wheel {local}")
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11",
           f"apache-tvm-ffi=={ffi_version}", "-d", str(dest), "--disable-pip-version-check", "-q"]
    say(f"downloading apache-tvm-ffi=={ffi_version} (aarch64 wheel) from PyPI")
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("apache_tvm_ffi-*aarch64*.whl"))
    if r.returncode != 0 or not wheels:
        raise RuntimeError(f"could not download the aarch64 apache-tvm-ffi=={ffi_version} wheel "
                           f"(`{' '.join(cmd)}` exited {r.returncode}):\n{r.stdout}{r.stderr}")
    return wheels[0]


def _runtime_sources(src_runtime: Path) -> list[Path]:
    srcs = []
    for sub in ("", "vm", "memory", "rpc"):
        srcs += sorted((src_runtime / sub).glob("*.cc"))
    srcs += [src_runtime / "extra/contrib/sort/sort.cc", src_runtime / "extra/contrib/random/random.cc"]
    return srcs


def _run(cmd: list[str], log, cwd=None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    log.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr[-6000:]}")


def _build(rdir: Path, tools: dict, say, jobs: int | None) -> dict:
    tvm_v, ffi_v = host_versions()
    hdir = headers_dir()
    for rel in ("include/tvm/support/io.h", "src/support/arena.h", "3rdparty/compiler-rt/builtin_fp16.h"):
        if not (hdir / rel).is_file():
            raise RuntimeError(f"compatibility headers not found: {hdir / rel} (set ${ENV_HEADERS} "
                               f"to the third_party/tvm folder of the convtvm source tree)")
    tvm_dir = _tvm_package_dir()
    if not (tvm_dir / "src" / "runtime").is_dir():
        raise RuntimeError(f"the installed apache-tvm wheel has no runtime sources ({tvm_dir}/src/runtime)")
    rdir.parent.mkdir(parents=True, exist_ok=True)
    for stale in rdir.parent.glob(f".{rdir.name}.tmp-*"):  # left by a killed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{rdir.name}.tmp-", dir=rdir.parent))
    try:
        out = tmp / "out"
        out.mkdir()
        # 1. aarch64 tvm-ffi: headers + libtvm_ffi.so
        whl = _download_ffi_wheel(tmp / "wheel", ffi_v, say)
        ffi_root = tmp / "ffi"
        with zipfile.ZipFile(whl) as z:
            members = [m for m in z.namelist() if m.startswith(("tvm_ffi/include/", "tvm_ffi/lib/libtvm_ffi.so"))]
            z.extractall(ffi_root, members)
        ffi_inc = ffi_root / "tvm_ffi" / "include"
        shutil.copy2(ffi_root / "tvm_ffi" / "lib" / FFI_LIB, out / FFI_LIB)
        if elf_machine(out / FFI_LIB) != EM_AARCH64:
            raise RuntimeError(f"{whl.name}: libtvm_ffi.so is not an aarch64 library")
        say(f"aarch64 {FFI_LIB} from {whl.name}")
        # 2. source tree laid out as in apache/tvm (the runtime sources include "../support/x.h"
        #    and "../../../../../3rdparty/compiler-rt/builtin_fp16.h" relative to themselves):
        #    the wheel's src/runtime + our src/support and 3rdparty/compiler-rt
        tree = tmp / "tvm" / "src"
        shutil.copytree(tvm_dir / "src" / "runtime", tree / "runtime",
                        ignore=lambda d, names: [n for n in names if n == "__pycache__"])
        shutil.copytree(hdir / "src" / "support", tree / "support")
        shutil.copytree(hdir / "3rdparty" / "compiler-rt", tmp / "tvm" / "3rdparty" / "compiler-rt")
        flags = ["-std=c++17", "-fPIC", "-DNDEBUG", "-pthread", f'-DTVM_VERSION="{tvm_v}"',
                 "-Wno-deprecated-declarations",
                 f"-I{tvm_dir / 'include'}", f"-I{hdir / 'include'}", f"-I{tree}",
                 f"-I{hdir / '3rdparty' / 'compiler-rt'}", f"-I{ffi_inc}"]
        srcs = _runtime_sources(tree / "runtime")
        server_src = tree / "runtime/rpc/minrpc/posix_popen_server/posix_popen_server.cc"
        server_flags = [f"-I{tree / 'runtime/rpc/minrpc'}", f"-I{tree / 'runtime/rpc'}"]
        jobs = int(jobs or os.environ.get(ENV_JOBS) or os.cpu_count() or 2)
        objdir = tmp / "obj"
        # -O2 for what runs per kernel call (thread pool, device API, workspace, contrib, the
        # server); -O1 for the Relax VM and the RPC endpoint: ~40% less compile time.
        units = [(s, objdir / (str(s.relative_to(tree)).replace("/", "__") + ".o"),
                  ["-O1" if s.parent.name in ("vm", "rpc") else "-O2"]) for s in srcs]
        units.append((server_src, objdir / "posix_popen_server.o", ["-O2", *server_flags]))
        order = sorted(units, key=lambda u: -u[0].stat().st_size)  # big files first: better packing
        objdir.mkdir()
        say(f"compiling {len(units)} files with {tools['cxx']} ({jobs} jobs)")
        log_path = tmp / "build.log"
        with open(log_path, "w") as log:
            def compile_one(unit):
                src, obj, extra = unit
                cmd = [tools["cxx"], *flags, *extra, "-c", str(src), "-o", str(obj)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                return unit, cmd, r

            done = 0
            step = max(1, len(units) // 10)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(compile_one, u) for u in order]
                for fut in as_completed(futures):
                    unit, cmd, r = fut.result()
                    log.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
                    if r.returncode != 0:
                        for f in futures:
                            f.cancel()
                        raise RuntimeError(f"cross-compiling {unit[0].relative_to(tree)} failed:\n"
                                           f"{' '.join(cmd)}\n{r.stderr[-6000:]}")
                    done += 1
                    if done % step == 0 or done == len(units):
                        say(f"compiled {done}/{len(units)}")
            # 3. link
            objs = [str(o) for _, o, _ in units[:-1]]
            _run([tools["cxx"], "-shared", "-pthread", "-o", str(out / RUNTIME_LIB), *objs,
                  f"-L{out}", "-ltvm_ffi", "-ldl", "-lpthread", "-Wl,--no-undefined",
                  "-Wl,-rpath,$ORIGIN"], log)
            say(f"linked {RUNTIME_LIB} ({(out / RUNTIME_LIB).stat().st_size / 1e6:.1f} MB)")
            _run([tools["cxx"], "-pthread", "-o", str(out / SERVER), str(units[-1][1]),
                  "-Wl,--no-as-needed", f"-L{out}", "-ltvm_runtime", "-ltvm_ffi", "-ldl", "-lpthread",
                  "-Wl,-rpath,$ORIGIN"], log)
            say(f"linked {SERVER}")
        strip = shutil.which("aarch64-linux-gnu-strip")
        if strip:
            subprocess.run([strip, "--strip-unneeded", str(out / RUNTIME_LIB), str(out / SERVER)],
                           capture_output=True)
        for name in (RUNTIME_LIB, SERVER):
            if elf_machine(out / name) != EM_AARCH64:
                raise RuntimeError(f"{name} is not an aarch64 ELF file")
        shutil.copy2(log_path, out / "build.log")
        _write_wrapper(out, tools["sysroot"])
        # 4. smoke test: the server must start under qemu and answer the RPC handshake
        _smoke_test(out, say)
        stamp = dict(_expected_stamp(), sysroot=tools["sysroot"], headers=_headers_digest(hdir),
                     ffi_wheel=whl.name, cxx=_tool_version(tools["cxx"]), qemu=_tool_version(tools["qemu"]),
                     built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        # 5. publish atomically
        if rdir.exists():
            old = rdir.parent / f".{rdir.name}.old-{os.getpid()}"
            os.replace(rdir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(out, rdir)
        return stamp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tool_version(path: str) -> str:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).splitlines()[0].strip()
    except Exception:  # noqa: BLE001
        return "?"


def _write_wrapper(rdir: Path, sysroot: str) -> None:
    """The PopenSession binary: exec the aarch64 minrpc server under qemu-user (no binfmt_misc needed)."""
    path = rdir / SERVER_WRAPPER
    text = ("#!/bin/sh\n"
            "# Generated by convtvm.arm: start TVM's aarch64 minrpc popen server under qemu-user.\n"
            "# tvm.rpc.PopenSession runs this with two pipe file descriptors as arguments.\n"
            'DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)\n'
            f'exec "${{{ENV_QEMU}:-{QEMU}}}" -L "${{{ENV_SYSROOT}:-{sysroot}}}" '
            f'"$DIR/{SERVER}" "$@"\n')
    _write_text_atomic(path, text, mode=0o755)


def _write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _smoke_test(rdir: Path, say) -> None:
    """Start the server in a child process (fresh TVM state) and call a remote function."""
    code = ("import sys, tvm\nfrom tvm import rpc\n"
            "s = rpc.PopenSession(sys.argv[1])\n"
            "f = s.get_function('ffi.ModuleLoadFromFile')\n"
            "a = tvm.runtime.tensor(__import__('numpy').arange(4, dtype='float32'), s.cpu())\n"
            "assert a.numpy().tolist() == [0, 1, 2, 3]\nprint('ok')\n")
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, "-c", code, str(rdir / SERVER_WRAPPER)], capture_output=True,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("the aarch64 minrpc server did not answer under qemu within 300 s") from e
    if r.returncode != 0 or "ok" not in r.stdout:
        raise RuntimeError(f"the aarch64 minrpc server does not work under qemu:\n{r.stdout}{r.stderr[-4000:]}")
    say(f"smoke test: minrpc server under qemu answers ({time.time() - t0:.1f}s)")


# ---------------------------------------------------------------------------------------------
# CLI entry


def main(argv: list[str] | None = None) -> int:
    """`convtvm device setup arm-emulated` ([--force] [--jobs N] [--quiet]); prints the result as JSON."""
    import argparse
    ap = argparse.ArgumentParser(prog=SETUP_COMMAND, description="Set up the emulated aarch64 device.")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    ap.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        info = setup(verbose=not args.quiet, force=args.force, jobs=args.jobs)
    except RuntimeError as e:
        print(f"{_PREFIX} error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------
# compile side


def default_target(cpu: str | None = None, num_cores: int = 2) -> dict:
    """TVM target dict for aarch64 Linux with NEON (mcpu set when cpu is given)."""
    t = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": int(num_cores)}
    if cpu:
        t["mcpu"] = cpu
    return t


def cross_compiler():
    """fcompile for Module.export_library: links with aarch64-linux-gnu-g++."""
    from tvm.support import cc
    return cc.cross_compiler(CROSS_CXX)


def export_library(lib, path) -> str:
    """Export a module compiled for aarch64 as a shared library at path."""
    path = str(path)
    lib.export_library(path, fcompile=cross_compiler())
    return path


if __name__ == "__main__":
    sys.exit(main())
