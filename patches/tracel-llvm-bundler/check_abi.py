#!/usr/bin/env python3
"""Compares llvm-sys's bindings with the system LLVM's C headers, where a mismatch would silently
change what cubecl-llvm generates: every value of every `#[repr(C)]` enum llvm-sys declares (a C
program prints what the headers define), and the parameter count of every LLVM function that
pliron-llvm and cubecl-llvm call. Prints the differences; exits 1 if a value both sides name
differs. Needs python3, a C compiler and the LLVM headers (llvm-22-dev).

    patches/tracel-llvm-bundler/check_abi.py [--llvm-config PATH] [--registry DIR]

Findings for llvm-sys 231.0.2 against Debian's LLVM 22.1.8 are in README.md.
"""
import argparse
import glob
import pathlib
import re
import subprocess
import sys
import tempfile


def newest(registry, name):
    dirs = sorted(glob.glob(f"{registry}/*/{name}-[0-9]*"))
    if not dirs:
        sys.exit(f"no {name} sources under {registry} (run `cargo fetch` first)")
    return pathlib.Path(dirs[-1])


def rust_enums(root):
    """{enum: [(variant, value)]} of llvm-sys's C enums (implicit values counted as C does)."""
    enums = {}
    for f in root.glob("src/**/*.rs"):
        text = f.read_text()
        for m in re.finditer(r"#\[repr\(C\)\][^\n]*\n(?:\s*#\[[^\n]*\n)*\s*pub enum (\w+)\s*\{(.*?)\n\}", text, re.S):
            variants, value = [], -1
            for line in m.group(2).split("\n"):
                line = re.sub(r"//.*", "", line).strip().rstrip(",")
                v = re.match(r"(\w+)\s*(?:=\s*(.+))?$", line) if line and not line.startswith("#") else None
                if not v:
                    continue
                try:
                    value = int(v.group(2).replace("_", ""), 0) if v.group(2) else value + 1
                except ValueError:
                    continue
                variants.append((v.group(1), value))
            enums[m.group(1)] = variants
    return enums


def c_values(enums, include):
    """{variant: value} as the headers define them; variants the headers lack are left out."""
    headers = sorted(p.relative_to(include) for p in pathlib.Path(include, "llvm-c").glob("**/*.h"))
    names = [v for vs in enums.values() for v, _ in vs]
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = pathlib.Path(tmp, "values.c"), pathlib.Path(tmp, "values")
        while True:
            lines = ["#include <stdio.h>", *(f"#include <{h}>" for h in headers), "int main(void) {"]
            lines += [f'  printf("{n} %lld\\n", (long long){n});' for n in names]
            src.write_text("\n".join(lines + ["  return 0;", "}"]))
            cc = subprocess.run(["cc", "-w", "-fmax-errors=100000", f"-I{include}", str(src), "-o", str(exe)],
                                capture_output=True, text=True)
            if cc.returncode == 0:
                break
            undeclared = set(re.findall(r"[‘'](\w+)[’'] undeclared", cc.stderr))
            if not undeclared:
                sys.exit(cc.stderr[-3000:])
            names = [n for n in names if n not in undeclared]
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {n: int(v) for n, v in (line.split() for line in out.splitlines())}


def param_counts(include):
    counts = {}
    for f in pathlib.Path(include, "llvm-c").glob("**/*.h"):
        text = re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", f.read_text(), flags=re.S))
        for m in re.finditer(r"\b(LLVM\w+)\s*\(([^;{)]*)\)\s*;", text):
            args = m.group(2).strip()
            counts[m.group(1)] = 0 if args in ("", "void") else len(args.split(","))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llvm-config", default="/usr/lib/llvm-22/bin/llvm-config")
    ap.add_argument("--registry", default=str(pathlib.Path.home() / ".cargo/registry/src"))
    args = ap.parse_args()
    include = subprocess.run([args.llvm_config, "--includedir"], capture_output=True, text=True, check=True).stdout.strip()
    version = subprocess.run([args.llvm_config, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    sys_root = newest(args.registry, "llvm-sys")
    enums = rust_enums(sys_root)
    values = c_values(enums, include)
    differ, missing = [], []
    for enum, variants in sorted(enums.items()):
        for v, rust in variants:
            if v not in values:
                missing.append(f"{enum}::{v} ({rust})")
            elif values[v] != rust:
                differ.append(f"{enum}::{v}: {sys_root.name} {rust}, LLVM {version} {values[v]}")
    print(f"{sys_root.name} vs LLVM {version}: {sum(map(len, enums.values()))} values of {len(enums)} enums, "
          f"{len(differ)} differ, {len(missing)} not in the headers")
    for line in differ:
        print("  differs:", line)
    for line in missing:
        print("  not in LLVM", version + ":", line)

    rust_params = {}
    for f in sys_root.glob("src/**/*.rs"):
        for m in re.finditer(r"pub fn (LLVM\w+)\s*\((.*?)\)", f.read_text(), re.S):
            rust_params[m.group(1)] = len([a for a in m.group(2).split(",") if a.strip()])
    used = set()
    for crate in ("pliron-llvm", "cubecl-llvm"):
        for f in newest(args.registry, crate).glob("src/**/*.rs"):
            used |= set(re.findall(r"\b(LLVM[A-Za-z0-9]\w*)\s*\(", f.read_text()))
    c_params = param_counts(include)
    checked = [f for f in sorted(used) if f in rust_params and f in c_params]
    wrong = [f"{f}: {rust_params[f]} vs {c_params[f]}" for f in checked if rust_params[f] != c_params[f]]
    print(f"functions pliron-llvm/cubecl-llvm call: {len(checked)} declared on both sides, "
          f"{len(wrong)} with another parameter count" + "".join(f"\n  {w}" for w in wrong))
    sys.exit(1 if differ or wrong else 0)


if __name__ == "__main__":
    main()
