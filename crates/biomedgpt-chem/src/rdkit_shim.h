#pragma once
#include "rust/cxx.h"

namespace biomedgpt {
struct RawMol;
struct RawShape;
// Parses SMILES with RDKit's defaults (sanitization, aromaticity, implicit Hs removed); throws
// std::runtime_error with RDKit's own message on failure.
RawMol parse_smiles(rust::Str smiles);
// What makes RDKit's sanitization slow, read from the SMILES parsed without it: dummy atoms that
// can sit in rings (kekulization tries every subset of them) and the rings of the largest fused
// system that may be aromatic (aromaticity tries their combinations). Throws on syntax errors.
RawShape measure_smiles(rust::Str smiles);
// The on bits of RDKit's Morgan (ECFP-like) bit-vector fingerprint, as
// `GetMorganFingerprintAsBitVect(mol, radius, nBits)` computes it.
rust::Vec<uint32_t> morgan_fingerprint(rust::Str smiles, uint32_t radius, uint32_t bits);
}  // namespace biomedgpt
