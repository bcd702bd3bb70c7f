#!/usr/bin/env python3
"""Checks a GPU build of `biomedgpt` against the committed PyTorch fixtures.

CI has no GPU, so the parity tests run on Burn's CPU backend only. This script is the same proof
for a GPU backend, through the CLI a user runs: every model is loaded from the fixture
directories, run with `--device DEVICE`, and its outputs are compared with what transformers,
torch-geometric-style GIN and the BioMedGPT reference produced (tests/fixtures/*/make_fixtures.py).

    cargo build --release -p biomedgpt-cli --features wgpu     # or cuda
    python3 tests/gpu/check_device.py --bin target/release/biomedgpt --device wgpu

Needs python3 with numpy (nothing else). Every check is a new process: with the `vulkan`
feature (kernel autotuning) each one tunes its shapes first, so use `--only` and allow for an hour. Exits non-zero if any check fails; prints one line per
check with the largest error found.

Tolerances: f32 outputs must agree within 1e-4 x (1 + |expected|), the CPU tests' bound (GPU
kernels sum in another order; observed errors are ~1e-6). f16 runs are compared with the f32
reference within 3e-2 x (1 + |expected|): f16 keeps 11 significant bits, and the tiny random
models' logits pass through 2-4 layers of rounding. Generation must give the reference's token ids
exactly in f32 (greedy and 5-beam search with repetition penalty 1.5). Training: the loss curve of a
short adapter run on the device must match the same run on the CPU within 1e-3 relative.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
FAILURES = []
# The bounds of the docstring, relative to 1 + |expected|: f32 as the CPU tests, f16 vs f32 output.
F32_BOUND, F16_BOUND = 1e-4, 3e-2
DTYPE_BOUNDS = (("f32", F32_BOUND), ("f16", F16_BOUND))


def run(bin_, args, cwd=ROOT):
    proc = subprocess.run([str(bin_), *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`biomedgpt {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def compare(name, got, want, rel):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        report(name, False, f"shape {got.shape}, expected {want.shape}")
        return
    if not np.all(np.isfinite(got)):
        report(name, False, "non-finite values")
        return
    err = np.abs(got - want) / (1.0 + np.abs(want))
    report(name, float(err.max()) <= rel, f"max |got-want|/(1+|want|) = {err.max():.2e} (bound {rel:.0e})")


def check(name, fn):
    try:
        fn()
    except Exception as e:  # one broken check must not hide the others
        report(name, False, str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
        print(str(e), file=sys.stderr)


def llama(bin_, device, tmp):
    for case in sorted((FIX / "llama").iterdir()):
        exp = case / "expected.json"
        if not exp.exists():
            continue
        fx = json.loads(exp.read_text())
        want = np.load(case / "logits.npy")
        ids = ",".join(map(str, fx["input_ids"]))
        for dtype, rel in DTYPE_BOUNDS:
            def one(dtype=dtype, rel=rel):
                out = tmp / f"{case.name}-{dtype}.npy"
                run(bin_, ["inspect", "logits", "--model", str(case), "--token-ids", ids, "--dtype", dtype,
                           "--device", device, "--out", str(out)])
                got = np.load(out)[fx.get("logits_from", 0):]
                compare(f"llama {case.name} logits {dtype}", got, want, rel)
            check(f"llama {case.name} logits {dtype}", one)


def esm(bin_, device, tmp):
    for case in sorted((FIX / "esm").iterdir()):
        exp = case / "expected.json"
        if not exp.exists():
            continue
        fx = json.loads(exp.read_text())
        want = np.load(case / "last_hidden_state.npy")
        for i, seq in enumerate(fx["sequences"]):
            if "<" in seq:  # special tokens are not sequence letters on the CLI
                continue
            n = len(seq) + 2
            for dtype, rel in DTYPE_BOUNDS:
                def one(i=i, seq=seq, n=n, dtype=dtype, rel=rel):
                    out = tmp / f"{case.name}-{i}-{dtype}.npy"
                    run(bin_, ["embed", "protein", "--model", str(case), "--sequence", seq, "--dtype", dtype,
                               "--device", device, "--out", str(out)])
                    compare(f"esm {case.name} seq{i} {dtype}", np.load(out), want[i, :n], rel)
                check(f"esm {case.name} seq{i} {dtype}", one)


def gin(bin_, device, tmp):
    graphs = json.loads((FIX / "gin" / "graphs.json").read_text())
    smiles = graphs["smiles"]
    src = tmp / "molecules.smi"
    src.write_text("".join(s + "\n" for s in smiles))
    for case in sorted((FIX / "gin").iterdir()):
        # The prefixed case is the fused checkpoint's layout; its JK-last output is expected_last.npy.
        prefixed = (case / "expected_last.npy").exists()
        expected = case / ("expected_last.npy" if prefixed else "expected.npy")
        if not expected.exists():
            continue
        prefix = ["--prefix", "mol_structure_encoder"] if prefixed else []

        def one(case=case, prefix=prefix, expected=expected):
            out = tmp / f"{case.name}.npz"
            run(bin_, ["embed", "molecule", "--model", str(case), *prefix, "--input", str(src), "--pool", "none",
                       "--device", device, "--out", str(out)])
            arrays = np.load(out)
            got = np.concatenate([arrays[f"line{k + 1}"] for k in range(len(smiles))])
            compare(f"gin {case.name} per-atom features", got, np.load(expected), F32_BOUND)
        check(f"gin {case.name}", one)


def biomedgpt(bin_, device, tmp):
    fx = json.loads((FIX / "biomedgpt" / "expected.json").read_text())
    model = str(FIX / "biomedgpt" / "tiny")
    columns = fx["_settings"]["logit_columns"]
    max_new = fx["_settings"]["max_new_tokens"]
    for name in ("text_only", "protein", "molecule", "mixed"):
        case = fx[name]
        (turn,) = case["turns"]
        inputs, question = [], None
        for kind, value in turn:
            if kind == "molecule":
                inputs += ["--smiles", value]
            elif kind == "protein":
                inputs += ["--protein", value]
            else:
                question = value

        def logits(name=name, inputs=inputs, question=question):
            out = tmp / f"biomedgpt-{name}.npy"
            run(bin_, ["inspect", "logits", "--model", model, *inputs, "--question", question, "--device", device,
                       "--out", str(out)])
            got = np.load(out)
            compare(f"biomedgpt {name} logits (sampled columns)", got[:, columns],
                    np.load(FIX / "biomedgpt" / f"logits_{name}.npy"), F32_BOUND)
            compare(f"biomedgpt {name} last-position logits", got[-1],
                    np.load(FIX / "biomedgpt" / f"last_logits_{name}.npy"), F32_BOUND)
        check(f"biomedgpt {name} logits", logits)

        for label, flags, key in (("greedy", [], "greedy_ids"),
                                  ("beam 5, penalty 1.5", ["--num-beams", "5", "--repetition-penalty", "1.5"], "beam_ids")):
            def generate(name=name, inputs=inputs, question=question, flags=flags, key=key, label=label):
                out = run(bin_, ["ask", "--model", model, *inputs, "--question", question, "--max-new-tokens",
                                 str(max_new), *flags, "--json", "--device", device])
                got = json.loads(out.strip().splitlines()[-1])["token_ids"]
                want = case[key]
                same = got == want
                first = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                report(f"biomedgpt {name} {label} ids", same,
                       f"{len(got)} tokens identical" if same else f"differ from position {first}: {got} vs {want}")
            check(f"biomedgpt {name} {label} ids", generate)


def train(bin_, device, tmp):
    def losses(dev, label):
        out = tmp / f"train-{label}"
        run(bin_, ["train", "--model", "tests/fixtures/biomedgpt/tiny", "--dataset", "pubchemqa=datasets/chebi",
                   "--dataset", "uniprotqa=datasets/swissprot", "--limit", "24", "--valid-limit", "6", "--lr", "1e-2",
                   "--warmup-steps", "2", "--batch-tokens", "600", "--grad-accum", "2", "--clip-norm", "1.0",
                   "--seed", "5", "--save-every", "0", "--eval-every", "0", "--max-steps", "8",
                   "--device", dev, "--out", str(out)])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return [r["loss"] for r in rows if "loss" in r]

    def one():
        cpu, gpu = losses("cpu", "cpu"), losses(device, "device")
        if len(cpu) != len(gpu) or not cpu:
            report("train adapters: loss curve vs CPU", False, f"{len(gpu)} losses on the device, {len(cpu)} on the CPU")
            return
        rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(gpu, cpu))
        report("train adapters: loss curve vs CPU", rel <= 1e-3,
               f"{len(cpu)} steps, max relative difference {rel:.2e}; first {gpu[0]:.5f} vs {cpu[0]:.5f}, "
               f"last {gpu[-1]:.5f} vs {cpu[-1]:.5f}")
    check("train adapters: loss curve vs CPU", one)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "biomedgpt"))
    ap.add_argument("--device", required=True, help="wgpu[:N] or cuda[:N] (cpu checks the script itself)")
    ap.add_argument("--only", nargs="*", choices=["llama", "esm", "gin", "biomedgpt", "train"])
    args = ap.parse_args()
    parts = {"llama": llama, "esm": esm, "gin": gin, "biomedgpt": biomedgpt, "train": train}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in parts.items():
            if not args.only or name in args.only:
                fn(Path(args.bin).resolve(), args.device, Path(tmp))
    print(f"\n{len(FAILURES)} failed" + (": " + ", ".join(FAILURES) if FAILURES else ""))
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
