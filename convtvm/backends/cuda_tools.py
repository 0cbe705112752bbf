"""CUDA tools: which compiler turns TVM's generated CUDA C into device code, for which
architecture, and how the compiled kernels travel inside an exported module.

Compiler. convtvm compiles ahead of time with **nvcc** (``CONVTVM_CUDA_COMPILER=nvcc``, the
default whenever nvcc is found: ``$CONVTVM_NVCC``, ``PATH``, ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``,
``/usr/local/cuda/bin``) into a fatbin that holds SASS for the target's arch plus that arch's PTX
(which the driver JIT-compiles on newer GPUs)::

    nvcc --fatbin -O3 -gencode arch=compute_90,code=[sm_90,compute_90] --use_fast_math ...

Without nvcc it falls back to NVRTC through ``cuda-bindings`` (a cubin for the arch, as TVM's own
default); with neither, building for CUDA raises a RuntimeError that says what to install.

How it hooks into TVM 0.27 (``tvm.compile`` emits CUDA C; nothing there compiles it):

* ``tvm_callback_cuda_postproc(code, target)`` is called by ``target.build.cuda`` with the kernel
  source and the target: convtvm compiles it there, for ``target.arch``, and caches the binary
  (so build errors surface at build time, and ``kernels(m)`` is instant).
* ``tvm_callback_cuda_compile(code)`` is what TVM's CUDA *runtime* (GPU machines only) calls to
  JIT a module still in source form (a fresh in-memory build, a MetaSchedule candidate): convtvm's
  override returns the same cached fatbin (same arch as the build), else compiles with the chosen
  compiler for the current target's arch, else for the GPU's own.
* ``export_library``: the device module serialises as ``[fmt][function table][code]``; without a
  GPU TVM writes ``fmt="cuda"`` and the *source* (to be JIT-compiled at load). convtvm rewrites that
  entry to ``fmt="fatbin"`` and the compiled fatbin, so the ``.so`` carries the kernels for the arch
  and loading it compiles nothing. ``exported_kernels(path)`` reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

INSTALL_HINT = ("install nvcc: the CUDA toolkit (`apt-get install cuda-nvcc-13-0 cuda-cudart-dev-13-0`, or "
                "`pip install nvidia-cuda-nvcc==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-crt==13.0.* "
                "nvidia-cuda-cccl==13.0.* nvidia-cuda-runtime==13.0.*`; nvcc on PATH or CUDA_HOME set; nvcc also "
                "needs a host gcc), or, for NVRTC, `pip install cuda-bindings` with the CUDA headers under CUDA_PATH")
FATBIN_MAGIC = 0xBA55ED50
_CACHE_SIZE = 256


@dataclass(frozen=True)
class Kernels:
    """Compiled device code of one CUDA device module."""

    arch: str  # "sm_90"
    fmt: str  # "fatbin" (nvcc) or "cubin" (NVRTC)
    binary: bytes
    compiler: str  # "nvcc 13.0.88" / "nvrtc 13.0"
    flags: tuple = ()
    source_sha256: str = ""
    names: tuple = ()  # __global__ functions
    seconds: float = 0.0
    contents: tuple = field(default=())  # (("sass", "sm_90"), ("ptx", "compute_90"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.binary).hexdigest()

    def manifest(self) -> dict:
        return {"arch": self.arch, "format": self.fmt, "compiler": self.compiler, "flags": list(self.flags),
                "kernels": list(self.names), "contents": [f"{k}:{a}" for k, a in self.contents],
                "binary_bytes": len(self.binary), "binary_sha256": self.sha256}


# ------------------------------------------------------------------------------------------------
# Compiler choice
# ------------------------------------------------------------------------------------------------

def find_nvcc() -> str | None:
    """Path of nvcc, or None."""
    explicit = os.environ.get("CONVTVM_NVCC")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("nvcc")
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    try:  # pip's CUDA toolkit wheels (nvidia-cuda-nvcc, nvidia-nvvm, ...): site-packages/nvidia/cu13
        import nvidia
        roots += sorted((os.path.join(p, d) for p in nvidia.__path__ for d in os.listdir(p) if d.startswith("cu")),
                        reverse=True)
    except (ImportError, OSError):
        pass
    for root in roots:
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


def has_nvrtc() -> bool:
    try:
        from cuda.bindings import nvrtc  # noqa: F401
        return True
    except ImportError:
        return False


@lru_cache(maxsize=None)
def _nvcc_info(nvcc: str) -> tuple[str, bool]:
    """(version, supports --no-compress) of an nvcc binary."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"V(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    version = m.group(1) if m else "unknown"
    helptext = subprocess.run([nvcc, "--help"], capture_output=True, text=True).stdout
    return version, "--no-compress" in helptext


def compiler() -> tuple[str, str | None]:
    """("nvcc", path) or ("nvrtc", None): ``CONVTVM_CUDA_COMPILER`` (nvcc | nvrtc | auto, the default:
    nvcc when found, else NVRTC). RuntimeError naming what to install when neither is there."""
    choice = os.environ.get("CONVTVM_CUDA_COMPILER", "auto").strip().lower()
    if choice not in ("auto", "nvcc", "nvrtc"):
        raise ValueError(f"CONVTVM_CUDA_COMPILER={choice!r} must be nvcc, nvrtc or auto")
    nvcc = find_nvcc() if choice in ("auto", "nvcc") else None
    if nvcc:
        return "nvcc", nvcc
    if choice == "nvcc":
        raise RuntimeError(f"CONVTVM_CUDA_COMPILER=nvcc but no nvcc was found: {INSTALL_HINT}")
    if has_nvrtc():
        return "nvrtc", None
    raise RuntimeError("cannot compile CUDA kernels: neither nvcc nor NVRTC (the cuda-bindings package) is "
                       f"available; {INSTALL_HINT}")


def check_arch(arch: str) -> str:
    arch = str(arch)
    if not re.fullmatch(r"sm_\d+[af]?", arch):
        raise ValueError(f"cuda arch {arch!r} must look like sm_XX (e.g. sm_90)")
    return arch


def nvcc_flags(arch: str, no_compress: bool = True) -> list[str]:
    """nvcc flags (besides -o and the input) for one arch: SASS for ``arch`` + its PTX."""
    n = check_arch(arch)[3:]
    flags = ["--fatbin", "-O3", "-gencode", f"arch=compute_{n},code=[sm_{n},compute_{n}]"]
    if not os.environ.get("TVM_CUDA_NVCC_NO_FAST_MATH"):  # the same switch as TVM's own nvcc path
        flags.append("--use_fast_math")
    flags += ["--expt-relaxed-constexpr", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-diag-suppress=177,550"]  # unused cse variables TVM emits
    if no_compress:
        flags.append("--no-compress")  # plain PTX in the fatbin: `strings x.so | grep '.target sm_90'`
    return flags


def compile_source(code: str, arch: str) -> Kernels:
    """Compile TVM-generated CUDA C for ``arch`` (cached by source and arch)."""
    arch = check_arch(arch)
    key = (hashlib.sha256(code.encode()).hexdigest(), arch)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    name, path = compiler()
    t0 = time.perf_counter()
    if name == "nvcc":
        binary, flags, version = _nvcc(path, code, arch)
        fmt, label = "fatbin", f"nvcc {version}"
    else:
        binary, flags, version = _nvrtc(code, arch)
        fmt, label = "cubin", f"nvrtc {version}"
    k = Kernels(arch=arch, fmt=fmt, binary=bytes(binary), compiler=label, flags=tuple(flags), source_sha256=key[0],
                names=tuple(kernel_names(code)), seconds=time.perf_counter() - t0,
                contents=tuple(describe(bytes(binary))))
    with _LOCK:
        _CACHE[key] = k
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return k


def _nvcc(nvcc: str, code: str, arch: str):
    version, no_compress = _nvcc_info(nvcc)
    flags = nvcc_flags(arch, no_compress)
    with tempfile.TemporaryDirectory(prefix="convtvm_nvcc_") as tmp:
        src, out = os.path.join(tmp, "kernels.cu"), os.path.join(tmp, "kernels.fatbin")
        with open(src, "w") as f:
            f.write(code)
        cmd = [nvcc, *flags, "-o", out, src]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            log = (proc.stdout + proc.stderr).strip()
            raise RuntimeError(f"nvcc failed compiling kernels for {arch} (exit {proc.returncode}): "
                               f"{' '.join(cmd)}\n{log[-4000:]}")
        with open(out, "rb") as f:
            return f.read(), flags, version


def _nvrtc(code: str, arch: str):
    from cuda.bindings import nvrtc
    from tvm.support import nvcc as tvm_nvcc
    _, major, minor = nvrtc.nvrtcVersion()
    binary = tvm_nvcc.compile_cuda(code, target_format="cubin", arch=arch, compiler="nvrtc")
    return binary, [f"--gpu-architecture={arch}", "(tvm.support.nvcc NVRTC defaults)"], f"{major}.{minor}"


_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()


def kernel_names(code: str) -> list[str]:
    found = re.findall(r'__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(', code)
    return list(dict.fromkeys(found))  # declared, then defined: once each


# ------------------------------------------------------------------------------------------------
# TVM hooks
# ------------------------------------------------------------------------------------------------

_REGISTERED = False


def register() -> None:
    """Install convtvm's compile hooks into TVM (idempotent; done on import of this module)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tvm  # noqa: F401
    import tvm.support.nvcc  # noqa: F401 - TVM's defaults register first; ours override them
    import tvm_ffi
    tvm_ffi.register_global_func("tvm_callback_cuda_postproc", _postproc, override=True)
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", _runtime_compile, override=True)
    # worker processes (MetaSchedule's LocalBuilder / LocalRunner) do not import convtvm: there
    # TVM's own callback runs; make it use the same compiler
    try:
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", compiler()[0])
    except RuntimeError:
        pass
    _REGISTERED = True


_LAZY = threading.local()


@contextlib.contextmanager
def lazy():
    """Within this block builds only generate CUDA C; nvcc runs when the kernels are first needed
    (``kernels(m)``, export, a GPU run). For checks of scheduling and code generation alone."""
    prev = getattr(_LAZY, "on", False)
    _LAZY.on = True
    try:
        yield
    finally:
        _LAZY.on = prev


def _postproc(code, target=None):
    arch = _target_arch(target)
    if arch is not None and not getattr(_LAZY, "on", False):
        compile_source(str(code), arch)
    return code


def _runtime_compile(code, *_rest):
    code = str(code)
    sha = hashlib.sha256(code.encode()).hexdigest()
    current = _target_arch(None)
    with _LOCK:
        built = [k for (s, a), k in _CACHE.items() if s == sha]
    for k in built:
        if current is None or k.arch == current:
            return bytearray(k.binary)
    arch = current or device_arch()
    if arch is None:
        raise RuntimeError("cannot tell which CUDA arch to compile for: no target in scope and no GPU")
    return bytearray(compile_source(code, arch).binary)


def _target_arch(target):
    try:
        import tvm
        target = target if target is not None else tvm.target.Target.current(allow_none=True)
        if target is None or target.kind.name != "cuda":
            return None
        arch = target.attrs.get("arch")
        return str(arch) if arch else None
    except Exception:  # noqa: BLE001 - no target information: the caller decides
        return None


def device_arch(index: int = 0) -> str | None:
    """"sm_XX" of the local GPU, or None without one (or without TVM's CUDA runtime)."""
    import tvm
    dev = tvm.cuda(index)
    if not dev.exist:
        return None
    return "sm_" + str(dev.compute_version).replace(".", "")


# ------------------------------------------------------------------------------------------------
# Kernels of a built module
# ------------------------------------------------------------------------------------------------

def device_modules(lib) -> list:
    """The CUDA device modules imported by a built library (an Executable or a runtime Module)."""
    root = getattr(lib, "mod", lib)
    found, stack, seen = [], [root], set()
    while stack:
        m = stack.pop()
        for imp in m.imports:
            if id(imp) in seen:
                continue
            seen.add(id(imp))
            if imp.kind == "cuda":
                found.append(imp)
            stack.append(imp)
    return found


def source(module) -> str:
    """The CUDA C of a built convtvm Module (or TVM library)."""
    lib = getattr(module, "lib", module)
    return "\n".join(str(m.inspect_source("cuda")) for m in device_modules(lib))


def kernels(module, arch: str | None = None) -> list[Kernels]:
    """The compiled kernels of a built convtvm Module: one Kernels per CUDA device module."""
    lib = getattr(module, "lib", module)
    if arch is None:
        arch = _module_arch(module)
    out = []
    for m in device_modules(lib):
        code = str(m.inspect_source("cuda"))
        if not code:
            raise ValueError("this CUDA module holds no source to compile (a module loaded from disk carries "
                             "its kernels already: see exported_kernels(path))")
        out.append(compile_source(code, arch))
    return out


def _module_arch(module) -> str:
    target = getattr(module, "target", None)
    if target is not None and getattr(target, "kind", None) == "cuda":
        import json
        return json.loads(target.target_json).get("arch", "sm_90")
    raise ValueError("pass arch= (e.g. 'sm_90'): cannot tell the target arch of this module")


# ------------------------------------------------------------------------------------------------
# Export: the .so carries the compiled kernels
# ------------------------------------------------------------------------------------------------

def export_library(module, path: str, arch: str | None = None) -> None:
    """``lib.export_library(path)`` with every CUDA device module stored compiled (a fatbin for the
    target's arch) instead of as CUDA source. ``module``: a convtvm Module, or a TVM library with
    ``arch`` given."""
    arch = check_arch(arch) if arch else _module_arch(module)
    lib = getattr(module, "lib", module)

    def fpack_imports(mod, is_system_lib, prefix, workspace_dir):
        from tvm.runtime import _ffi_api
        text = str(_ffi_api.ModulePackImportsToC(mod, is_system_lib, prefix))
        m = re.search(r"const unsigned char (\w+)\[(\d+)\] = \{(.*?)\};", text, re.S)
        if m is None:
            raise RuntimeError("unexpected output of ModulePackImportsToC in this TVM version")
        blob = bytes.fromhex(re.sub(r"0x|[,\s]", "", m.group(3)))
        if len(blob) != int(m.group(2)):
            raise RuntimeError("could not read TVM's packed import blob")
        blob = _patch_blob(blob, arch)
        body = ",\n".join(",".join(f"0x{b:02x}" for b in blob[i:i + 20]) for i in range(0, len(blob), 20))
        text = text[:m.start()] + f"const unsigned char {m.group(1)}[{len(blob)}] = {{\n{body}\n}};" + text[m.end():]
        out = os.path.join(workspace_dir, f"{prefix}devc.c")
        with open(out, "w") as f:
            f.write(text)
        return out

    lib.export_library(path, fpack_imports=fpack_imports)


def manifest_entry(path) -> dict:
    """The manifest's "cuda" record, read from the exported file itself."""
    mods = exported_kernels(path)
    if not mods:
        raise RuntimeError(f"{path}: no CUDA device module in the exported library")
    first = mods[0]
    return {**{k: first[k] for k in ("arch", "format", "kernels", "contents", "binary_bytes", "binary_sha256")},
            "compiler": first.get("compiler"), "flags": first.get("flags"),
            "modules": len(mods)}


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u64(self) -> int:
        v = struct.unpack_from("<Q", self.data, self.pos)[0]
        self.pos += 8
        return v

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated")
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def bytes_(self) -> bytes:
        return self.raw(self.u64())

    def str_(self) -> str:
        return self.bytes_().decode()


def _lp(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _read_fmap(r: _Reader) -> list[str]:
    names = []
    for _ in range(r.u64()):
        names.append(r.str_())  # key
        r.str_()  # FunctionInfo.name
        r.raw(4 * r.u64())  # arg_types: DLDataType (u8 code, u8 bits, u16 lanes)
        for _ in range(r.u64()):  # launch_param_tags
            r.str_()
        r.raw(4 * r.u64())  # arg_extra_tags (int enum)
    return names


def _split_blob(blob: bytes):
    """TVM's packed-imports blob -> (header bytes, [(kind, payload or None)])."""
    r = _Reader(blob)
    total = r.u64()
    if total != len(blob) - 8:
        raise ValueError("bad blob length")
    for _ in range(2):  # import tree (CSR): row pointers, then child indices
        r.raw(8 * r.u64())
    header = blob[8:r.pos]
    entries = []
    while r.pos < len(blob):
        kind = r.str_()
        entries.append((kind, None if kind == "_lib" else r.bytes_()))
    return header, entries


def _split_cuda(payload: bytes):
    """A CUDA device module's bytes -> (fmt, fmap bytes, kernel names, code)."""
    r = _Reader(payload)
    fmt = r.str_()
    start = r.pos
    names = _read_fmap(r)
    fmap = payload[start:r.pos]
    code = r.bytes_()
    if r.pos != len(payload):
        raise ValueError("trailing bytes")
    return fmt, fmap, names, code


def _patch_blob(blob: bytes, arch: str) -> bytes:
    try:
        header, entries = _split_blob(blob)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise RuntimeError(f"unrecognised packed-module layout in this TVM version ({e})") from None
    out = [header]
    for kind, payload in entries:
        if kind == "cuda":
            try:
                fmt, fmap, _, code = _split_cuda(payload)
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                raise RuntimeError(f"unrecognised CUDA module layout in this TVM version ({e})") from None
            if fmt == "cuda":  # source: compile it (a cache hit after build)
                k = compile_source(code.decode(), arch)
                payload = _lp(k.fmt.encode()) + fmap + _lp(k.binary)
            elif describe(code):  # compiled already (TVM's CUDA runtime JIT-compiled it on a GPU machine)
                payload = _lp(b"fatbin" if code[:4] == struct.pack("<I", FATBIN_MAGIC) else fmt.encode()) + fmap \
                    + _lp(code)
            else:
                raise RuntimeError(f"CUDA module already compiled as {fmt!r} with no recognisable binary")
        out.append(_lp(kind.encode()) + (b"" if payload is None else _lp(payload)))
    body = b"".join(out)
    return struct.pack("<Q", len(body)) + body


def exported_kernels(path) -> list[dict]:
    """The CUDA device modules stored in an exported ``.so`` (read from its bytes; no GPU needed):
    [{"format", "kernels", "arch", "contents", "binary_bytes", "binary_sha256"}]."""
    blob = _library_blob(path)
    _, entries = _split_blob(blob)
    found = []
    for kind, payload in entries:
        if kind != "cuda":
            continue
        fmt, _, names, code = _split_cuda(payload)
        contents = describe(code)
        sass = [a for k, a in contents if k == "sass"]
        cached = next((k for k in list(_CACHE.values()) if k.binary == code), None)
        found.append({"format": fmt, "kernels": names, "arch": sass[0] if sass else None,
                      "contents": [f"{k}:{a}" for k, a in contents], "binary_bytes": len(code),
                      "binary_sha256": hashlib.sha256(code).hexdigest(),
                      "compiler": cached.compiler if cached else None,
                      "flags": list(cached.flags) if cached else None, "binary": code})
    return found


def _library_blob(path) -> bytes:
    """The bytes of ``__tvm_ffi__library_bin`` in an ELF64 shared library."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 shared library")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for sec in sections:
        if sec[1] not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[sec[6]]
        for off in range(sec[4], sec[4] + sec[5], 24):
            st_name, _, _, _, st_value, st_size = struct.unpack_from("<IBBHQQ", data, off)
            start = strtab[4] + st_name
            name = data[start:data.index(b"\0", start)]
            if not name.endswith(b"_library_bin") or not name.startswith(b"__tvm_ffi_"):
                continue
            for s in sections:  # virtual address -> file offset
                if s[2] & 2 and s[1] != 8 and s[3] <= st_value < s[3] + s[5]:  # SHF_ALLOC, not SHT_NOBITS
                    pos = s[4] + st_value - s[3]
                    n, = struct.unpack_from("<Q", data, pos)
                    return data[pos:pos + 8 + n]
    raise ValueError(f"{path}: no packed TVM modules (__tvm_ffi__library_bin) in this library")


# ------------------------------------------------------------------------------------------------
# Device binaries
# ------------------------------------------------------------------------------------------------

def describe(binary: bytes) -> list[tuple[str, str]]:
    """What a fatbin / cubin / PTX holds: [("sass", "sm_90"), ("ptx", "compute_90")]."""
    binary = bytes(binary)
    if len(binary) >= 16 and struct.unpack_from("<I", binary, 0)[0] == FATBIN_MAGIC:
        _, _, hsize, fsize = struct.unpack_from("<IHHQ", binary, 0)
        off, end, out = hsize, hsize + fsize, []
        while off + 32 <= min(end, len(binary)):
            kind, _, ehsize, size = struct.unpack_from("<HHIQ", binary, off)
            arch = struct.unpack_from("<I", binary, off + 28)[0]
            if kind == 2:
                out.append(("sass", f"sm_{arch}"))
            elif kind == 1:
                out.append(("ptx", f"compute_{arch}"))
            off += ehsize + size
        return out
    if binary[:4] == b"\x7fELF":
        return [("sass", f"sm_{_elf_sm(binary)}")]
    m = re.search(rb"\.target\s+(sm_\d+[af]?)", binary[:4096])
    if m:
        return [("ptx", m.group(1).decode().replace("sm_", "compute_"))]
    return []


def _elf_sm(binary: bytes) -> int:
    """SM number of a CUDA cubin (ELF e_flags; CUDA 12.8+ ABI v8 moved it up a byte)."""
    abi = binary[8]
    flags, = struct.unpack_from("<I", binary, 0x30)
    return (flags >> 8) & 0xFF if abi >= 8 else flags & 0xFF


register()
