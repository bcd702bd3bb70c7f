#include "biomedgpt-chem/src/rdkit_shim.h"
#include "biomedgpt-chem/src/rdkit.rs.h"

#include <GraphMol/GraphMol.h>
#include <DataStructs/ExplicitBitVect.h>
#include <GraphMol/Fingerprints/MorganFingerprints.h>
#include <GraphMol/SmilesParse/SmilesParse.h>
#include <RDGeneral/RDLog.h>

#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace biomedgpt {

// RDKit's error log is process-global; parses that redirect it take turns.
static std::mutex log_mutex;

static std::unique_ptr<RDKit::RWMol> parse(rust::Str smiles) {
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
      mol.reset(RDKit::SmilesToMol(smi));
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
