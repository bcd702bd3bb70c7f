//! `biomedgpt embed protein`: ESM-2 embeddings for sequences or FASTA files.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use biomedgpt_esm::{Alphabet, Esm, EsmConfig, Pool, open_fair_esm, open_hf_dir, parse_fasta};
use biomedgpt_io::{FloatType, npy};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum EmbedCommand {
    /// Protein embeddings with ESM-2.
    ///
    /// Output: with --pool none and one sequence, a float32 .npy of shape [L+2, hidden] (the <cls>
    /// and <eos> positions included); with --pool mean or cls, a .npy of shape [records, hidden]
    /// in input order; with --pool none and several records, an .npz holding one [L+2, hidden]
    /// array per record, named by the record's FASTA id (load with numpy.load).
    Protein(ProteinArgs),
}

#[derive(Args)]
pub struct ProteinArgs {
    /// HF ESM directory (config.json, vocab.txt, weights) or a fair-esm .pt file.
    #[arg(long)]
    model: PathBuf,
    /// HF config.json for a fair-esm file of a non-standard size.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One protein sequence (letters in either case).
    #[arg(long, conflicts_with = "fasta", required_unless_present = "fasta")]
    sequence: Option<String>,
    /// A FASTA file with one or more records.
    #[arg(long)]
    fasta: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Which hidden state: 0 = embeddings, N = the last layer (default, after the final norm).
    #[arg(long)]
    layer: Option<usize>,
    #[arg(long, default_value = "none")]
    pool: Pool,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Maximum tokens per sequence including <cls> and <eos> (BioMedGPT uses 1024).
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// Refuse sequences longer than --max-length instead of truncating them (with a warning).
    #[arg(long)]
    no_truncate: bool,
    #[arg(long, default_value = "f32")]
    dtype: FloatType,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(cmd: EmbedCommand) -> Result<()> {
    match cmd {
        EmbedCommand::Protein(args) => protein(args),
    }
}

fn load(args: &ProteinArgs) -> Result<(Esm, Alphabet)> {
    let device = crate::device::parse(&args.device)?;
    if args.model.is_file() {
        let config = match &args.config {
            Some(p) => Some(EsmConfig::from_file(p).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let esm = open_fair_esm(&args.model, config, args.dtype, &device)?;
        Ok((esm, Alphabet::esm2()))
    } else {
        Ok(open_hf_dir(&args.model, args.dtype, &device).with_context(|| format!("loading {}", args.model.display()))?)
    }
}

fn protein(args: ProteinArgs) -> Result<()> {
    let records: Vec<(String, String)> = match (&args.sequence, &args.fasta) {
        (Some(seq), _) => vec![("sequence".to_string(), seq.clone())],
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let records = parse_fasta(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if records.is_empty() {
                bail!("{}: no FASTA records", path.display());
            }
            records.into_iter().map(|r| (r.id, r.sequence)).collect()
        }
        (None, None) => unreachable!("clap requires --sequence or --fasta"),
    };
    let (esm, alphabet) = load(&args)?;
    if let Some(layer) = args.layer
        && layer > esm.config().num_hidden_layers
    {
        bail!("--layer {layer} does not exist: the model has layers 0..={}", esm.config().num_hidden_layers);
    }
    let mut encoded = Vec::with_capacity(records.len());
    for (id, seq) in &records {
        let e = alphabet.encode(id, seq, args.max_length, !args.no_truncate)?;
        if e.truncated > 0 {
            eprintln!("warning: {id}: truncated by {} residues to {} tokens", e.truncated, args.max_length);
        }
        encoded.push(e.ids);
    }

    let total = encoded.len();
    let start = Instant::now();
    let mut done = 0;
    let show = total > 1;
    let features = esm.embed(&encoded, args.batch_size, args.layer, args.pool, |n| {
        done += n;
        if show {
            let rate = done as f64 / start.elapsed().as_secs_f64();
            let eta = (total - done) as f64 / rate.max(1e-9);
            let filled = done * 30 / total;
            eprint!("\r[{}{}] {done}/{total} records, {rate:.1}/s, ETA {eta:.0}s ", "#".repeat(filled), ".".repeat(30 - filled));
            let _ = std::io::stderr().flush();
        }
    });
    if show {
        eprintln!();
    }

    let hidden = esm.config().hidden_size;
    match (args.pool, features.len()) {
        (Pool::None, 1) => npy::write_f32(&args.out, &[features[0].rows, hidden], &features[0].values)?,
        (Pool::None, _) => {
            let mut seen = std::collections::HashSet::new();
            let arrays = records
                .iter()
                .zip(features)
                .map(|((id, _), f)| {
                    let mut name: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
                    while !seen.insert(name.clone()) {
                        name.push('_');
                    }
                    (name, vec![f.rows, f.hidden], f.values)
                })
                .collect::<Vec<_>>();
            npy::write_npz_f32(&args.out, &arrays)?
        }
        (_, n) => {
            let values: Vec<f32> = features.into_iter().flat_map(|f| f.values).collect();
            npy::write_f32(&args.out, &[n, hidden], &values)?
        }
    }
    eprintln!("wrote {total} record(s) to {}", args.out.display());
    Ok(())
}
