use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use biomedgpt_io::npy;
use biomedgpt_llama::generation::ids_tensor;
use biomedgpt_llama::DecoderInput;
use burn::tensor::DType;
use clap::{Args, Subcommand};

use crate::generate::ModelArgs;

#[derive(Subcommand)]
pub enum InspectCommand {
    /// Write float32 logits of every position, shape [T, vocab], to a .npy file.
    Logits(LogitsArgs),
    /// Print the molecular graph the GIN reads, as JSON: {"atoms", "edge_index", "edge_attr"}.
    Featurize {
        /// One SMILES string (parsed by RDKit with default sanitization).
        #[arg(long)]
        smiles: String,
    },
    /// Print the CPU kernels' instruction-set levels: the one in use (BIOMEDGPT_CPU_ISA or the
    /// best detected), and which this CPU supports.
    Isa {
        /// Only the supported levels, one per line, lowest first.
        #[arg(long, conflicts_with = "detected")]
        supported: bool,
        /// Only the best level this CPU supports.
        #[arg(long)]
        detected: bool,
    },
}

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text prompt (tokenized with BOS for LLaMA models).
    #[arg(long, conflicts_with_all = ["token_ids", "question"], required_unless_present_any = ["token_ids", "question"])]
    pub prompt: Option<String>,
    /// A BioMedGPT question: the logits of the assembled chat prompt (with --smiles/--protein/--fasta).
    #[arg(long, conflicts_with = "token_ids")]
    pub question: Option<String>,
    #[command(flatten)]
    pub inputs: crate::ask::InputArgs,
    /// Comma-separated token ids, used as given.
    #[arg(long, value_delimiter = ',')]
    pub token_ids: Option<Vec<u32>>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: InspectCommand) -> Result<()> {
    match cmd {
        InspectCommand::Logits(args) => logits(args),
        InspectCommand::Isa { supported, detected } => {
            use biomedgpt_kernels::isa;
            if supported {
                isa::supported().iter().for_each(|level| println!("{level}"));
            } else if detected {
                println!("{}", isa::detected());
            } else {
                println!("{}", isa::describe());
            }
            Ok(())
        }
        InspectCommand::Featurize { smiles } => {
            if smiles.trim().is_empty() {
                bail!("--smiles is empty");
            }
            let graph = biomedgpt_chem::featurize(&smiles)?;
            println!("{}", serde_json::to_string(&graph)?);
            Ok(())
        }
    }
}

/// Logits of every position of BioMedGPT's assembled prompt (text segments + spliced features).
fn chat_logits(args: &LogitsArgs, question: &str) -> Result<()> {
    let inputs = args.inputs.inputs()?;
    let model = crate::ask::open(&args.model)?;
    let mut chat = biomedgpt_model::Chat::new(&model);
    for input in &inputs {
        chat.add(input)?;
    }
    chat.ask(question)?;
    let (embeds, _) = chat.embeds()?;
    // The positions the model reads (BioMedGPT-R1 cuts a prompt longer than its context allows).
    let logits = model.prompt_logits(model.fit_to_context(embeds));
    let [t, vocab] = logits.dims();
    let values = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
    npy::write_f32(&args.out, &[t, vocab], &values).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits [{t}, {vocab}] to {}", args.out.display());
    Ok(())
}

fn logits(args: LogitsArgs) -> Result<()> {
    if let Some(question) = &args.question {
        return chat_logits(&args, question);
    }
    if args.prompt.as_ref().is_some_and(|p| p.trim().is_empty()) {
        bail!("--prompt is empty");
    }
    // A BioMedGPT directory (10B or R1, fused weights): its LLM, with its tokenizer.
    let multimodal = biomedgpt_model::Layout::resolve(&args.model.model).is_ok_and(|l| l.fused_weights.is_some());
    let (model, ids) = match (args.token_ids, args.prompt) {
        (ids, prompt) if multimodal => {
            let model = crate::ask::open(&args.model)?;
            let ids = match (ids, prompt) {
                (Some(ids), _) => ids,
                (None, Some(prompt)) => model.tokenizer.encode(&prompt, true)?,
                (None, None) => unreachable!("clap requires --prompt, --token-ids or --question"),
            };
            (Box::new(model.llm) as Box<dyn biomedgpt_llama::CausalLm>, ids)
        }
        (Some(ids), _) => (args.model.open_model()?, ids),
        (None, Some(prompt)) => {
            let lm = args.model.open()?;
            let ids = lm.tokenizer.encode(&prompt, true)?;
            (lm.model as Box<dyn biomedgpt_llama::CausalLm>, ids)
        }
        (None, None) => unreachable!("clap requires --prompt, --token-ids or --question"),
    };
    if ids.is_empty() {
        bail!("--token-ids is empty");
    }
    let vocab = model.vocab_size();
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        bail!("token id {bad} is outside the vocabulary of {vocab}");
    }
    let input = ids_tensor(&ids, 1, &model.device());
    let logits = model.forward(DecoderInput::Ids(input), None, &mut model.new_cache(1));
    let values = logits.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 logits");
    npy::write_f32(&args.out, &[ids.len(), vocab], &values)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote logits [{}, {vocab}] to {}", ids.len(), args.out.display());
    Ok(())
}
