#!/usr/bin/env bash
# Pack what a GPU machine (Python 3.12, torch preinstalled, no network) needs to run convtvm on CUDA:
#
#   build/gpu/tvm-<version>.tar.xz    the installed `tvm` package (py3-none: any Python) without 3rdparty/, web/,
#                                     src/, __pycache__, plus its dist-info; xz -6 (~62 MB)
#   build/gpu/wheels/                 cp312 manylinux x86_64 wheels: apache-tvm-ffi==0.1.14.post1 (Cython core,
#                                     per-Python), xgboost-cpu (MetaSchedule's cost model), ml_dtypes, psutil,
#                                     cloudpickle (~10 MB); --with-scipy adds numpy + scipy (xgboost needs scipy)
#   build/gpu/cuda-nvcc-<ver>.tar.xz  (unless --no-nvcc) a minimal nvcc toolchain from this machine's CUDA
#                                     toolkit (nvcc, cicc, ptxas, fatbinary, cudafe++, headers, libdevice) plus
#                                     libcudart.so.13, which the TVM wheel's CUDA runtime links against
#
# Each file is under the device tool's 64 MiB per-call transfer limit; send them in separate calls
# (tools/README.md). Needs network for `pip download` (PyPI), and the local .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-build/gpu}
WITH_NVCC=1
WITH_SCIPY=0
FORCE=0
for a in "$@"; do
  case "$a" in
    --no-nvcc) WITH_NVCC=0 ;;
    --force) FORCE=1 ;;
    --with-scipy) WITH_SCIPY=1 ;;
    -h|--help) sed -n 2,18p "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT/wheels"

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TVM_VER=$("$PY" -c 'import importlib.metadata as m; print(m.version("apache-tvm"))')
FFI_VER=$("$PY" -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))')
[ "$FFI_VER" = "0.1.14.post1" ] || echo "warning: local apache-tvm-ffi is $FFI_VER; packing 0.1.14.post1 anyway" >&2
DIST=$(cd "$SITE" && ls -d apache_tvm-"$TVM_VER".dist-info)

# 1. the tvm package
TAR="$OUT/tvm-$TVM_VER.tar.xz"
if [ "$FORCE" = 0 ] && [ -s "$TAR" ] && [ "$TAR" -nt "$SITE/$DIST" ]; then
  echo "have $TAR (--force to repack)"
else
  echo "packing $SITE/tvm ($TVM_VER) -> $TAR (xz -6; several minutes)"
  tar -C "$SITE" --exclude='tvm/3rdparty' --exclude='tvm/web' --exclude='tvm/src' --exclude='__pycache__' \
      -cf - tvm "$DIST" | xz -6 -T"${XZ_THREADS:-2}" > "$TAR.tmp"
  mv "$TAR.tmp" "$TAR"
fi

# 2. wheels for Python 3.12 (pinned to what this project runs with)
ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PKGS=("apache-tvm-ffi==0.1.14.post1" "xgboost-cpu==$(ver xgboost-cpu 2>/dev/null || echo 3.2.0)"
      "ml_dtypes==$(ver ml_dtypes)" "psutil==$(ver psutil)" "cloudpickle==$(ver cloudpickle)")
if [ "$WITH_SCIPY" = 1 ]; then PKGS+=("numpy==$(ver numpy)" "scipy==$(ver scipy)"); fi
echo "downloading cp312 wheels: ${PKGS[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 -d "$OUT/wheels" "${PKGS[@]}"

# 3. a minimal nvcc toolchain (the GPU machine may have none) + libcudart.so.13
if [ "$WITH_NVCC" = 1 ]; then
  NVCC=$("$PY" -c 'from convtvm.backends import cuda_tools; print(cuda_tools.find_nvcc() or "")')
  [ -n "$NVCC" ] || { echo "no nvcc here to pack (use --no-nvcc)" >&2; exit 1; }
  # resolve wrappers such as /usr/local/bin/nvcc -> exec /usr/local/cuda-13.0/bin/nvcc
  if head -c 2 "$NVCC" | grep -q '#!'; then NVCC=$(grep -o '/[^ ]*/bin/nvcc' "$NVCC" | head -1); fi
  CUDA=$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)
  CVER=$("$NVCC" --version | grep -o 'V[0-9][0-9.]*' | head -1 | tr -d V)
  NTAR="$OUT/cuda-nvcc-$CVER.tar.xz"
  if [ "$FORCE" = 0 ] && [ -s "$NTAR" ]; then
    echo "have $NTAR (--force to repack)"
  else
    STAGE=$(mktemp -d)
    trap 'rm -rf "$STAGE"' EXIT
    T="$STAGE/cuda-nvcc"
    mkdir -p "$T/bin" "$T/nvvm" "$T/lib"
    cp -a "$CUDA"/bin/{nvcc,nvcc.profile,cudafe++,fatbinary,ptxas,crt} "$T/bin/"
    cp -a "$CUDA"/nvvm/bin "$CUDA"/nvvm/libdevice "$T/nvvm/"
    cp -a "$CUDA"/include "$T/"
    cp -aL "$CUDA"/lib*/libcudart.so.[0-9]* "$T/lib/" 2>/dev/null || cp -aL "$CUDA"/lib64/libcudart.so.* "$T/lib/"
    echo "$CVER" > "$T/VERSION"
    echo "packing nvcc $CVER from $CUDA -> $NTAR (several minutes)"
    tar -C "$STAGE" -cf - cuda-nvcc | xz -6 -T"${XZ_THREADS:-2}" > "$NTAR.tmp"
    mv "$NTAR.tmp" "$NTAR"
  fi
fi

echo
ls -la "$OUT" "$OUT/wheels"
du -sh "$OUT"/* | sed 's/^/  /'
for f in "$OUT"/*.tar.xz "$OUT/wheels"; do
  s=$(du -sb "$f" | cut -f1)
  [ "$s" -lt $((64 * 1024 * 1024 - 2 * 1024 * 1024)) ] || echo "warning: $f is $s bytes: over the 64 MiB per-call transfer" >&2
done
