#!/usr/bin/env bash
# The device machines here take at most 64 MiB of working tree per run (tracked files included),
# and the tree is ~56 MiB before the CUDA pack (~25 MiB). The GPU run needs neither the demo
# model nor the GGUF fixtures, so they step aside for that call and come back after it:
#
#   tests/gpu/aside.sh out      # before the device run: moves them to ../biomedgpt-gpu-aside
#   tests/gpu/aside.sh back     # after it (git checkout restores them too, if this is forgotten)
#   tests/gpu/aside.sh list     # the paths
set -euo pipefail
cd "$(dirname "$0")/../.."
PATHS=(models/demo/model-00001-of-00001.safetensors tests/fixtures/gguf)
STORE=../biomedgpt-gpu-aside
case "${1:-}" in
  list) printf '%s\n' "${PATHS[@]}" ;;
  out)
    for p in "${PATHS[@]}"; do
      [ -e "$p" ] || continue
      mkdir -p "$STORE/$(dirname "$p")"
      mv "$p" "$STORE/$p"
    done ;;
  back)
    for p in "${PATHS[@]}"; do
      [ -e "$STORE/$p" ] || continue
      mkdir -p "$(dirname "$p")"
      rm -rf "$p"
      mv "$STORE/$p" "$p"
    done
    git status --short -- "${PATHS[@]}" ;;
  *) echo "usage: $0 out|back|list" >&2; exit 2 ;;
esac
