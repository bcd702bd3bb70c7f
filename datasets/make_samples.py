#!/usr/bin/env python3
"""Builds molecule and protein QA sets in the PubChemQA / UniProtQA layouts from data that ships
in Debian packages, with fixed train/valid/test splits.

    .venv/bin/python datasets/make_samples.py                  # the committed samples
    .venv/bin/python datasets/make_samples.py --full OUT_DIR   # the full sets

Needs the Debian packages emboss-data (ChEBI, GO), emboss-test (Swiss-Prot test entries) and
metastudent-data (Swiss-Prot sequences with GO annotations), and rdkit==2022.9.5 (the same
RDKit release as Debian's librdkit-dev, which `biomedgpt` parses SMILES with).

Molecules (chebi/): every ChEBI term that is not obsolete and has a SMILES synonym and a textual
definition. Question "Please describe this molecule." (PubChemQA's), answer = the definition.
SMILES that RDKit cannot parse are left out and counted; so are SMILES with `*` attachment
points (classes of molecules, not molecules).

Proteins (swissprot/): UniProtQA's four questions (function, official names, family,
subcellular locations) from the FUNCTION / DE / SIMILARITY / SUBCELLULAR LOCATION fields of
emboss-test's 100 Swiss-Prot entries; and, from metastudent-data's Swiss-Prot release (January
2014 GO annotations, BLAST databases), a function question answered by the names of the most
specific molecular-function and biological-process GO terms and a location question answered by
the most specific cellular-component terms (names from the GO release metastudent ships).

Splits: by SHA-1 of the entry id (ChEBI id, UniProt accession): 80% train, 10% valid, 10% test,
so an entry is in one split whatever else changes. Sizes are printed and written to stats.json.
"""

import argparse
import hashlib
import json
import re
import struct
from collections import defaultdict
from pathlib import Path

from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")

HERE = Path(__file__).resolve().parent
CHEBI = Path("/usr/share/EMBOSS/data/OBO/chebi.obo")
SWISS = Path("/usr/share/EMBOSS/test/swiss/seq.dat")
META = Path("/usr/share/metastudent-data/dataset_201401")
SAMPLE_SIZES = {"train": 4000, "valid": 300, "test": 300}
PROTEIN_SAMPLE_SIZES = {"train": 3000, "valid": 250, "test": 250}
NCBISTDAA = "-ABCDEFGHIKLMNPQRSTVWXYZU*OJ"
MAX_TERMS = 6


def split_of(key):
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "valid" if bucket < 90 else "test"


def order_key(key):
    return hashlib.sha1(("order:" + key).encode()).hexdigest()


# ---------------------------------------------------------------- molecules


def obo_terms(path):
    term = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == "[Term]":
            term = {"synonyms": []}
        elif line.startswith("[") or not line:
            if term is not None and line.startswith("["):
                term = None
            if term is not None and not line and "id" in term:
                yield term
                term = None
        elif term is not None:
            key, _, value = line.partition(": ")
            if key == "synonym":
                term["synonyms"].append(value)
            else:
                term.setdefault(key, value)
    if term is not None and "id" in term:
        yield term


def quoted(value):
    """The quoted string at the start of an OBO value, unescaped (OBO escapes \\ and \")."""
    return re.sub(r"\\(.)", r"\1", value[1:].rsplit('" ', 1)[0])


def chebi_records(stats):
    records = []
    for term in obo_terms(CHEBI):
        if term.get("is_obsolete") == "true":
            continue
        smiles = [quoted(s) for s in term["synonyms"] if " RELATED SMILES " in s]
        if not smiles or "def" not in term:
            continue
        stats["chebi_with_smiles_and_definition"] += 1
        smi = smiles[0]
        if "*" in smi:
            stats["chebi_left_out_attachment_points"] += 1
            continue
        if Chem.MolFromSmiles(smi) is None:
            stats["chebi_left_out_unparsable_smiles"] += 1
            continue
        records.append({
            "chebi_id": term["id"],
            "name": term.get("name", ""),
            "smiles": [smi],
            "question": "Please describe this molecule.",
            "answer": quoted(term["def"]),
        })
    return records


# ---------------------------------------------------------------- proteins


def swissprot_entries(path):
    entry = defaultdict(list)
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("//"):
            yield entry
            entry = defaultdict(list)
            continue
        code, body = line[:2], line[5:]
        entry[code].append(body)


def swissprot_comments(cc_lines):
    comments, current = [], None
    for line in cc_lines:
        if line.startswith("-!- "):
            current = line[4:]
            comments.append(current)
        elif line.startswith("    ") and comments:
            comments[-1] += " " + line.strip()
        elif line.startswith("---"):
            break
    out = defaultdict(list)
    for c in comments:
        topic, _, text = c.partition(": ")
        out[topic].append(re.sub(r"\s*\{ECO:[^}]*\}", "", text).strip())
    return out


def swissprot_records(sequences, stats):
    records = []
    for e in swissprot_entries(SWISS):
        acc = e["AC"][0].split(";")[0].strip()
        seq = "".join("".join(l.split()) for l in e["  "])
        sequences[acc] = seq
        cc = swissprot_comments(e["CC"])
        names = [m.group(1) for m in re.finditer(r"(?:RecName|AltName): Full=([^;{]+)", " ".join(e["DE"]))]
        qa = [
            ("What is the function of this protein?", " ".join(cc.get("FUNCTION", []))),
            ("What are the official names of this protein?", "; ".join(n.strip() for n in names)),
            ("What is the protein family that this protein belongs to?", " ".join(cc.get("SIMILARITY", []))),
            ("What are the subcellular locations of this protein?", " ".join(cc.get("SUBCELLULAR LOCATION", []))),
        ]
        for question, answer in qa:
            if answer.strip():
                records.append({"protein_accession": [acc], "question": question, "answer": answer.strip(), "source": "emboss-test"})
                stats["swissprot_test_records"] += 1
    return records


def blast_db(prefix):
    """(accession, sequence) of a BLAST v4 protein database (.pin index, .phr headers, .psq)."""
    pin = Path(str(prefix) + ".pin").read_bytes()
    version, dbtype, title_len = struct.unpack(">III", pin[:12])
    assert version == 4 and dbtype == 1, (prefix, version, dbtype)
    pos = 12 + title_len
    (date_len,) = struct.unpack(">I", pin[pos:pos + 4])
    pos += 4 + date_len
    (count,) = struct.unpack(">I", pin[pos:pos + 4])
    pos += 4 + 8 + 4
    header_offsets = struct.unpack(f">{count + 1}I", pin[pos:pos + 4 * (count + 1)])
    pos += 4 * (count + 1)
    seq_offsets = struct.unpack(f">{count + 1}I", pin[pos:pos + 4 * (count + 1)])
    phr = Path(str(prefix) + ".phr").read_bytes()
    psq = Path(str(prefix) + ".psq").read_bytes()
    for i in range(count):
        header = phr[header_offsets[i]:header_offsets[i + 1]]
        k = header.index(b"\x1a")  # the VisibleString of the title
        n = header[k + 1]
        if n & 0x80:
            width = n & 0x7F
            n = int.from_bytes(header[k + 2:k + 2 + width], "big")
            k += width
        title = header[k + 2:k + 2 + n].decode("ascii")
        accession = title.split("|")[0]
        residues = psq[seq_offsets[i]:seq_offsets[i + 1] - 1]
        yield accession, "".join(NCBISTDAA[b] for b in residues)


def go_names():
    names = {}
    for line in (META / "nameMapping.txt").read_text().splitlines():
        go, _, name = line.partition("\t")
        names[go] = name
    return names


def go_ancestors():
    ancestors = defaultdict(set)
    for line in (META / "fullTransitiveClosureGO.txt").read_text().splitlines():
        child, _, ancestor, _ = line.split("\t")
        ancestors[child].add(ancestor)
    return ancestors


def most_specific(terms, ancestors):
    terms = set(terms)
    implied = set().union(*(ancestors.get(t, set()) for t in terms)) if terms else set()
    return sorted(t for t in terms if t not in implied)


def metastudent_records(sequences, stats):
    names, ancestors = go_names(), go_ancestors()
    annotations = defaultdict(dict)
    for onto in ("MFO", "BPO", "CCO"):
        for line in (META / onto / "goasp_annot.dat").read_text().splitlines():
            acc, *terms = line.split("\t")
            annotations[acc][onto] = most_specific(terms, ancestors)
        for acc, seq in blast_db(META / onto / "goasp.fasta"):
            sequences.setdefault(acc, seq)

    def phrase(terms):
        named = [names[t] for t in terms if t in names][:MAX_TERMS]
        if len(named) <= 1:
            return "".join(named)
        return ", ".join(named[:-1]) + " and " + named[-1]

    records = []
    for acc in sorted(annotations):
        if acc not in sequences:
            stats["metastudent_without_sequence"] += 1
            continue
        a = annotations[acc]
        parts = []
        if a.get("MFO"):
            parts.append(f"Enables {phrase(a['MFO'])}.")
        if a.get("BPO"):
            parts.append(f"Involved in {phrase(a['BPO'])}.")
        if parts:
            records.append({"protein_accession": [acc], "question": "What is the function of this protein?", "answer": " ".join(parts), "source": "metastudent-data"})
        if a.get("CCO"):
            records.append({"protein_accession": [acc], "question": "What are the subcellular locations of this protein?", "answer": f"Located in {phrase(a['CCO'])}.", "source": "metastudent-data"})
    stats["metastudent_proteins"] = len(annotations)
    return records


# ---------------------------------------------------------------- output


def write_split_files(out, records, key, sizes, sequences=None, keep=frozenset()):
    out.mkdir(parents=True, exist_ok=True)
    splits = defaultdict(list)
    for r in records:
        splits[split_of(key(r))].append(r)
    counts = {}
    for name in ("train", "valid", "test"):
        rows = sorted(splits[name], key=lambda r: (order_key(key(r)), r["question"]))
        if sizes is not None:
            keys = sorted({key(r) for r in rows}, key=lambda k: (k not in keep, order_key(k)))[: sizes[name]]
            chosen = set(keys)
            rows = [r for r in rows if key(r) in chosen]
        (out / f"{name}.json").write_text(json.dumps(rows, indent=0, ensure_ascii=False) + "\n")
        counts[name] = len(rows)
    if sequences is not None:
        used = {acc for name in ("train", "valid", "test") for r in json.loads((out / f"{name}.json").read_text()) for acc in r["protein_accession"]}
        (out / "sequences.json").write_text(json.dumps({a: sequences[a] for a in sorted(used)}, indent=0) + "\n")
        counts["proteins"] = len(used)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", type=Path, help="write the full sets to this directory instead of the samples")
    args = parser.parse_args()
    stats = defaultdict(int)
    molecules = chebi_records(stats)
    sequences = {}
    proteins = swissprot_records(sequences, stats) + metastudent_records(sequences, stats)
    out = args.full or HERE
    full = args.full is not None
    stats["chebi"] = write_split_files(out / "chebi", molecules, lambda r: r["chebi_id"], None if full else SAMPLE_SIZES)
    # The emboss-test entries are all kept (they carry the richest answers); sampling is by protein.
    emboss_test = frozenset(r["protein_accession"][0] for r in proteins if r["source"] == "emboss-test")
    stats["swissprot"] = write_split_files(
        out / "swissprot", proteins, lambda r: r["protein_accession"][0],
        None if full else PROTEIN_SAMPLE_SIZES, sequences, keep=emboss_test,
    )
    stats["full"] = full
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
