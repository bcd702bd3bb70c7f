//! `biomedgpt embed protein|molecule`: ESM-2 and GraphMVP GIN embeddings, from an encoder's own
//! files or from a BioMedGPT model directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use biomedgpt_esm::{Alphabet, Esm, EsmConfig, Pool, open_fair_esm, open_hf_dir, parse_fasta};
use biomedgpt_io::{FloatType, npy};
use biomedgpt_model::DirEncoders;
use clap::{Args, Subcommand};

use crate::progress::Progress;

#[derive(Subcommand)]
pub enum EmbedCommand {
    /// Protein embeddings with ESM-2.
    ///
    /// Output: with --pool none and one sequence, a float32 .npy of shape [L+2, hidden] (the <cls>
    /// and <eos> positions included); with --pool mean or cls, a .npy of shape [records, hidden]
    /// in input order; with --pool none and several records, an .npz holding one [L+2, hidden]
    /// array per record, named by the record's FASTA id (load with numpy.load).
    Protein(ProteinArgs),
    /// Molecule embeddings with a GraphMVP GIN (config.json + weights in --model, or a BioMedGPT model directory's GIN).
    ///
    /// Output: one --smiles with --pool none gives a float32 .npy of shape [atoms, emb_dim]; an
    /// --input file gives [molecules, emb_dim] with --pool mean (the default for files), or with
    /// --pool none an .npz holding one [atoms, emb_dim] array per molecule, named `line{N}`.
    Molecule(MoleculeArgs),
}

#[derive(Args)]
pub struct MoleculeArgs {
    /// Directory with the GIN's config.json (num_layer, emb_dim, JK) and its weights, or a
    /// BioMedGPT model directory (its GIN, found as `ask` finds it).
    #[arg(long)]
    model: PathBuf,
    /// Key prefix of the GIN inside the checkpoint (`mol_structure_encoder` in the fused BioMedGPT file).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    smiles: Option<String>,
    /// A .smi file (SMILES, optionally a name, per line) or a .csv with a `smiles` column.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// none (per atom) or mean (per molecule); default: none for --smiles, mean for --input.
    #[arg(long)]
    pool: Option<String>,
    /// Skip (and report) invalid SMILES in --input instead of stopping at the first one.
    #[arg(long)]
    skip_invalid: bool,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
pub struct ProteinArgs {
    /// HF ESM directory (config.json, vocab.txt, weights), a fair-esm .pt file, or a BioMedGPT
    /// model directory (its ESM-2, found as `ask` finds it).
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
    /// Maximum tokens per sequence including <cls> and <eos> [default: a BioMedGPT directory's
    /// limit, else 1024 as BioMedGPT].
    #[arg(long)]
    max_length: Option<usize>,
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
        EmbedCommand::Molecule(args) => molecule(args),
    }
}

/// (line number, SMILES) of every molecule in a .smi or .csv file.
fn read_molecules(path: &std::path::Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    biomedgpt_chem::read_molecule_list(&text, biomedgpt_chem::ListFormat::of(path)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn molecule(args: MoleculeArgs) -> Result<()> {
    use biomedgpt_gin::{Gin, GinConfig};
    let device = crate::device::parse(&args.device)?;
    let gin = if is_biomedgpt_dir(&args.model) {
        if args.prefix.is_some() {
            bail!("--prefix is for a GIN's own directory; {} is a BioMedGPT model directory, whose GIN is found by itself", args.model.display());
        }
        let encoders = DirEncoders::load(&args.model, FloatType::F32, &device).with_context(|| format!("loading {}", args.model.display()))?;
        encoders.gin.with_context(|| format!("{} has no molecule encoder (no mol_structure_encoder.* weights)", args.model.display()))?
    } else {
        let config = GinConfig::from_file(&args.model.join("config.json")).map_err(anyhow::Error::msg)?;
        let ckpt = biomedgpt_io::Checkpoint::open(&args.model)?;
        let root = ckpt.root();
        let vb = match &args.prefix {
            Some(p) => root.pp(p.trim_end_matches('.')),
            None => root,
        };
        Gin::load(&config, &vb, FloatType::F32, &device).with_context(|| format!("loading {}", args.model.display()))?
    };
    let config = gin.config().clone();

    let single = args.smiles.is_some();
    let pool = args.pool.clone().unwrap_or_else(|| if single { "none".into() } else { "mean".into() });
    if pool != "none" && pool != "mean" {
        bail!("--pool must be none or mean, not `{pool}`");
    }
    let molecules = match (&args.smiles, &args.input) {
        (Some(s), _) => vec![(0, s.clone())],
        (None, Some(path)) => read_molecules(path)?,
        (None, None) => unreachable!("clap requires --smiles or --input"),
    };
    let mut graphs = Vec::with_capacity(molecules.len());
    let mut names = Vec::with_capacity(molecules.len());
    let mut skipped = 0;
    for (line, smiles) in &molecules {
        let graph = biomedgpt_chem::featurize(smiles).and_then(|g| {
            g.validate().map_err(|e| biomedgpt_chem::FeaturizeError::Invalid { smiles: biomedgpt_chem::shown(smiles), reason: e.to_string() })?;
            Ok(g)
        });
        match (graph, single, &args.input) {
            (Ok(g), _, _) => {
                graphs.push(g);
                names.push(format!("line{line}"));
            }
            (Err(e), true, _) => return Err(e.into()),
            (Err(e), false, Some(path)) if args.skip_invalid => {
                eprintln!("warning: {}:{line}: skipped: {e}", path.display());
                skipped += 1;
            }
            (Err(e), false, Some(path)) => bail!("{}:{line}: {e} (use --skip-invalid to skip such lines)", path.display()),
            (Err(e), false, None) => return Err(e.into()),
        }
    }
    if graphs.is_empty() {
        bail!("no valid molecules to embed");
    }

    let width = config.output_dim();
    let mut progress = Progress::new(graphs.len(), "molecules", !single);
    let mut per_molecule: Vec<Vec<f32>> = Vec::with_capacity(graphs.len());
    for chunk in graphs.chunks(args.batch_size.max(1)) {
        if pool == "mean" {
            per_molecule.extend(gin.pooled_features(chunk)?);
        } else {
            per_molecule.extend(gin.node_features(chunk)?);
        }
        progress.advance(chunk.len());
    }
    progress.finish();
    match (pool.as_str(), single) {
        ("none", true) => npy::write_f32(&args.out, &[graphs[0].num_atoms(), width], &per_molecule[0])?,
        ("none", false) => {
            let arrays = names
                .into_iter()
                .zip(per_molecule)
                .zip(&graphs)
                .map(|((name, v), g)| (name, vec![g.num_atoms(), width], v))
                .collect::<Vec<_>>();
            npy::write_npz_f32(&args.out, &arrays)?
        }
        _ => {
            let n = per_molecule.len();
            npy::write_f32(&args.out, &[n, width], &per_molecule.concat())?
        }
    }
    eprintln!("wrote {} molecule(s) to {}{}", graphs.len(), args.out.display(),
        if skipped > 0 { format!(" ({skipped} invalid skipped)") } else { String::new() });
    Ok(())
}

/// A BioMedGPT model directory (`biomedgpt.json`, or an `llm/` beside fused weights, or
/// OpenBioMed's layout) rather than an encoder's own directory (which has a config.json).
fn is_biomedgpt_dir(path: &std::path::Path) -> bool {
    path.is_dir() && !path.join("config.json").is_file() && biomedgpt_model::Layout::resolve(path).is_ok_and(|l| l.fused_weights.is_some())
}

/// The ESM-2, its alphabet, and the token limit of a BioMedGPT directory (if the model came from one).
fn load(args: &ProteinArgs) -> Result<(Esm, Alphabet, Option<usize>)> {
    let device = crate::device::parse(&args.device)?;
    if is_biomedgpt_dir(&args.model) {
        if args.config.is_some() {
            bail!("--config is for a fair-esm file; {} is a BioMedGPT model directory", args.model.display());
        }
        let encoders = DirEncoders::load(&args.model, args.dtype, &device).with_context(|| format!("loading {}", args.model.display()))?;
        let (esm, alphabet, max_tokens) =
            encoders.esm.with_context(|| format!("{} has no protein encoder (needs esm/config.json and prot_structure_encoder.* weights)", args.model.display()))?;
        return Ok((esm, alphabet, Some(max_tokens)));
    }
    if args.model.is_file() {
        let config = match &args.config {
            Some(p) => Some(EsmConfig::from_file(p).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let esm = open_fair_esm(&args.model, config, args.dtype, &device)?;
        Ok((esm, Alphabet::esm2(), None))
    } else {
        let (esm, alphabet) = open_hf_dir(&args.model, args.dtype, &device).with_context(|| format!("loading {}", args.model.display()))?;
        Ok((esm, alphabet, None))
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
    let (esm, alphabet, model_limit) = load(&args)?;
    let max_length = args.max_length.or(model_limit).unwrap_or(biomedgpt_model::model::MAX_PROTEIN_TOKENS);
    if let Some(layer) = args.layer
        && layer > esm.config().num_hidden_layers
    {
        bail!("--layer {layer} does not exist: the model has layers 0..={}", esm.config().num_hidden_layers);
    }
    let mut encoded = Vec::with_capacity(records.len());
    for (id, seq) in &records {
        let e = alphabet.encode(id, seq, max_length, !args.no_truncate)?;
        if e.truncated > 0 {
            eprintln!("warning: {id}: truncated by {} residues to {max_length} tokens", e.truncated);
        }
        encoded.push(e.ids);
    }

    let total = encoded.len();
    let mut progress = Progress::new(total, "records", total > 1);
    let features = esm.embed(&encoded, args.batch_size, args.layer, args.pool, |n| progress.advance(n));
    progress.finish();

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
                    let first = name.clone();
                    while !seen.insert(name.clone()) {
                        name.push('_');
                    }
                    // Issue 26, D12: say so when a record's array is not named after its id.
                    if name != first {
                        eprintln!("warning: FASTA id `{id}` is already taken in {} (ids are arrays named by their letters, digits and ._-): this record's array is `{name}`", args.out.display());
                    } else if name != *id {
                        eprintln!("warning: FASTA id `{id}` is stored as array `{name}` (.npz names keep letters, digits and ._-)");
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
