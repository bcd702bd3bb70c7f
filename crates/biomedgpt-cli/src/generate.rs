use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use biomedgpt_io::FloatType;
use biomedgpt_llama::{CausalLm, EarlyStopping, GenerationConfig, Prompt, Strategy, generate};

use crate::lm::{TextLm, stored_dtype};
use clap::Args;

/// Model location, dtype and device, shared by every command that loads a model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// HF model directory (config.json, weights, tokenizer.json) or a llama.cpp .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Weight dtype: f32, f16, bf16, or auto (the checkpoint's dtype; f16 instead of bf16 on a
    /// CPU without AVX512_BF16, where bf16 products would be widened to f32 and slower). A GGUF
    /// file's block-quantized projections stay in their blocks with auto on the CPU (activations
    /// f16); an explicit dtype dequantizes them at load.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// cpu, wgpu[:N] or cuda[:N] (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ModelArgs {
    pub fn device(&self) -> Result<burn::tensor::Device> {
        crate::device::parse(&self.device)
    }

    /// The dtype to load in: `--dtype`, or with `auto` the stored one (f16 for bf16 on a CPU
    /// without bf16 dot-product instructions).
    pub fn float_type_of(&self, stored: Option<FloatType>) -> Result<FloatType> {
        biomedgpt_llama::load_dtype::resolve_dtype(&self.dtype, stored, self.device.starts_with("cpu")).map_err(anyhow::Error::msg)
    }

    /// Whether block-quantized GGUF weights stay in their blocks: with `--dtype auto` on the CPU
    /// (an explicit dtype dequantizes at load, the reference semantics; GPUs get dequantized
    /// weights).
    pub fn keep_blocks(&self) -> bool {
        biomedgpt_llama::load_dtype::keeps_blocks(&self.dtype, self.device.starts_with("cpu"))
    }

    /// Model and tokenizer, of the family config.json names (LLaMA or GPT-2).
    pub fn open(&self) -> Result<TextLm> {
        let ty = self.float_type_of(stored_dtype(&self.model))?;
        Ok(TextLm::open(&self.model, ty, self.keep_blocks(), &self.device()?)?)
    }

    /// Model only, for work on token ids (no tokenizer needed), of either family.
    pub fn open_model(&self) -> Result<Box<dyn CausalLm>> {
        let ty = self.float_type_of(stored_dtype(&self.model))?;
        Ok(TextLm::open_model(&self.model, ty, self.keep_blocks(), &self.device()?)?)
    }
}

/// Decoding settings with HF `generate` names and defaults.
#[derive(Args, Clone)]
pub struct DecodingArgs {
    /// Most tokens to generate (default: 128 for generate; 255 for ask/chat, the reference's
    /// max_length 256 counting the BOS it held as the only input id).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Beam search with this many beams (1 = greedy or sampling; default 1, for eval 5 as the
    /// reference evaluation).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Repetition penalty over the prompt ids and generated tokens (default 1, for eval 1.5).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Beam search: score / length^penalty (default 1; BioMedGPT-R1: its config.yaml's).
    #[arg(long)]
    pub length_penalty: Option<f32>,
    /// Beam search: true, false (HF default heuristic) or never.
    #[arg(long, default_value = "false")]
    pub early_stopping: EarlyStopping,
    /// Sample instead of taking the most likely token (implied by --temperature/--top-k/--top-p).
    #[arg(long)]
    pub sample: bool,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed of the sampler; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A command's decoding defaults for the flags left out.
pub struct DecodingDefaults {
    pub max_new_tokens: usize,
    pub num_beams: usize,
    pub repetition_penalty: f32,
    pub length_penalty: f32,
}

impl DecodingDefaults {
    pub const fn plain(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, num_beams: 1, repetition_penalty: 1.0, length_penalty: 1.0 }
    }

    /// BioMedGPT-R1's: its config.yaml's `text_generation` (`max_length` counts the prompt:
    /// the chat applies it when --max-new-tokens is not given).
    pub fn r1(r1: &biomedgpt_model::R1Config) -> Self {
        let g = &r1.text_generation;
        Self { max_new_tokens: g.max_length, num_beams: g.num_beams, repetition_penalty: g.repetition_penalty, length_penalty: g.length_penalty }
    }
}

impl DecodingArgs {
    pub fn config(&self, eos_token_ids: Vec<u32>, default_max_new_tokens: usize) -> Result<GenerationConfig> {
        self.config_with(eos_token_ids, &DecodingDefaults::plain(default_max_new_tokens))
    }

    pub fn config_with(&self, eos_token_ids: Vec<u32>, defaults: &DecodingDefaults) -> Result<GenerationConfig> {
        let sampling = self.sample || self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some();
        // Sampling flags turn the default beam search of eval off; an explicit --num-beams does not.
        let num_beams = self.num_beams.unwrap_or(if sampling { 1 } else { defaults.num_beams });
        let strategy = match (num_beams, sampling) {
            (0, _) => bail!("--num-beams must be at least 1"),
            (n, true) if n > 1 => bail!("beam search with sampling is not supported: drop --num-beams or the sampling flags"),
            (n, false) if n > 1 => Strategy::Beam {
                num_beams: n,
                length_penalty: self.length_penalty.unwrap_or(defaults.length_penalty),
                early_stopping: self.early_stopping,
            },
            (_, true) => Strategy::Sample {
                temperature: self.temperature.unwrap_or(1.0),
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            (_, false) => Strategy::Greedy,
        };
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens.unwrap_or(defaults.max_new_tokens),
            strategy,
            repetition_penalty: self.repetition_penalty.unwrap_or(defaults.repetition_penalty),
            eos_token_ids,
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to continue (LLaMA: BOS is added in front; GPT-2 adds none).
    #[arg(long)]
    pub prompt: String,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Print {"text": ..., "token_ids": [...]} (generated ids only) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.prompt.trim().is_empty() {
        bail!("--prompt is empty: give the text to continue");
    }
    let dir = args.model.open()?;
    let config = args.decoding.config(dir.model.eos_token_ids(), 128)?;
    let ids = dir.tokenizer.encode(&args.prompt, true)?;
    let output = if args.json {
        generate(dir.model.as_ref(), Prompt::Ids(ids), &config, &mut |_| {})?
    } else {
        let mut streamer = TextStreamer::new(&dir.tokenizer);
        let out = generate(dir.model.as_ref(), Prompt::Ids(ids), &config, &mut |id| streamer.push(id))?;
        println!();
        out
    };
    if args.json {
        let text = dir.tokenizer.decode(&output.tokens)?;
        println!("{}", serde_json::json!({"text": text, "token_ids": output.tokens}));
    }
    Ok(())
}

/// Prints text as tokens arrive. SentencePiece pieces only make sense in context (leading "▁",
/// byte fallback), so it decodes everything so far and prints the new suffix.
pub struct TextStreamer<'a> {
    tokenizer: &'a biomedgpt_llama::LlamaTokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl<'a> TextStreamer<'a> {
    pub fn new(tokenizer: &'a biomedgpt_llama::LlamaTokenizer) -> Self {
        TextStreamer {
            tokenizer,
            ids: Vec::new(),
            printed: 0,
        }
    }

    pub fn push(&mut self, id: u32) {
        self.ids.push(id);
        let Ok(text) = self.tokenizer.decode(&self.ids) else { return };
        // Hold back an incomplete UTF-8 sequence (byte-fallback tokens decode to U+FFFD).
        if text.ends_with('\u{FFFD}') || !text.is_char_boundary(self.printed.min(text.len())) {
            return;
        }
        if text.len() > self.printed {
            print!("{}", &text[self.printed..]);
            let _ = std::io::stdout().flush();
            self.printed = text.len();
        }
    }
}
