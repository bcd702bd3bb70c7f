//! `biomedgpt serve`: the OpenAI-compatible server (crate `biomedgpt-serve`).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use biomedgpt_serve::{ConnectionLimits, EngineConfig, ServeOptions, Server};
use clap::Args;

use crate::ask::{ChatModelArgs, open};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ChatModelArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* (or $BIOMEDGPT_API_KEY).
    #[arg(long, env = "BIOMEDGPT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model id /v1/models lists (default: the model directory's name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Most sequences decoding together.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Longest prompt + answer in tokens (default and upper bound: the model's positions).
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Requests waiting for the batch before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Prompt positions prefilled per engine step, across the prompts waiting (one pass over the
    /// weights; decoding waits this long).
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
    /// Milliseconds an idle engine waits, once a request arrives, for others to join its first
    /// prefill pass (a burst of requests is then prefilled together; 0: no wait).
    #[arg(long, default_value_t = 3)]
    pub batch_wait_ms: u64,
    /// Seconds a request may take, queueing included.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub body_limit: usize,
    /// Seconds a client may take to send the request headers (slower connections are closed).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a client may take to send the request body (then 408).
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,
    /// Most open connections (more get 503 at once); lowered to fit the open-file limit.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Encoded molecules and proteins kept for reuse.
    #[arg(long, default_value_t = 64)]
    pub encoder_cache: usize,
    /// MiB of prompt keys and values kept for prompts that start the same way (the system
    /// prompt, a chat's earlier turns), least recently used dropped first; 0 turns it off.
    /// Answers are the same with and without it.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mb: usize,
    /// Replaces the model's system prompt (a system message replaces it per request).
    #[arg(long)]
    pub system_prompt: Option<String>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if [args.max_batch, args.max_queue, args.prefill_chunk, args.max_connections].contains(&0)
        || [args.timeout, args.header_timeout, args.body_timeout].contains(&0)
    {
        bail!("--max-batch, --max-queue, --prefill-chunk, --max-connections, --timeout, --header-timeout and --body-timeout must be at least 1");
    }
    if args.batch_wait_ms > 10_000 {
        bail!("--batch-wait-ms is {} ms; at most 10000 (it delays the first request of every burst)", args.batch_wait_ms);
    }
    let model_args = args.model.resolve()?;
    let mut model = open(&model_args)?;
    if let Some(system) = &args.system_prompt {
        model.system_prompt = system.clone();
    }
    let positions = model.llm.config().max_position_embeddings;
    let max_context = match args.max_context {
        Some(0) => bail!("--max-context must be at least 1"),
        Some(c) if c > positions => bail!("--max-context {c} exceeds the model's {positions} positions"),
        Some(c) => c,
        None => positions,
    };
    let model_name = args.model_name.clone().unwrap_or_else(|| {
        let path = model_args.model.canonicalize().unwrap_or(model_args.model.clone());
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "biomedgpt".into())
    });
    let options = ServeOptions {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        model_name: model_name.clone(),
        max_queue: args.max_queue,
        timeout: Duration::from_secs(args.timeout),
        body_limit: args.body_limit,
        handle_signals: true,
        engine: EngineConfig { max_batch: args.max_batch, max_context, prefill_chunk: args.prefill_chunk, encoder_cache: args.encoder_cache, prefix_cache_bytes: args.prefix_cache_mb.saturating_mul(1 << 20), batch_wait: std::time::Duration::from_millis(args.batch_wait_ms) },
        connections: ConnectionLimits {
            header_timeout: Duration::from_secs(args.header_timeout),
            body_timeout: Duration::from_secs(args.body_timeout),
            max_connections: args.max_connections,
            ..ConnectionLimits::default()
        },
    };
    let max_batch = args.max_batch;
    Server::run(model, options, |addr| {
        println!("listening on http://{addr} (model `{model_name}`, max batch {max_batch}, context {max_context})");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("serving on {}:{}", args.host, args.port))?;
    eprintln!("stopped");
    Ok(())
}
