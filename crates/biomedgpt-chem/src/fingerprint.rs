//! Morgan (ECFP-like) bit fingerprints from RDKit and Tanimoto similarity, for the retrieval
//! baseline that answers with the most similar training molecule's answer.

use crate::featurize::{FeaturizeError, check_text, clean_reason, shown};
use crate::rdkit::ffi;

/// The sorted on bits of RDKit's `GetMorganFingerprintAsBitVect(mol, radius, n_bits)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub Vec<u32>);

/// Radius 2, 2048 bits: the usual ECFP4-like setting.
pub fn morgan_fingerprint(smiles: &str) -> Result<Fingerprint, FeaturizeError> {
    morgan_fingerprint_with(smiles, 2, 2048)
}

pub fn morgan_fingerprint_with(smiles: &str, radius: u32, n_bits: u32) -> Result<Fingerprint, FeaturizeError> {
    check_text(smiles)?;
    let mut bits = ffi::morgan_fingerprint(smiles, radius, n_bits)
        .map_err(|e| FeaturizeError::Invalid { smiles: shown(smiles), reason: clean_reason(e.what()) })?;
    bits.sort_unstable();
    Ok(Fingerprint(bits))
}

impl Fingerprint {
    /// |a ∩ b| / |a ∪ b| (RDKit's `TanimotoSimilarity`; two empty fingerprints give 0).
    pub fn tanimoto(&self, other: &Fingerprint) -> f64 {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j, mut common) = (0, 0, 0usize);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        let union = a.len() + b.len() - common;
        if union == 0 { 0.0 } else { common as f64 / union as f64 }
    }
}
