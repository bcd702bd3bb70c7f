//! `biomedgpt`: ask BioMedGPT about molecules and proteins, generate with LLaMA models, inspect
//! what the models compute.

mod ask;
mod bench;
mod convert;
mod device;
mod embed;
mod eval;
mod generate;
mod init;
mod inspect;
mod lm;
mod progress;
mod random;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc's malloc returns large blocks to the kernel and faults them back in on every use; model
// loading and decoding allocate many large tensors (measured: TinyLlama f16 load 7.6 s -> 2.3 s
// with glibc's mmap threshold raised), so the binary uses mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's C API (the static library the `mimalloc` crate links), for one option it does not
// expose without extra dependencies.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Freed memory is returned to the kernel after 10 s instead of mimalloc's 10 ms: a forward pass
/// frees and reallocates the same large buffers every few milliseconds to a few hundred, and
/// each return costs page faults and zeroing on reuse (measured: TinyLlama f16 prefill 57-59 ->
/// 63-67 tok/s, ESM-2 t33 at 256 residues 140-146 -> 149-152 residues/s, with 1 s; with 1 s
/// the kernel's page zeroing was still 3.5% of a TinyLlama bf16 bench's samples, 0.3% with
/// 10 s). Memory a session no longer uses still goes back after 10 s idle.
fn keep_freed_memory() {
    // SAFETY: a plain setter of a process-wide option, valid at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

#[derive(Parser)]
#[command(name = "biomedgpt", version, about = "BioMedGPT and LLaMA-family models on CPU, wgpu or CUDA")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask BioMedGPT a question about molecules (--smiles) and proteins (--protein, --fasta).
    Ask(ask::AskArgs),
    /// Interactive multi-turn chat (/molecule SMILES, /protein SEQ, /reset, /quit).
    Chat(ask::ChatArgs),
    /// Rewrite fused weights as f16/bf16 safetensors, or a LLaMA as GGUF (q8_0, q6_k, q5_k_m, q4_k_m, q4_0).
    Convert(convert::ConvertArgs),
    /// Continue a text prompt with a LLaMA or GPT-2 model (HF directory or GGUF file).
    Generate(generate::GenerateArgs),
    /// Text metrics (BLEU-2/4, ROUGE-1/2/L, METEOR; MolT5 protocol) of a predictions JSONL file.
    Score(eval::ScoreArgs),
    /// Evaluate a model or a baseline on PubChemQA, UniProtQA, PubMedQA, MedMCQA or MedQA.
    Eval(Box<eval::EvalArgs>),
    /// A new, untrained model of BioMedGPT's architecture (random weights), to train from scratch.
    Init(init::InitArgs),
    /// Write a fine-tuned checkpoint (adapters, LoRA factors) as one standalone model directory.
    MergeLora(convert::ConvertArgs),
    /// Fine-tune BioMedGPT on molecule/protein QA: adapters, LoRA or the whole LLM (resumable).
    Train(Box<train::TrainArgs>),
    /// Embeddings: proteins (ESM-2) and molecules (GraphMVP GIN), as .npy/.npz.
    #[command(subcommand)]
    Embed(embed::EmbedCommand),
    /// Look inside: logits of every position (.npy), the molecular graph, the CPU kernels' ISA.
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// An OpenAI-compatible HTTP server (chat, completions, embeddings) with continuous batching.
    Serve(Box<serve::ServeArgs>),
    /// Speed and memory measurements (see benches/).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // `biomedgpt inspect featurize ... | head`: a closed pipe ends the process quietly, as it
    // does a C tool, instead of a panic in `println!`. Not for `serve`, whose sockets must see a
    // closed peer as an error (EPIPE), not a signal that kills the server.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_)) {
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // The command runs on a thread of rayon's pool, not on the main thread: each parallel kernel
    // then runs one part on its own thread and leaves the other to the pool, instead of the
    // main thread handing both parts to the pool and sleeping until they are done (two
    // wake-ups per kernel, ~150 kernels per decoded token). The stack matches a main thread's.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    let (result, ()) = rayon::join(|| run(cli.command), || ());
    report(result)
}

fn run(command: Command) -> anyhow::Result<()> {
    // A forced instruction set the CPU lacks is an error here, before any kernel runs.
    biomedgpt_kernels::isa::from_env().map_err(anyhow::Error::msg)?;
    match command {
        Command::Ask(args) => ask::ask(args),
        Command::Chat(args) => ask::chat(args),
        Command::Convert(args) => convert::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => eval::score(args),
        Command::Eval(args) => eval::eval(*args),
        Command::Train(args) => train::train(*args),
        Command::MergeLora(args) => convert::merge(args),
        Command::Init(args) => init::run(args),
        Command::Embed(cmd) => embed::run(cmd),
        Command::Inspect(cmd) => inspect::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(args) => serve::run(*args),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = err.to_string();
            eprintln!("error: {message}");
            // Our error types already quote their source; print only causes that add something.
            for cause in err.chain().skip(1).map(|c| c.to_string()) {
                if !message.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
