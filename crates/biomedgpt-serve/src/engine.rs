//! The engine: one thread owns the model and runs continuous batching.
//!
//! Each iteration takes in new requests while there is room (`max_batch` sequences), prefills
//! chunks of the waiting prompts, up to `prefill_chunk` positions in all and in one pass over the
//! weights (so a long prompt delays the others' next token by one chunk, not by its whole length,
//! and prompts arriving together share the pass), then runs one decoding step for every sequence
//! that has a token to feed. Requests that arrive during a prompt pass and fit in the batch are
//! taken in and prefilled before that decoding step (at most [`PROMPT_PASSES_IN_A_ROW`] passes
//! in a row): clients that finish together come back within a few milliseconds of each other,
//! and the late ones would otherwise wait for the early ones' decoding step too (vLLM's
//! scheduler also puts prompts first). (The decoding rows are not put in the prompts' pass: they go through
//! the decoding kernels, which round otherwise, so that each answer is what it is alone.)
//! Sequences keep their own KV cache, position and sampling state, and leave the batch when
//! they finish or their client goes away. A step runs its sequences through the decoding
//! kernels, in groups of at most [`DECODE_BATCH_ROWS`], where every row is computed as it would
//! be alone: greedy output does not depend on what else is in the batch, and a seeded sample is
//! the same under load as alone.
//!
//! Beam search (`num_beams` > 1) keeps several hypotheses per request and runs on its own, in
//! full, when it is admitted (the running sequences wait for it), as `ask --num-beams` does.
//!
//! Prompts share their starts (the reference system prompt, a chat's earlier turns): with a
//! prefix cache ([`EngineConfig::prefix_cache_bytes`]) a prompt's keys and values are kept in
//! blocks and a later prompt that begins with the same blocks restores them and prefills only
//! the rest ([`biomedgpt_llama::prefix_cache`]). Answers are bit-identical with and without it:
//! prompt chunks of any length run through the prompt kernels, which compute each row the same
//! whatever rows are beside it.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use biomedgpt_chem::MolGraph;
use biomedgpt_kernels::matmul::DECODE_BATCH_ROWS;
use biomedgpt_llama::generation::{apply_repetition_penalty, ids_tensor, log_softmax};
use biomedgpt_llama::prefix_cache::{self, PrefixCache, PromptKeys};
use biomedgpt_llama::{DecoderInput, GenerationConfig, KvCache, Prompt, Strategy, TokenChooser, generate_until};
use biomedgpt_model::{BioMedGpt, Input, Modality, ModelError};

use crate::structured::{Constraint, Grammar, Grammars};
use crate::tools::Tools;
use burn::tensor::{DType, Tensor};

use crate::request::{EmbedInput, Event, Failure, FinishReason, Job, Message, Params, ParsedMolecules, Part, PromptSpec, Role, TokenLogprob, Work};
use crate::text::TextTracker;

/// The reference chat's default answer length (its max_length 256 counts the BOS it held).
pub const CHAT_MAX_TOKENS: usize = 255;
/// No LLaMA tokenizer piece spans more bytes than this (SentencePiece pieces are at most 16
/// characters of up to 4 bytes), so text of N bytes takes at least N / 64 positions.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// Most prompt passes run one after another while new requests keep arriving (each pass takes in
/// those that came during the previous one) before the running sequences' decoding step: their
/// next token waits at most this many passes.
pub const PROMPT_PASSES_IN_A_ROW: usize = 2;

/// OpenAI's default `max_tokens` for `/v1/completions`.
pub const COMPLETION_MAX_TOKENS: usize = 16;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences decoding at once (a request with `n` choices counts `n`).
    pub max_batch: usize,
    /// Longest prompt + answer, in tokens (at most the model's positions).
    pub max_context: usize,
    /// Prompt positions per prefill chunk.
    pub prefill_chunk: usize,
    /// Encoded molecules and proteins kept (by their SMILES or sequence).
    pub encoder_cache: usize,
    /// Bytes of prompt keys and values kept for reuse by later prompts with the same start
    /// (0: no prefix cache).
    pub prefix_cache_bytes: usize,
    /// How long an idle engine waits, once a request arrives, for others to join it (Triton's
    /// dynamic batcher's queue delay): requests that come in a burst (clients that started
    /// together finish together) are then prefilled in one pass instead of each after the
    /// previous one's prefill and decoding step.
    pub batch_wait: std::time::Duration,
}

/// Counters and gauges the engine and the HTTP layer update, for `/metrics`.
pub struct Stats {
    pub started: Instant,
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub last_batch: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub encoder_cache_hits: AtomicU64,
    pub encoder_runs: AtomicU64,
    /// Passes over the weights for prompts, and the prompt chunks they computed (several
    /// prompts arriving together share a pass).
    pub prefill_passes: AtomicU64,
    pub prefill_chunks: AtomicU64,
    /// Prompt positions restored from the prefix cache instead of prefilled.
    pub prefix_hit_tokens: AtomicU64,
    /// Prefix-cache blocks dropped to make room.
    pub prefix_evictions: AtomicU64,
    /// Bytes and blocks the prefix cache holds.
    pub prefix_bytes: AtomicUsize,
    pub prefix_blocks: AtomicUsize,
    pub ttft: Mutex<Histogram>,
    /// Tokens decoded per recent step, for a tokens/s over the last [`RATE_WINDOW`].
    recent: Mutex<VecDeque<(Instant, usize)>>,
}

const RATE_WINDOW: Duration = Duration::from_secs(10);

impl Stats {
    pub fn new() -> Self {
        Stats {
            started: Instant::now(),
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            last_batch: AtomicUsize::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            encoder_cache_hits: AtomicU64::new(0),
            encoder_runs: AtomicU64::new(0),
            prefill_passes: AtomicU64::new(0),
            prefill_chunks: AtomicU64::new(0),
            prefix_hit_tokens: AtomicU64::new(0),
            prefix_evictions: AtomicU64::new(0),
            prefix_bytes: AtomicUsize::new(0),
            prefix_blocks: AtomicUsize::new(0),
            ttft: Mutex::new(Histogram::new(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn record_step(&self, tokens: usize) {
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("stats lock");
        recent.push_back((now, tokens));
        while recent.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            recent.pop_front();
        }
    }

    /// Generated tokens per second over the last ten seconds (or since the start).
    pub fn tokens_per_second(&self) -> f64 {
        let now = Instant::now();
        let recent = self.recent.lock().expect("stats lock");
        let tokens: usize = recent.iter().filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW).map(|(_, n)| n).sum();
        let window = now.duration_since(self.started).min(RATE_WINDOW).as_secs_f64().max(1e-3);
        tokens as f64 / window
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// A Prometheus histogram: cumulative bucket counts, sum and count.
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// What a prompt is fed as.
enum PromptInput {
    Embeds(Tensor<3>),
    Ids(Vec<u32>),
}

struct Choice {
    index: usize,
    cache: Option<KvCache>,
    chooser: TokenChooser,
    generated: Vec<u32>,
    counts: HashMap<u32, u32>,
    /// The token to feed at the next decoding step.
    next: Option<u32>,
    text: TextTracker,
    done: bool,
    /// `response_format`'s grammar state: which tokens may come next (boxed: a matcher is large,
    /// and most choices have none).
    constraint: Option<Box<Constraint>>,
}

/// A request in the batch.
struct Active {
    job: Job,
    params: Params,
    prompt: PromptInput,
    prompt_len: usize,
    prefilled: usize,
    /// The prompt's cache while it is being prefilled.
    cache: Option<KvCache>,
    /// The prompt's whole blocks, as the prefix cache knows them (empty without one).
    block_keys: PromptKeys,
    /// What the repetition penalty sees before the answer: for a chat the model's
    /// `chat_penalty_ids` (BioMedGPT-10B: BOS; R1: none), the prompt's ids for text.
    penalty_base: Vec<u32>,
    max_tokens: usize,
    choices: Vec<Choice>,
    first_token: bool,
}

impl Active {
    fn prefilling(&self) -> bool {
        self.prefilled < self.prompt_len
    }
    fn finished(&self) -> bool {
        !self.prefilling() && self.choices.iter().all(|c| c.done)
    }
}

pub struct Engine {
    model: BioMedGpt,
    config: EngineConfig,
    stats: Arc<Stats>,
    eos: Vec<u32>,
    encoded: Lru,
    /// `response_format` grammars for this model's vocabulary, built at the first request that
    /// asks for one.
    grammars: Option<Grammars>,
    prefix: PrefixCache,
}

/// Encoded molecules and proteins (projected features), least recently used dropped first.
struct Lru {
    capacity: usize,
    map: HashMap<(Modality, String), (Tensor<2>, usize)>,
    order: VecDeque<(Modality, String)>,
}

impl Lru {
    fn get(&mut self, key: &(Modality, String)) -> Option<(Tensor<2>, usize)> {
        let hit = self.map.get(key).cloned()?;
        if let Some(at) = self.order.iter().position(|k| k == key) {
            let k = self.order.remove(at).expect("present");
            self.order.push_back(k);
        }
        Some(hit)
    }

    fn put(&mut self, key: (Modality, String), value: (Tensor<2>, usize)) {
        if self.capacity == 0 {
            return;
        }
        while self.map.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }
}

/// What a prompt may hold, known before the engine sees it: the HTTP layer checks a request
/// against it before reading its molecules, the engine again for jobs given to it directly.
#[derive(Debug, Clone, Copy)]
pub struct PromptLimits {
    pub max_context: usize,
    /// Most positions a protein takes (the ESM encoder's token limit).
    pub protein_positions: usize,
    /// Whether the model reads molecules at all.
    pub molecule_encoder: bool,
}

impl PromptLimits {
    /// Refuses, before any tokenizer or encoder runs, a chat whose prompt cannot fit the context
    /// (issue 39, D5: a 4 MB text and 40 large molecules took 21.6 s of engine time before the
    /// context error). The count is a lower bound: a molecule takes one position per atom, a
    /// protein its residues + 2 up to the encoder's limit, text at least one position per
    /// [`MAX_BYTES_PER_TOKEN`] bytes.
    pub fn check(&self, messages: &[Message]) -> Result<(), Failure> {
        let (mut text_bytes, mut positions) = (0usize, 0usize);
        for message in messages {
            for part in &message.parts {
                match part {
                    Part::Text(t) => text_bytes += t.len(),
                    // Hydrogens written as atoms (`[H]`) are removed by RDKit: not counted.
                    Part::Molecule(smiles) => positions += biomedgpt_chem::count_atoms(smiles).saturating_sub(smiles.matches("[H").count()),
                    Part::Protein(sequence) => {
                        let residues = sequence.trim().chars().count() + 2;
                        positions += residues.min(self.protein_positions);
                    }
                }
            }
        }
        let at_least = positions + text_bytes / MAX_BYTES_PER_TOKEN;
        let max_context = self.max_context;
        if at_least > max_context {
            return Err(Failure {
                status: 400,
                message: format!(
                    "this model's maximum context length is {max_context} tokens; the messages need at least {at_least} ({positions} for molecules and proteins, {text_bytes} bytes of text)"
                ),
                param: Some("messages".into()),
            });
        }
        Ok(())
    }
}

/// Between encoder runs and decoding steps: a request whose client has gone (disconnected, or
/// its handler timed out) stops taking engine time (issue 39, D6).
fn check_cancelled(cancelled: &dyn Fn() -> bool) -> Result<(), Failure> {
    if cancelled() {
        return Err(Failure { status: 499, message: "the client went away; the request was cancelled".into(), param: None });
    }
    Ok(())
}

pub(crate) fn model_failure(at: &str, e: ModelError) -> Failure {
    let status = if e.is_bad_input() { 400 } else { 500 };
    // Errors that already name the input (a protein's record name is its location) say it once.
    let message = e.to_string();
    let message = if at.is_empty() || message.starts_with(at) { message } else { format!("{at}: {message}") };
    Failure { status, message, param: (!at.is_empty()).then(|| at.to_string()) }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl Engine {
    pub fn new(model: BioMedGpt, mut config: EngineConfig, stats: Arc<Stats>) -> Self {
        config.max_context = config.max_context.min(model.llm.config().max_position_embeddings).max(1);
        config.max_batch = config.max_batch.max(1);
        config.prefill_chunk = config.prefill_chunk.max(1);
        let eos = model.eos_token_ids();
        let encoded = Lru { capacity: config.encoder_cache, map: HashMap::new(), order: VecDeque::new() };
        let prefix = PrefixCache::new(prefix_cache::DEFAULT_BLOCK, config.prefix_cache_bytes);
        Engine { model, config, stats, eos, encoded, grammars: None, prefix }
    }

    /// The chained keys of a prompt's whole blocks: of its token ids, or of its input embeddings'
    /// values (which carry the molecules and proteins spliced in).
    fn block_keys(&self, prompt: &PromptInput) -> PromptKeys {
        match prompt {
            PromptInput::Ids(ids) => prefix_cache::ids_keys(ids, self.prefix.block()),
            PromptInput::Embeds(embeds) => prefix_cache::embeds_keys(embeds, self.prefix.block()),
        }
    }

    fn publish_prefix_stats(&self) {
        let p = self.prefix.stats();
        self.stats.prefix_hit_tokens.store(p.hit_tokens, Ordering::Relaxed);
        self.stats.prefix_evictions.store(p.evictions, Ordering::Relaxed);
        self.stats.prefix_bytes.store(self.prefix.bytes(), Ordering::Relaxed);
        self.stats.prefix_blocks.store(self.prefix.blocks(), Ordering::Relaxed);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn model(&self) -> &BioMedGpt {
        &self.model
    }

    pub fn prompt_limits(&self) -> PromptLimits {
        PromptLimits {
            max_context: self.config.max_context,
            protein_positions: self.model.max_input_positions(Modality::Protein),
            molecule_encoder: self.model.has_molecule_encoder(),
        }
    }

    /// Serves jobs until every sender of `jobs` is gone and the work in hand is done.
    pub fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>) {
        self.drive(Some(&jobs), VecDeque::new());
    }

    /// Runs `jobs` to the end, batched as a server batches them (`eval --batch-size`); their
    /// events are in each job's channel when this returns.
    pub fn run_jobs(&mut self, jobs: Vec<Job>) {
        self.stats.queued.fetch_add(jobs.len(), Ordering::Relaxed);
        self.drive(None, jobs.into());
    }

    fn drive(&mut self, jobs: Option<&std::sync::mpsc::Receiver<Job>>, mut waiting: VecDeque<Job>) {
        let mut active: Vec<Active> = Vec::new();
        let mut open = jobs.is_some();
        let mut passes_in_a_row = 0;
        loop {
            if active.is_empty() && waiting.is_empty() {
                self.stats.running.store(0, Ordering::Relaxed);
                let Some(jobs) = jobs.filter(|_| open) else { return };
                match jobs.recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(_) => return,
                }
                // (A wait past what `Instant` can hold is no wait rather than a panic.)
                let until = Instant::now().checked_add(self.config.batch_wait).unwrap_or_else(Instant::now);
                while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    match jobs.recv_timeout(left) {
                        Ok(job) => waiting.push_back(job),
                        Err(_) => break,
                    }
                }
            }
            take_arrivals(jobs, &mut open, &mut waiting);
            let stats = &self.stats;
            waiting.retain(|job| {
                let keep = !job.cancelled();
                if !keep {
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                }
                keep
            });
            active.retain(|a| !a.job.cancelled());

            // Admit in arrival order while the batch has room for the next request's choices.
            while let Some(job) = waiting.front() {
                if !self.has_room(&active, job) {
                    break;
                }
                let job = waiting.pop_front().expect("front exists");
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                let admitted = std::panic::catch_unwind(AssertUnwindSafe(|| self.admit(job)));
                match admitted {
                    Ok(Some(a)) => active.push(a),
                    Ok(None) => {}
                    // The job was moved into the panicking call: its sender is gone with it, so
                    // its client sees the stream end; the engine goes on.
                    Err(payload) => eprintln!("engine: a request failed while being prepared: {}", panic_message(&*payload)),
                }
            }
            self.stats.running.store(active.iter().map(|a| a.choices.len().max(1)).sum(), Ordering::Relaxed);
            if active.is_empty() {
                continue;
            }
            let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let prompts = self.prefill(&mut active);
                // Requests that came during the prompt pass go first if they fit (module doc).
                take_arrivals(jobs, &mut open, &mut waiting);
                if prompts && passes_in_a_row + 1 < PROMPT_PASSES_IN_A_ROW && waiting.front().is_some_and(|job| !job.cancelled() && self.has_room(&active, job)) {
                    passes_in_a_row += 1;
                    return;
                }
                passes_in_a_row = 0;
                self.decode(&mut active);
            }));
            if let Err(payload) = stepped {
                // A fault in the model fails the requests in the batch, not the server.
                let message = format!("internal error while decoding: {}", panic_message(&*payload));
                eprintln!("engine: {message}");
                for a in active.drain(..) {
                    let _ = a.job.events.send(Event::Failed(Failure::internal(message.clone())));
                }
            }
            active.retain(|a| !a.finished());
        }
    }

    /// Prepares a request: embeddings are computed at once; a generation is encoded, tokenized and
    /// checked against the context, then joins the batch (beam search runs here, in full).
    fn admit(&mut self, mut job: Job) -> Option<Active> {
        let work = std::mem::replace(&mut job.work, Work::Embed(Vec::new()));
        let (prompt_spec, params) = match work {
            Work::Embed(inputs) => {
                let result = self.embed(&inputs, &job.molecules, &|| job.cancelled());
                if let Some(tx) = job.embeddings.take() {
                    let _ = tx.send(result);
                }
                return None;
            }
            Work::Generate { prompt, params } => (prompt, params),
        };
        let fail = |job: &Job, f: Failure| {
            let _ = job.events.send(Event::Failed(f));
            None
        };
        let chat = matches!(prompt_spec, PromptSpec::Chat(_));
        let (prompt, prompt_len, penalty_base) = match &prompt_spec {
            PromptSpec::Chat(messages) => match self.chat_embeds(messages, params.tools.as_ref(), &job.molecules, &|| job.cancelled()) {
                Ok(embeds) => {
                    let len = embeds.dims()[1];
                    (PromptInput::Embeds(embeds), len, self.model.chat_penalty_ids())
                }
                Err(f) => return fail(&job, f),
            },
            PromptSpec::Text(text) => match self.model.tokenizer.encode(text, true) {
                Ok(ids) if ids.is_empty() => return fail(&job, Failure::bad_request("the prompt is empty")),
                Ok(ids) => (PromptInput::Ids(ids.clone()), ids.len(), ids),
                Err(e) => return fail(&job, Failure::bad_request(format!("prompt: {e}"))),
            },
        };
        let max_context = self.config.max_context;
        let room = max_context.saturating_sub(prompt_len);
        let max_tokens = match params.max_tokens {
            // `m > room`, not `prompt_len + m > max_context`: max_tokens near 2^64 would wrap
            // (issue 39, D1).
            Some(m) if m > room => {
                return fail(
                    &job,
                    Failure {
                        status: 400,
                        message: format!(
                            "this model's maximum context length is {max_context} tokens; the prompt has {prompt_len} tokens and max_tokens asks for {m} more ({} in all)",
                            prompt_len as u128 + m as u128
                        ),
                        param: Some("max_tokens".into()),
                    },
                );
            }
            Some(m) => m,
            None if room == 0 => {
                return fail(
                    &job,
                    Failure {
                        status: 400,
                        message: format!("this model's maximum context length is {max_context} tokens; the prompt has {prompt_len} tokens, leaving none to answer"),
                        param: Some("messages".into()),
                    },
                );
            }
            // R1's chat answers up to config.yaml's max_length, which counts the prompt.
            None => room.min(match &self.model.r1 {
                Some(r1) if chat => r1.max_new_tokens(prompt_len),
                _ if chat => CHAT_MAX_TOKENS,
                _ => COMPLETION_MAX_TOKENS,
            }),
        };
        // Beam search runs the whole prompt itself; the others restore what the prefix cache has.
        let block_keys = if self.prefix.enabled() && params.num_beams == 1 { self.block_keys(&prompt) } else { PromptKeys::default() };
        let hit = self.prefix.lookup(&block_keys, prompt_len);
        let cached_tokens = hit.positions(self.prefix.block());
        self.stats.prompt_tokens.fetch_add(prompt_len as u64, Ordering::Relaxed);
        let _ = job.events.send(Event::Started { prompt_tokens: prompt_len, cached_tokens });
        if params.num_beams > 1 {
            self.beam_search(&job, &params, prompt, penalty_base, max_tokens, chat);
            return None;
        }
        // One grammar state per choice, compiled before any decoding (a schema llguidance cannot
        // take is the request's 400).
        let mut constraints = Vec::new();
        let grammar = match (&params.response_format, &params.tools) {
            (Some(format), _) => Some(Grammar::Format(format)),
            (None, Some(tools)) => Some(Grammar::Tools(tools)),
            (None, None) => None,
        };
        if let Some(grammar) = grammar {
            if self.grammars.is_none() {
                let eos = self.eos.first().copied().unwrap_or(0);
                match Grammars::new(&self.model.tokenizer, self.model.llm.config().vocab_size, eos) {
                    Ok(g) => self.grammars = Some(g),
                    Err(e) => return fail(&job, Failure { status: 500, message: format!("response_format: {e}"), param: Some("response_format".into()) }),
                }
            }
            let grammars = self.grammars.as_ref().expect("built above");
            let field = if matches!(grammar, Grammar::Tools(_)) { "tools" } else { "response_format" };
            for _ in 0..params.n {
                match grammars.constraint(grammar) {
                    Ok(c) => constraints.push(Box::new(c)),
                    Err(e) => return fail(&job, Failure { status: 400, message: format!("{field}: {e}"), param: Some(field.into()) }),
                }
            }
        }
        let mut constraints = constraints.into_iter();
        let seed = params.seed.unwrap_or_else(rand::random);
        let choices = (0..params.n)
            .map(|i| {
                let strategy = match params.temperature {
                    Some(t) if t > 0.0 => Strategy::Sample {
                        temperature: t,
                        top_k: params.top_k,
                        top_p: params.top_p,
                        seed: seed.wrapping_add(i as u64),
                    },
                    _ => Strategy::Greedy,
                };
                Choice {
                    index: i,
                    cache: None,
                    chooser: TokenChooser::new(&strategy, params.repetition_penalty),
                    generated: Vec::new(),
                    counts: HashMap::new(),
                    next: None,
                    text: TextTracker::new(chat, params.stop.clone()),
                    done: max_tokens == 0,
                    constraint: constraints.next(),
                }
            })
            .collect::<Vec<_>>();
        if max_tokens == 0 {
            for c in &choices {
                let _ = job.events.send(Event::Finished { choice: c.index, reason: FinishReason::Length, completion_tokens: 0, tokens: Vec::new() });
            }
            return None;
        }
        let cache = if cached_tokens > 0 {
            let device = self.model.llm.device();
            let cache = self.prefix.restore(&block_keys, &hit, biomedgpt_llama::KvCache::room_for(prompt_len, max_tokens), &device);
            self.publish_prefix_stats();
            cache
        } else {
            self.model.llm.new_cache(1)
        };
        Some(Active {
            job,
            params,
            prompt,
            prompt_len,
            prefilled: cached_tokens,
            cache: Some(cache),
            block_keys,
            penalty_base,
            max_tokens,
            choices,
            first_token: false,
        })
    }

    /// The chat's input embeddings `[1, T, hidden]`: the reference prompt with each molecule and
    /// protein encoded (or taken from the cache) and spliced at its placeholder.
    fn chat_embeds(&mut self, messages: &[Message], tools: Option<&Tools>, molecules: &ParsedMolecules, cancelled: &dyn Fn() -> bool) -> Result<Tensor<3>, Failure> {
        self.prompt_limits().check(messages)?;
        let mut prompt = self.model.new_prompt();
        let mut system: Option<String> = None;
        let mut items: Vec<(Modality, Tensor<2>)> = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let text_only = |what: &str| -> Result<String, Failure> {
                let mut text = String::new();
                for (j, part) in message.parts.iter().enumerate() {
                    match part {
                        Part::Text(t) => text.push_str(t),
                        _ => {
                            return Err(Failure {
                                status: 400,
                                message: format!("messages[{i}].content[{j}]: {what} messages take text only; molecules and proteins go in user messages"),
                                param: Some(format!("messages[{i}].content[{j}]")),
                            });
                        }
                    }
                }
                Ok(text)
            };
            match message.role {
                Role::System => {
                    let text = text_only("system")?;
                    system = Some(match system {
                        Some(s) => format!("{s}\n{text}"),
                        None => text,
                    });
                }
                Role::Assistant => prompt.push_answer(&text_only("assistant")?),
                Role::User => {
                    if message.parts.is_empty() {
                        return Err(Failure { status: 400, message: format!("messages[{i}]: the user message is empty"), param: Some(format!("messages[{i}].content")) });
                    }
                    for (j, part) in message.parts.iter().enumerate() {
                        let at = format!("messages[{i}].content[{j}]");
                        match part {
                            Part::Text(t) if t.trim().is_empty() => {
                                return Err(Failure { status: 400, message: format!("{at}: the text is empty"), param: Some(at) });
                            }
                            Part::Text(t) => prompt.push_question(t),
                            Part::Molecule(smiles) => {
                                check_cancelled(cancelled)?;
                                let features = self.encoded(Modality::Molecule, smiles, molecules.get(smiles), &at)?;
                                items.push((Modality::Molecule, features));
                                prompt.push_modality(Modality::Molecule, smiles);
                            }
                            Part::Protein(sequence) => {
                                check_cancelled(cancelled)?;
                                let features = self.encoded(Modality::Protein, sequence, None, &at)?;
                                items.push((Modality::Protein, features));
                                prompt.push_modality(Modality::Protein, "");
                            }
                        }
                    }
                }
            }
        }
        match messages.last() {
            Some(m) if m.role == Role::User => {}
            Some(_) => {
                let at = format!("messages[{}]", messages.len() - 1);
                return Err(Failure { status: 400, message: format!("{at}: the last message must be the user's (the model answers it)"), param: Some(at) });
            }
            None => return Err(Failure { status: 400, message: "messages is empty".into(), param: Some("messages".into()) }),
        }
        if let Some(system) = system {
            prompt.system = system;
        }
        // The functions after the system prompt (the template of crate::tools).
        if let Some(tools) = tools {
            if self.model.r1.is_some() {
                return Err(Failure { status: 400, message: "tools: BioMedGPT-R1's chat has no system prompt to describe functions in".into(), param: Some("tools".into()) });
            }
            prompt.system = format!("{}\n\n{}", prompt.system, tools.instructions());
        }
        let (embeds, _) = self.model.prompt_embeds(&prompt.render(), &items).map_err(|e| model_failure("", e))?;
        Ok(self.model.fit_to_context(embeds))
    }

    /// Projected features of a molecule or protein, from the cache when it was seen before; a
    /// molecule from its graph when the HTTP layer has parsed it.
    fn encoded(&mut self, modality: Modality, content: &str, graph: Option<&MolGraph>, at: &str) -> Result<Tensor<2>, Failure> {
        let key = (modality, content.to_string());
        if let Some((features, _)) = self.encoded.get(&key) {
            self.stats.encoder_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(features);
        }
        let input = match (modality, graph) {
            (Modality::Molecule, Some(graph)) => Input::Graph { smiles: content.to_string(), graph: graph.clone() },
            (Modality::Molecule, None) => Input::Smiles(content.to_string()),
            (Modality::Protein, _) => Input::Protein { name: at.to_string(), sequence: content.to_string() },
        };
        let (features, truncated) = self.model.encode(&input).map_err(|e| model_failure(at, e))?;
        self.stats.encoder_runs.fetch_add(1, Ordering::Relaxed);
        self.encoded.put(key, (features.clone(), truncated));
        Ok(features)
    }

    /// Mean-pooled encoder features (before the adapters): over atoms for a molecule, over
    /// residues (`<cls>` and `<eos>` left out, as `embed protein --pool mean`) for a protein.
    /// Returns the vectors and the atoms + residues read.
    fn embed(&mut self, inputs: &[EmbedInput], molecules: &ParsedMolecules, cancelled: &dyn Fn() -> bool) -> Result<(Vec<Vec<f32>>, usize), Failure> {
        let mut out = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        for (i, input) in inputs.iter().enumerate() {
            check_cancelled(cancelled)?;
            let at = format!("input[{i}]");
            let model_input = match input {
                EmbedInput::Molecule(s) => match molecules.get(s) {
                    Some(graph) => Input::Graph { smiles: s.clone(), graph: graph.clone() },
                    None => Input::Smiles(s.clone()),
                },
                EmbedInput::Protein(s) => Input::Protein { name: at.clone(), sequence: s.clone() },
            };
            let (modality, features, _) = self.model.features(&model_input).map_err(|e| model_failure(&at, e))?;
            let [rows, width] = features.dims();
            let values = features.cast(DType::F32).into_data().try_to_vec::<f32>().map_err(|e| Failure::internal(format!("{e:?}")))?;
            let range = match modality {
                Modality::Molecule => 0..rows,
                Modality::Protein => 1..rows.saturating_sub(1).max(1),
            };
            let count = range.len().max(1);
            let mut mean = vec![0f32; width];
            for r in range {
                for (m, v) in mean.iter_mut().zip(&values[r * width..(r + 1) * width]) {
                    *m += v;
                }
            }
            mean.iter_mut().for_each(|m| *m /= count as f32);
            tokens += count;
            out.push(mean);
        }
        Ok((out, tokens))
    }

    fn beam_search(&mut self, job: &Job, params: &Params, prompt: PromptInput, penalty_base: Vec<u32>, max_tokens: usize, chat: bool) {
        let config = GenerationConfig {
            max_new_tokens: max_tokens,
            strategy: Strategy::Beam { num_beams: params.num_beams, length_penalty: params.length_penalty, early_stopping: params.early_stopping },
            repetition_penalty: params.repetition_penalty,
            eos_token_ids: self.eos.clone(),
        };
        let prompt = match prompt {
            PromptInput::Embeds(embeds) => Prompt::Embeds { embeds, penalty_ids: penalty_base },
            PromptInput::Ids(ids) => Prompt::Ids(ids),
        };
        let output = match generate_until(&self.model.llm, prompt, &config, &mut |_| {}, &|| job.cancelled()) {
            Ok(_) if job.cancelled() => return,
            Ok(o) => o,
            Err(e) => {
                let _ = job.events.send(Event::Failed(Failure::bad_request(e.to_string())));
                return;
            }
        };
        self.stats.generation_tokens.fetch_add(output.tokens.len() as u64, Ordering::Relaxed);
        let mut text = TextTracker::new(chat, params.stop.clone());
        let ids = if output.stopped_by_eos { &output.tokens[..output.tokens.len() - 1] } else { &output.tokens[..] };
        text.extend(ids);
        let (delta, hit) = text.update(&self.model.tokenizer, true);
        let _ = job.events.send(Event::Delta { choice: 0, text: delta, logprobs: Vec::new() });
        let reason = if output.stopped_by_eos || hit { FinishReason::Stop } else { FinishReason::Length };
        let _ = job.events.send(Event::Finished { choice: 0, reason, completion_tokens: output.tokens.len(), tokens: output.tokens });
    }

    /// Whether the batch has room for `job`'s choices (an empty batch takes any request).
    fn has_room(&self, active: &[Active], job: &Job) -> bool {
        let need = match &job.work {
            Work::Generate { params, .. } => params.n,
            Work::Embed(_) => 0,
        };
        let running: usize = active.iter().map(|a| a.choices.len().max(a.params.n)).sum();
        active.is_empty() || running + need <= self.config.max_batch
    }

    /// A decoding step: every sequence with a token to feed.
    fn decode(&mut self, active: &mut [Active]) {
        // Every sequence with a token to feed, in groups the decoding kernels keep row-exact.
        let group = DECODE_BATCH_ROWS.min(self.config.max_batch);
        let mut ready: Vec<(usize, usize)> = Vec::new();
        for (ai, a) in active.iter().enumerate() {
            for (ci, c) in a.choices.iter().enumerate() {
                if !c.done && c.next.is_some() {
                    ready.push((ai, ci));
                }
            }
        }
        if ready.is_empty() {
            return;
        }
        self.stats.last_batch.store(ready.len(), Ordering::Relaxed);
        for chunk in ready.chunks(group) {
            let ids: Vec<u32> = chunk.iter().map(|&(ai, ci)| active[ai].choices[ci].next.expect("ready")).collect();
            let mut caches: Vec<KvCache> = chunk.iter().map(|&(ai, ci)| active[ai].choices[ci].cache.take().expect("decoding has a cache")).collect();
            let logits = {
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
                self.model.llm.decode_step(&ids, &mut refs)
            };
            let rows = to_rows(logits);
            for ((&(ai, ci), cache), row) in chunk.iter().zip(caches).zip(rows) {
                active[ai].choices[ci].cache = Some(cache);
                self.advance(&mut active[ai], ci, row);
            }
        }
        self.stats.record_step(ready.len());
    }

    /// Chunks of the prompts still prefilling, oldest first, up to `prefill_chunk` positions in
    /// all, in one pass ([`biomedgpt_llama::Llama::prefill_many`]: the weights are read once for
    /// all of them). Prompts run through the prompt kernels whatever a chunk's length, so each
    /// prompt's numbers are those it gets alone and whole. Prompts whose last chunk this was get
    /// their first token.
    fn prefill(&mut self, active: &mut [Active]) -> bool {
        let mut budget = self.config.prefill_chunk.max(1);
        let mut picked: Vec<(usize, usize)> = Vec::new();
        for (ai, a) in active.iter().enumerate().filter(|(_, a)| a.prefilling()) {
            if budget == 0 {
                break;
            }
            let len = prefix_cache::chunk_len(a.prefilled, a.prompt_len, budget);
            picked.push((ai, len));
            budget -= len;
        }
        if !picked.is_empty() {
            self.stats.prefill_passes.fetch_add(1, Ordering::Relaxed);
            self.stats.prefill_chunks.fetch_add(picked.len() as u64, Ordering::Relaxed);
        }
        match picked[..] {
            [] => return false,
            [(ai, len)] => self.prefill_chunk(&mut active[ai], len),
            _ => self.prefill_together(active, &picked),
        }
        true
    }

    /// The input of a prompt's next `len` positions.
    fn chunk_input(&self, a: &Active, len: usize) -> DecoderInput {
        let start = a.prefilled;
        match &a.prompt {
            PromptInput::Embeds(e) if start == 0 && len == a.prompt_len => DecoderInput::Embeds(e.clone()),
            PromptInput::Embeds(e) => DecoderInput::Embeds(e.clone().narrow(1, start, len)),
            PromptInput::Ids(ids) => DecoderInput::Ids(ids_tensor(&ids[start..start + len], 1, &self.model.llm.device())),
        }
    }

    /// Several prompts' chunks (`(index in active, positions)`) in one pass.
    fn prefill_together(&mut self, active: &mut [Active], picked: &[(usize, usize)]) {
        let inputs: Vec<DecoderInput> = picked.iter().map(|&(ai, len)| self.chunk_input(&active[ai], len)).collect();
        let mut caches: Vec<KvCache> = picked.iter().map(|&(ai, _)| active[ai].cache.take().expect("prefilling has a cache")).collect();
        let hidden = {
            let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
            self.model.llm.prefill_many(inputs, &mut refs)
        };
        let mut done: Vec<(usize, Tensor<2>)> = Vec::new();
        for ((&(ai, len), cache), h) in picked.iter().zip(caches).zip(hidden) {
            let a = &mut active[ai];
            a.prefilled += len;
            self.keep_prefix(&a.block_keys, &cache);
            a.cache = Some(cache);
            if !a.prefilling() {
                // Stored: the keys (an embeddings prompt's are its input's bytes) are not needed
                // while the answer is decoded.
                a.block_keys = PromptKeys::default();
                let [_, t, width] = h.dims();
                done.push((ai, h.narrow(1, t - 1, 1).reshape([1, width])));
            }
        }
        // The finished prompts' first tokens, their logits computed as forward_last's.
        for group in done.chunks(DECODE_BATCH_ROWS) {
            let logits = self.model.llm.last_logits(Tensor::cat(group.iter().map(|(_, h)| h.clone()).collect(), 0));
            for (&(ai, _), row) in group.iter().zip(to_rows(logits)) {
                self.first_tokens(&mut active[ai], row);
            }
        }
    }

    /// The prompt's logits give each choice its first token; the choices share the prompt's
    /// keys and values (a clone copies on its first append).
    fn first_tokens(&mut self, a: &mut Active, row: Vec<f32>) {
        let mut cache = a.cache.take();
        let n = a.choices.len();
        for ci in 0..n {
            a.choices[ci].cache = if ci + 1 == n { cache.take() } else { cache.clone() };
            self.advance(a, ci, row.clone());
        }
    }

    fn prefill_chunk(&mut self, a: &mut Active, len: usize) {
        let input = self.chunk_input(a, len);
        a.prefilled += len;
        let more = a.prefilling();
        let cache = a.cache.as_mut().expect("prefilling has a cache");
        if more {
            let _ = self.model.llm.prefill(input, None, cache);
            self.keep_prefix(&a.block_keys, cache);
            return;
        }
        let logits = self.model.llm.prefill_last(input, None, cache);
        self.keep_prefix(&a.block_keys, cache);
        a.block_keys = PromptKeys::default();
        self.first_tokens(a, to_rows(logits).remove(0));
    }

    /// Stores the prompt blocks `cache` now holds in full in the prefix cache.
    fn keep_prefix(&mut self, keys: &PromptKeys, cache: &KvCache) {
        if !keys.is_empty() {
            self.prefix.store(keys, cache);
            self.publish_prefix_stats();
        }
    }

    /// Chooses a choice's next token from its logits and sends what it adds to the answer.
    fn advance(&mut self, a: &mut Active, ci: usize, mut scores: Vec<f32>) {
        let tokenizer = &self.model.tokenizer;
        let params = &a.params;
        let raw = params.logprobs.map(|_| {
            let mut lp = scores.clone();
            log_softmax(&mut lp);
            lp
        });
        let choice = &mut a.choices[ci];
        let history: Vec<u32> = a.penalty_base.iter().chain(&choice.generated).copied().collect();
        apply_repetition_penalty(&mut scores, &history, params.repetition_penalty);
        // OpenAI's penalties, over the answer's tokens: count times frequency, plus presence.
        if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
            for (&id, &count) in &choice.counts {
                if let Some(s) = scores.get_mut(id as usize) {
                    *s -= count as f32 * params.frequency_penalty + params.presence_penalty;
                }
            }
        }
        // The grammar's mask last, so that nothing it forbids can come back; a matcher that
        // fails (it should not) ends the answer where it is.
        let mut grammar_done = false;
        if let Some(c) = choice.constraint.as_mut()
            && let Err(e) = c.mask(&mut scores)
        {
            eprintln!("{}: response_format matcher: {e}", a.job.id);
            grammar_done = true;
        }
        let token = choice.chooser.choose_penalized(&mut scores);
        if let Some(c) = choice.constraint.as_mut() {
            grammar_done |= c.consume(token).is_err() || c.is_stopped();
        }
        choice.generated.push(token);
        *choice.counts.entry(token).or_default() += 1;
        self.stats.generation_tokens.fetch_add(1, Ordering::Relaxed);
        if !a.first_token {
            a.first_token = true;
            let ttft = a.job.submitted.elapsed().as_secs_f64();
            self.stats.ttft.lock().expect("stats lock").observe(ttft);
        }
        let eos = !params.ignore_eos && self.eos.contains(&token);
        let mut finish = if eos || grammar_done {
            Some(FinishReason::Stop)
        } else if choice.generated.len() >= a.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        if !eos {
            choice.text.extend(&[token]);
        }
        let (text, hit) = choice.text.update(tokenizer, finish.is_some());
        if hit {
            finish = Some(FinishReason::Stop);
        }
        let logprobs = match (raw, params.logprobs) {
            (Some(lp), Some(k)) => vec![token_logprob(tokenizer, token, &lp, k)],
            _ => Vec::new(),
        };
        if !text.is_empty() || !logprobs.is_empty() {
            let _ = a.job.events.send(Event::Delta { choice: choice.index, text, logprobs });
        }
        match finish {
            Some(reason) => {
                choice.done = true;
                choice.next = None;
                choice.cache = None;
                let _ = a.job.events.send(Event::Finished {
                    choice: choice.index,
                    reason,
                    completion_tokens: choice.generated.len(),
                    tokens: std::mem::take(&mut choice.generated),
                });
            }
            None => choice.next = Some(token),
        }
    }
}

fn token_logprob(tokenizer: &biomedgpt_llama::LlamaTokenizer, token: u32, logprobs: &[f32], k: usize) -> TokenLogprob {
    // The token as it reads inside a text (llama.cpp's token_to_piece): SentencePiece's `▁` is
    // the space decoding drops at the start, `<0xHH>` one byte of a longer UTF-8 character.
    let piece = |id: u32| {
        let raw = tokenizer.inner().id_to_token(id).unwrap_or_default();
        if let Some(hex) = raw.strip_prefix("<0x").and_then(|h| h.strip_suffix('>'))
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            return (String::from_utf8_lossy(&[byte]).into_owned(), vec![byte]);
        }
        let s = if raw.contains('\u{2581}') { raw.replace('\u{2581}', " ") } else { tokenizer.decode(&[id]).unwrap_or_default() };
        let b = s.as_bytes().to_vec();
        (s, b)
    };
    let mut order: Vec<usize> = (0..logprobs.len()).collect();
    let k = k.min(order.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&x, &y| logprobs[y].total_cmp(&logprobs[x]));
        order.truncate(k);
        order.sort_by(|&x, &y| logprobs[y].total_cmp(&logprobs[x]).then(x.cmp(&y)));
    } else {
        order.clear();
    }
    let (token_text, bytes) = piece(token);
    TokenLogprob {
        token: token_text,
        bytes,
        logprob: logprobs[token as usize],
        top: order
            .into_iter()
            .map(|i| {
                let (s, b) = piece(i as u32);
                (s, b, logprobs[i])
            })
            .collect(),
    }
}

/// Moves the requests that have arrived from `jobs` (while it is `open`) to `waiting`.
fn take_arrivals(jobs: Option<&std::sync::mpsc::Receiver<Job>>, open: &mut bool, waiting: &mut VecDeque<Job>) {
    while let Some(rx) = jobs.filter(|_| *open) {
        match rx.try_recv() {
            Ok(job) => waiting.push_back(job),
            Err(std::sync::mpsc::TryRecvError::Empty) => break,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => *open = false,
        }
    }
}

fn to_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let [rows, vocab] = logits.dims();
    let flat: Vec<f32> = logits.cast(DType::F32).into_data().try_to_vec::<f32>().expect("logits were cast to f32");
    (0..rows).map(|r| flat[r * vocab..(r + 1) * vocab].to_vec()).collect()
}
