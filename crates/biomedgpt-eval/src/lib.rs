//! Evaluation for BioMedGPT: the PubChemQA / UniProtQA and multiple-choice datasets, the
//! paper's text metrics and the baselines reported beside model numbers.

pub mod baseline;
pub mod data;
pub mod metrics;
