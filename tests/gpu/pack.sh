#!/usr/bin/env bash
# Builds the CUDA binary here (no GPU, no CUDA toolkit needed) and packs what a GPU machine without
# network needs to run it: the stripped binary and the shared libraries it links that a stock CUDA
# image lacks (RDKit, Boost). Writes gpu-pack/biomedgpt-cuda.tar.xz (gpu-pack/ is git-ignored;
# give it to the device run as a carried path) and checks that the working tree plus the pack stay
# under the 64 MiB a device run here may carry (with tests/gpu/aside.sh's paths set aside). Then runs the binary with `--device cuda` here: with no
# NVIDIA driver it must print the one-line error, not panic.
#
#   tests/gpu/pack.sh            then, on the GPU machine: tests/gpu/run.sh OUTDIR
#
# CUDARC_CUDA_VERSION (default 13000): the CUDA driver API the binary binds to; the GPU machines
# here run driver 580 (CUDA 13.0). Use your driver's (`nvidia-smi`), e.g. 12080 for CUDA 12.8.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
LIMIT_MIB=64

echo "== cargo build --release -p biomedgpt-cli --features cuda (CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION)"
cargo build --release -p biomedgpt-cli --features cuda
bin="${CARGO_TARGET_DIR:-target}/release/biomedgpt"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/biomedgpt-cuda/lib"
strip -o "$stage/biomedgpt-cuda/biomedgpt" "$bin"
# Every shared library the binary loads except the C/C++ runtime, which the GPU image has.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libgcc_s.so*|libstdc++.so*|ld-linux*) ;;
    *) cp -L "$lib" "$stage/biomedgpt-cuda/lib/" ;;
  esac
done
mkdir -p gpu-pack
XZ_OPT=-9e tar -C "$stage" -cJf gpu-pack/biomedgpt-cuda.tar.xz.tmp biomedgpt-cuda
mv gpu-pack/biomedgpt-cuda.tar.xz.tmp gpu-pack/biomedgpt-cuda.tar.xz

# What a device run carries: the working tree without what tests/gpu/aside.sh sets aside, and the pack.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
aside_bytes=$(tests/gpu/aside.sh list | xargs du -sb 2>/dev/null | awk '{s += $1} END {print s + 0}')
pack_bytes=$(stat -c %s gpu-pack/biomedgpt-cuda.tar.xz)
echo "binary $(stat -c %s "$stage/biomedgpt-cuda/biomedgpt") bytes stripped, libraries: $(ls "$stage/biomedgpt-cuda/lib" | tr '\n' ' ')"
python3 - "$tree_bytes" "$aside_bytes" "$pack_bytes" "$LIMIT_MIB" <<'PY'
import sys
tree, aside, pack, limit = (int(a) for a in sys.argv[1:])
total = (tree - aside + pack) / 2**20
print(f"pack {pack / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB - set aside {aside / 2**20:.1f} MiB "
      f"(tests/gpu/aside.sh) = {total:.1f} MiB (limit {limit} MiB)")
sys.exit(0 if total < limit else f"over the {limit} MiB a device run carries")
PY

# Without a driver the CUDA device must be refused in one line, before any work.
if [ ! -e /dev/nvidiactl ]; then
  echo "== no NVIDIA driver here: --device cuda must say so"
  set +e
  msg=$("$bin" inspect logits --model tests/fixtures/llama/mha_untied_safetensors --token-ids 1,2 --device cuda --out "$stage/x.npy" 2>&1)
  rc=$?
  set -e
  echo "exit $rc: $msg"
  if [ "$rc" -eq 0 ] || [ "$(printf '%s\n' "$msg" | wc -l)" -ne 1 ] || ! grep -q "no NVIDIA driver" <<<"$msg"; then
    echo "expected a one-line 'no NVIDIA driver' error" >&2
    exit 1
  fi
fi
echo "packed: gpu-pack/biomedgpt-cuda.tar.xz"
