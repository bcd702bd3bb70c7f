//! `biomedgpt ask` and `biomedgpt chat`: questions about molecules and proteins with BioMedGPT.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use biomedgpt_esm::parse_fasta;
use biomedgpt_llama::prefix_cache::{self, PrefixCache};
use biomedgpt_llama::{Prompt, Strategy, generate};
use biomedgpt_model::{BioMedGpt, Chat, ChatPrompt, DEFAULT_SYSTEM_PROMPT, Input, split_reasoning};

use crate::lm::{Family, family_of};
use clap::Args;

use crate::generate::{DecodingArgs, DecodingDefaults, ModelArgs, TextStreamer};

/// The reference chat's max_length 256 counts the BOS held as the only input id.
const DEFAULT_MAX_NEW_TOKENS: usize = 255;

#[derive(Args)]
pub struct InputArgs {
    /// A molecule as SMILES (repeatable).
    #[arg(long)]
    pub smiles: Vec<String>,
    /// A protein sequence (repeatable).
    #[arg(long)]
    pub protein: Vec<String>,
    /// A FASTA file; every record is a protein (repeatable).
    #[arg(long)]
    pub fasta: Vec<PathBuf>,
}

impl InputArgs {
    /// Molecules first, then proteins, then FASTA records, each in the order given.
    pub fn inputs(&self) -> Result<Vec<Input>> {
        let mut inputs: Vec<Input> = self.smiles.iter().map(|s| Input::Smiles(s.clone())).collect();
        for (i, seq) in self.protein.iter().enumerate() {
            let name = if self.protein.len() == 1 { "--protein".to_string() } else { format!("--protein #{}", i + 1) };
            inputs.push(Input::Protein { name, sequence: seq.clone() });
        }
        for path in &self.fasta {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let records = parse_fasta(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if records.is_empty() {
                bail!("{}: no FASTA records", path.display());
            }
            inputs.extend(records.into_iter().map(|r| Input::Protein { name: r.id, sequence: r.sequence }));
        }
        Ok(inputs)
    }
}

/// The demo model shipped in the repository (models/demo), where this binary was built.
pub const DEMO_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/demo");

/// `ask`/`chat`'s model: like other commands', but `--model` may be left out for the demo.
#[derive(Args)]
pub struct ChatModelArgs {
    /// BioMedGPT model directory (see the README); without it, $BIOMEDGPT_MODEL, else the small
    /// demo model shipped in models/demo.
    #[arg(long, env = "BIOMEDGPT_MODEL")]
    pub model: Option<PathBuf>,
    /// Weight dtype: f32, f16, bf16, or auto (the checkpoint's dtype; f16 instead of bf16 on CPU).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// cpu, wgpu[:N] or cuda[:N] (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ChatModelArgs {
    /// The model to load: the given one, or the demo (whose notice says what it is).
    pub fn resolve(&self) -> Result<ModelArgs> {
        let model = match &self.model {
            Some(dir) => dir.clone(),
            None => {
                let demo = PathBuf::from(DEMO_MODEL);
                if !demo.join("biomedgpt.json").is_file() {
                    bail!(
                        "no --model given, and the demo model is not at {} (it ships in the repository's models/demo): \
                         pass --model DIR with BioMedGPT-10B's weights",
                        demo.display()
                    );
                }
                demo
            }
        };
        Ok(ModelArgs { model, dtype: self.dtype.clone(), device: self.device.clone() })
    }
}

#[derive(Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub model: ChatModelArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[arg(long)]
    pub question: String,
    /// Replaces the model's system prompt.
    #[arg(long)]
    pub system_prompt: Option<String>,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Print {"answer": ..., "token_ids": [...], "prompt_tokens": N} instead of streaming
    /// (BioMedGPT-R1 adds "reasoning" and "final": the text before and after `</think>`).
    #[arg(long)]
    pub json: bool,
    /// BioMedGPT-R1: print the model's thinking before its answer (streamed as it comes with
    /// greedy decoding or sampling).
    #[arg(long)]
    pub show_reasoning: bool,
    /// A JSON schema file: the answer is held to it while it is decoded (as `serve`'s
    /// response_format json_schema; greedy or sampling, not beam search).
    #[arg(long)]
    pub json_schema: Option<PathBuf>,
    /// With --json: add "timing": load, time to the first token (encoders and prompt included)
    /// and decoding tokens/s (greedy and sampling; beam search hands its tokens over at the end).
    #[arg(long, requires = "json")]
    pub timings: bool,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ChatModelArgs,
    #[arg(long)]
    pub system_prompt: Option<String>,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// BioMedGPT-R1: print the model's thinking before each answer.
    #[arg(long)]
    pub show_reasoning: bool,
    /// MiB of the earlier turns' keys and values kept, so that a turn prefills only what is new
    /// (answers are the same without it); 0 turns it off.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mb: usize,
}

/// The decoding of `ask`/`chat`: BioMedGPT-R1's config.yaml `text_generation` for the flags left
/// out (its `max_length` counts the prompt: the chat applies it unless --max-new-tokens is
/// given); BioMedGPT-10B's greedy default otherwise.
fn chat_config(model: &BioMedGpt, decoding: &DecodingArgs) -> Result<biomedgpt_llama::GenerationConfig> {
    match &model.r1 {
        Some(r1) => decoding.config_with(model.eos_token_ids(), &DecodingDefaults::r1(r1)),
        None => decoding.config(model.eos_token_ids(), DEFAULT_MAX_NEW_TOKENS),
    }
}

fn new_chat<'m>(model: &'m BioMedGpt, decoding: &DecodingArgs) -> Chat<'m> {
    let mut chat = Chat::new(model);
    chat.length_from_config = decoding.max_new_tokens.is_none();
    chat
}

/// Loads a BioMedGPT directory (or a LLaMA directory, text-only) and shows its notice.
pub fn open(args: &ModelArgs) -> Result<BioMedGpt> {
    // The dtype decided as the Python package decides it (biomedgpt_llama::load_dtype).
    let model = BioMedGpt::load_with_dtype(&args.model, &args.dtype, &args.device()?)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some(notice) = &model.notice {
        eprintln!("note: {notice}");
    }
    Ok(model)
}

fn add_input(chat: &mut Chat, input: &Input) -> Result<()> {
    let truncated = chat.add(input)?;
    if truncated > 0
        && let Input::Protein { name, .. } = input
    {
        eprintln!("warning: {name}: truncated by {truncated} residues to the encoder's limit");
    }
    Ok(())
}

pub fn ask(args: AskArgs) -> Result<()> {
    if args.question.trim().is_empty() {
        bail!("--question is empty: ask something about the molecule or protein");
    }
    let inputs = args.inputs.inputs()?;
    // Check molecules before loading gigabytes of weights.
    for input in &inputs {
        if let Input::Smiles(smiles) = input {
            biomedgpt_chem::featurize(smiles)?;
        }
    }
    let model_args = args.model.resolve()?;
    if model_args.model.join("config.json").is_file() && family_of(&model_args.model)? == Family::Gpt2 {
        return ask_text_lm(&args, &model_args, &inputs);
    }
    let loading = Instant::now();
    let mut model = open(&model_args)?;
    let load_s = loading.elapsed().as_secs_f64();
    if let Some(system) = &args.system_prompt {
        if model.r1.is_some() {
            bail!("--system-prompt: BioMedGPT-R1's chat has no system prompt");
        }
        model.system_prompt = system.clone();
    }
    if args.show_reasoning && model.r1.is_none() {
        bail!("--show-reasoning: {} is not a reasoning model (BioMedGPT-R1 is)", model_args.model.display());
    }
    let config = chat_config(&model, &args.decoding)?;
    if let Some(path) = &args.json_schema {
        return ask_with_schema(&args, model, &inputs, &config, path);
    }
    let start = Instant::now();
    let mut chat = new_chat(&model, &args.decoding);
    for input in &inputs {
        add_input(&mut chat, input)?;
    }
    chat.ask(&args.question)?;
    if args.json {
        // Timings as llama.cpp reports them (--timings): the first token's time counts the
        // encoders and the prompt.
        let mut token_times = Vec::new();
        let answer = chat.answer(&config, &mut |_| token_times.push(start.elapsed().as_secs_f64()))?;
        let first_token_s = token_times.first().copied();
        let decode_tok_s = match (token_times.first(), token_times.last()) {
            (Some(a), Some(b)) if token_times.len() > 1 && b > a => Some((token_times.len() - 1) as f64 / (b - a)),
            _ => None,
        };
        let mut json = serde_json::json!({"answer": answer.text, "token_ids": answer.token_ids, "prompt_tokens": answer.prompt_tokens});
        if model.r1.is_some() {
            let (reasoning, final_answer) = split_reasoning(&answer.text);
            json["reasoning"] = reasoning.into();
            json["final"] = final_answer.into();
        }
        if args.timings {
            json["timing"] = serde_json::json!({"load_s": load_s, "first_token_s": first_token_s, "decode_tok_s": decode_tok_s});
        }
        println!("{json}");
    } else {
        stream_answer(&model, &mut chat, &config, args.show_reasoning)?;
    }
    Ok(())
}

/// `ask --json-schema`: the question through the serving engine (the code behind `serve`'s
/// `response_format`), which holds the answer to the schema while it is decoded.
fn ask_with_schema(args: &AskArgs, model: BioMedGpt, inputs: &[Input], config: &biomedgpt_llama::GenerationConfig, path: &std::path::Path) -> Result<()> {
    use biomedgpt_serve::request::{Event, Job, Message, Part, PromptSpec, Role, Work};
    use biomedgpt_serve::structured::ResponseFormat;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let schema: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if matches!(config.strategy, Strategy::Beam { .. }) {
        bail!("--json-schema: beam search is not supported with a schema (drop --num-beams)");
    }
    let mut params = crate::eval::engine_params(config);
    if args.decoding.max_new_tokens.is_none() && model.r1.is_some() {
        params.max_tokens = None; // R1: config.yaml's max_length, counting the prompt
    }
    params.response_format = Some(ResponseFormat::JsonSchema(schema));
    let mut parts: Vec<Part> = inputs
        .iter()
        .map(|input| match input {
            Input::Smiles(s) | Input::Graph { smiles: s, .. } => Part::Molecule(s.clone()),
            Input::Protein { sequence, .. } => Part::Protein(sequence.clone()),
        })
        .collect();
    parts.push(Part::Text(args.question.clone()));
    let mut messages = Vec::new();
    if let Some(system) = &args.system_prompt {
        messages.push(Message { role: Role::System, parts: vec![Part::Text(system.clone())] });
    }
    messages.push(Message { role: Role::User, parts });
    let positions = model.llm.config().max_position_embeddings;
    let engine_config = biomedgpt_serve::EngineConfig { max_batch: 1, max_context: positions, prefill_chunk: positions, encoder_cache: 8, prefix_cache_bytes: 0, batch_wait: std::time::Duration::ZERO };
    let mut engine = biomedgpt_serve::Engine::new(model, engine_config, std::sync::Arc::new(biomedgpt_serve::Stats::new()));
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job { id: "ask".into(), work: Work::Generate { prompt: PromptSpec::Chat(messages), params }, molecules: Default::default(), events, embeddings: None, submitted: std::time::Instant::now() };
    engine.run_jobs(vec![job]);
    let (mut answer, mut tokens, mut prompt_tokens) = (String::new(), Vec::new(), 0);
    while let Ok(event) = rx.try_recv() {
        match event {
            Event::Started { prompt_tokens: n, .. } => prompt_tokens = n,
            Event::Delta { text, .. } => answer.push_str(&text),
            Event::Finished { tokens: t, .. } => tokens = t,
            Event::Failed(f) => bail!("{}", f.message.replace("response_format", "--json-schema")),
        }
    }
    if args.json {
        println!("{}", serde_json::json!({"answer": answer, "token_ids": tokens, "prompt_tokens": prompt_tokens}));
    } else {
        println!("{answer}");
    }
    Ok(())
}

/// A GPT-2 directory (BioMedLM) answers text-only, with the same chat prompt as BioMedGPT (no
/// BOS: GPT-2 adds none) and the same answer extraction.
fn ask_text_lm(args: &AskArgs, model_args: &ModelArgs, inputs: &[Input]) -> Result<()> {
    if !inputs.is_empty() {
        bail!("{} is a GPT-2 model: it reads text only, not --smiles, --protein or --fasta", model_args.model.display());
    }
    let lm = model_args.open()?;
    let system = args.system_prompt.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let mut prompt = ChatPrompt::new(system);
    prompt.push_question(&args.question);
    let ids = lm.tokenizer.encode(&prompt.render(), true)?;
    let prompt_tokens = ids.len();
    let config = args.decoding.config(lm.model.eos_token_ids(), DEFAULT_MAX_NEW_TOKENS)?;
    let eos = config.eos_token_ids.clone();
    let mut streamer = TextStreamer::new(&lm.tokenizer);
    let stream = !args.json && !matches!(config.strategy, Strategy::Beam { .. });
    let output = generate(lm.model.as_ref(), Prompt::Ids(ids), &config, &mut |id| {
        if stream && !eos.contains(&id) {
            streamer.push(id);
        }
    })?;
    let mut ids = output.tokens.clone();
    if output.stopped_by_eos {
        ids.pop();
    }
    let decoded = lm.tokenizer.decode(&ids)?;
    let text = decoded.rsplit("Assistant:").next().unwrap_or("").trim().to_string();
    if args.json {
        println!("{}", serde_json::json!({"answer": text, "token_ids": output.tokens, "prompt_tokens": prompt_tokens}));
    } else if stream {
        println!();
    } else {
        println!("{text}");
    }
    Ok(())
}

/// Prints the answer: streamed as tokens come (greedy, sampling), or whole at the end (beam
/// search). BioMedGPT-R1 prints the part after `</think>`, and its thinking first with
/// `show_reasoning` (only then is it streamed: the answer's start is known only at `</think>`).
/// Returns the answer text.
fn stream_answer(model: &BioMedGpt, chat: &mut Chat, config: &biomedgpt_llama::GenerationConfig, show_reasoning: bool) -> Result<String> {
    let eos = model.eos_token_ids();
    let mut streamer = TextStreamer::new(&model.tokenizer);
    let reasoning_model = model.r1.is_some();
    let stream = !matches!(config.strategy, Strategy::Beam { .. }) && (!reasoning_model || show_reasoning);
    let answer = chat.answer(config, &mut |id| {
        if stream && !eos.contains(&id) {
            streamer.push(id);
        }
    })?;
    if stream {
        println!();
    } else if !reasoning_model {
        println!("{}", answer.text); // beam search has its answer only at the end
    } else {
        let (reasoning, final_answer) = split_reasoning(&answer.text);
        if show_reasoning {
            println!("<think>\n{reasoning}\n</think>\n");
        }
        match final_answer {
            Some(text) => println!("{text}"),
            None => eprintln!(
                "warning: the model was still thinking after {} tokens and gave no answer (allow more with --max-new-tokens; see the thinking with --show-reasoning)",
                answer.token_ids.len()
            ),
        }
    }
    Ok(answer.text)
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let mut model = open(&args.model.resolve()?)?;
    if let Some(system) = &args.system_prompt {
        if model.r1.is_some() {
            bail!("--system-prompt: BioMedGPT-R1's chat has no system prompt");
        }
        model.system_prompt = system.clone();
    }
    if args.show_reasoning && model.r1.is_none() {
        bail!("--show-reasoning: this is not a reasoning model (BioMedGPT-R1 is)");
    }
    let config = chat_config(&model, &args.decoding)?;
    let mut chat = new_chat(&model, &args.decoding);
    chat.prefix = Some(PrefixCache::new(prefix_cache::DEFAULT_BLOCK, args.prefix_cache_mb.saturating_mul(1 << 20)));
    eprintln!("commands: /molecule SMILES, /protein SEQUENCE, /reset, /quit; anything else is a question");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim();
        let result = match line.split_once(' ').map_or((line, ""), |(c, rest)| (c, rest.trim())) {
            ("", _) => Ok(()),
            ("/quit" | "/exit", _) => return Ok(()),
            ("/reset", _) => {
                chat.reset();
                eprintln!("(conversation cleared)");
                Ok(())
            }
            ("/molecule", smiles) => add_input(&mut chat, &Input::Smiles(smiles.to_string())).map(|_| eprintln!("(molecule added)")),
            ("/protein", seq) => add_input(&mut chat, &Input::Protein { name: "/protein".into(), sequence: seq.to_string() })
                .map(|_| eprintln!("(protein added)")),
            _ => chat
                .ask(line)
                .map_err(anyhow::Error::from)
                .and_then(|_| stream_answer(&model, &mut chat, &config, args.show_reasoning))
                .map(drop),
        };
        if let Err(e) = result {
            eprintln!("error: {e:#}");
        }
    }
}
