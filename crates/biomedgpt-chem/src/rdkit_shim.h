#pragma once
#include "rust/cxx.h"

namespace biomedgpt {
struct RawMol;
// Parses SMILES with RDKit's defaults (sanitization, aromaticity, implicit Hs removed); throws
// std::runtime_error with RDKit's own message on failure.
RawMol parse_smiles(rust::Str smiles);
}  // namespace biomedgpt
