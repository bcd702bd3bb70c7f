#include "biomedgpt-chem/src/rdkit_shim.h"
#include "biomedgpt-chem/src/rdkit.rs.h"

#include <GraphMol/GraphMol.h>
#include <DataStructs/ExplicitBitVect.h>
#include <GraphMol/Fingerprints/MorganFingerprints.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RingInfo.h>
#include <GraphMol/SmilesParse/SmilesParse.h>
#include <RDGeneral/RDLog.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace biomedgpt {

// RDKit's error log is process-global; parses that redirect it take turns.
static std::mutex log_mutex;

static std::unique_ptr<RDKit::RWMol> parse(rust::Str smiles, bool sanitize = true) {
  const std::string smi(smiles.data(), smiles.size());
  std::ostringstream captured;
  std::unique_ptr<RDKit::RWMol> mol;
  std::string error;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    RDLog::InitLogs();
    // Parse errors are reported through the log, not as exceptions: capture them so the caller
    // can quote RDKit's reason, and so nothing is printed.
    std::ostream *saved = rdErrorLog ? rdErrorLog->dp_dest : nullptr;
    if (rdErrorLog) rdErrorLog->dp_dest = &captured;
    // Warnings ("not removing hydrogen atom without neighbors", stereo clean-ups) describe what
    // RDKit's sanitization did; the result is what the reference sees, so they are not shown.
    std::ostringstream warnings;
    std::ostream *saved_warning = rdWarningLog ? rdWarningLog->dp_dest : nullptr;
    if (rdWarningLog) rdWarningLog->dp_dest = &warnings;
    try {
      if (sanitize) {
        mol.reset(RDKit::SmilesToMol(smi));
      } else {
        RDKit::SmilesParserParams params;
        params.sanitize = false;
        params.removeHs = false;
        mol.reset(RDKit::SmilesToMol(smi, params));
      }
    } catch (const std::exception &e) {  // sanitization: valence, kekulization, ...
      error = e.what();
    }
    if (rdErrorLog) rdErrorLog->dp_dest = saved;
    if (rdWarningLog) rdWarningLog->dp_dest = saved_warning;
  }
  if (!mol) {
    if (error.empty()) error = captured.str();
    if (error.empty()) error = "RDKit could not parse it";
    throw std::runtime_error(error);
  }
  return mol;
}

RawMol parse_smiles(rust::Str smiles) {
  const auto mol = parse(smiles);
  RawMol out;
  for (const auto atom : mol->atoms()) {
    out.atoms.push_back(RawAtom{static_cast<int32_t>(atom->getAtomicNum()),
                                static_cast<int32_t>(atom->getChiralTag())});
  }
  for (const auto bond : mol->bonds()) {
    out.bonds.push_back(RawBond{bond->getBeginAtomIdx(), bond->getEndAtomIdx(),
                                static_cast<int32_t>(bond->getBondType()),
                                static_cast<int32_t>(bond->getBondDir())});
  }
  return out;
}

// A ring atom that cannot be aromatic: a neutral carbon, not written aromatic, with single bonds
// only (sp3). RDKit's aromaticity never takes a ring holding one; any other ring may be.
static bool saturated_carbon(const RDKit::ROMol &mol, const RDKit::Atom *atom) {
  if (atom->getAtomicNum() != 6 || atom->getIsAromatic() || atom->getFormalCharge() != 0 ||
      atom->getNumRadicalElectrons() != 0) {
    return false;
  }
  for (const auto bond : mol.atomBonds(atom)) {
    if (bond->getBondType() != RDKit::Bond::SINGLE || bond->getIsAromatic()) return false;
  }
  return true;
}

RawShape measure_smiles(rust::Str smiles) {
  const auto mol = parse(smiles, false);
  RawShape out{0, 0};
  for (const auto atom : mol->atoms()) {
    // Only a dummy with two or more neighbours can sit inside a ring.
    if (atom->getAtomicNum() == 0 && atom->getDegree() >= 2) ++out.ring_dummies;
  }
  RDKit::VECT_INT_VECT atom_rings;
  RDKit::MolOps::findSSSR(*mol, atom_rings);
  const auto &bond_rings = mol->getRingInfo()->bondRings();
  // Rings that may be aromatic, joined when they share a bond (RDKit's fused systems).
  std::vector<size_t> candidates;
  for (size_t r = 0; r < atom_rings.size() && r < bond_rings.size(); ++r) {
    const auto &ring = atom_rings[r];
    if (std::none_of(ring.begin(), ring.end(),
                     [&](int a) { return saturated_carbon(*mol, mol->getAtomWithIdx(a)); })) {
      candidates.push_back(r);
    }
  }
  std::vector<size_t> root(candidates.size());
  std::iota(root.begin(), root.end(), 0);
  auto find = [&](size_t i) {
    while (root[i] != i) i = root[i] = root[root[i]];
    return i;
  };
  for (size_t i = 0; i < candidates.size(); ++i) {
    for (size_t j = i + 1; j < candidates.size(); ++j) {
      const auto &a = bond_rings[candidates[i]];
      const auto &b = bond_rings[candidates[j]];
      const bool share = std::any_of(a.begin(), a.end(),
                                     [&](int x) { return std::find(b.begin(), b.end(), x) != b.end(); });
      if (share) root[find(i)] = find(j);
    }
  }
  std::vector<uint32_t> size(candidates.size(), 0);
  for (size_t i = 0; i < candidates.size(); ++i) {
    out.fused_rings = std::max(out.fused_rings, ++size[find(i)]);
  }
  return out;
}

rust::Vec<uint32_t> morgan_fingerprint(rust::Str smiles, uint32_t radius, uint32_t bits) {
  const auto mol = parse(smiles);
  std::unique_ptr<ExplicitBitVect> fp(
      RDKit::MorganFingerprints::getFingerprintAsBitVect(*mol, radius, bits));
  std::vector<int> on;
  fp->getOnBits(on);
  rust::Vec<uint32_t> out;
  for (const int bit : on) out.push_back(static_cast<uint32_t>(bit));
  return out;
}

}  // namespace biomedgpt
