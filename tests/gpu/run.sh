#!/usr/bin/env bash
# The GPU run, in one command of at most 8 minutes, on a machine with an NVIDIA GPU, PyTorch,
# transformers and numpy but no network and no Rust: unpacks the CUDA build that
# tests/gpu/pack.sh made on a CPU machine (gpu-pack/biomedgpt-cuda.tar.xz), runs
# tests/gpu/check_device.py --device cuda (every PyTorch fixture) and benches/gpu.sh (ours next to
# transformers on the same random checkpoints), and writes what they print into OUTDIR:
# device.txt (nvidia-smi), check.txt, bench.log, results.jsonl, summary.md.
#
#   tests/gpu/run.sh OUTDIR      CHECK_S (default 150) and BENCH_S (default 300) bound the two parts
#
# On a machine without a GPU it stops after the first call, which must be the one-line
# "no NVIDIA driver" error. The device tool of this workplace carries at most 64 MiB: run
# tests/gpu/aside.sh out before the call (carry gpu-pack) and tests/gpu/aside.sh back after it.
set -uo pipefail
OUTDIR=$(realpath -m "${1:?usage: tests/gpu/run.sh OUTDIR}")
cd "$(dirname "$0")/../.."
mkdir -p "$OUTDIR"
PACK=gpu-pack/biomedgpt-cuda.tar.xz
[ -f "$PACK" ] || { echo "$PACK is missing: run tests/gpu/pack.sh on the build machine first" >&2; exit 1; }
work=$(mktemp -d /tmp/biomedgpt-gpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xJf "$PACK"
BIN="$work/biomedgpt-cuda/biomedgpt"
# The packed RDKit/Boost libraries, and NVRTC (cubecl-cuda compiles its kernels at run time)
# from the CUDA toolkit or PyTorch's wheels, wherever this image keeps it.
libs="$work/biomedgpt-cuda/lib"
for f in $( (ls /usr/local/cuda*/lib64/libnvrtc.so* /usr/local/cuda*/targets/*/lib/libnvrtc.so* 2>/dev/null;
             python3 -c 'import nvidia, pathlib; [print(p) for d in nvidia.__path__ for p in pathlib.Path(d).glob("*/lib/libnvrtc.so*")]' 2>/dev/null) | head -4); do
  libs="$libs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

{ nvidia-smi; echo; uname -a; "$BIN" --version; } > "$OUTDIR/device.txt" 2>&1
head -20 "$OUTDIR/device.txt"

# A first call alone: a missing driver or library shows here in one line, not 47 times.
if ! "$BIN" inspect logits --model tests/fixtures/llama/mha_untied_safetensors --token-ids 1,2 --device cuda --out "$work/first.npy"; then
  echo "the first CUDA call failed; stopping" | tee -a "$OUTDIR/device.txt" >&2
  exit 1
fi

PYTHONUNBUFFERED=1 timeout "${CHECK_S:-150}" python3 tests/gpu/check_device.py --bin "$BIN" --device cuda 2>&1 | tee "$OUTDIR/check.txt"
check=${PIPESTATUS[0]}
BIN="$BIN" DEVICE=cuda OUT="$OUTDIR" BENCH_DIR=/tmp/biomedgpt-bench-gpu timeout "${BENCH_S:-300}" benches/gpu.sh 2>&1 | tee "$OUTDIR/bench.log"
bench=${PIPESTATUS[0]}
# The tables of whatever finished, also when the time bound cut the benchmark short.
[ "$bench" -eq 0 ] || CASES="" OUT="$OUTDIR" BENCH_DIR=/tmp/biomedgpt-bench-gpu benches/gpu.sh 2>&1 | tee -a "$OUTDIR/bench.log"
echo "check_device.py exit $check, benches/gpu.sh exit $bench"
[ "$check" -eq 0 ] && [ "$bench" -eq 0 ]
