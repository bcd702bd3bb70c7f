//! `biomedgpt score` (text metrics of a predictions file) and `biomedgpt eval` (a model or a
//! baseline on PubChemQA / UniProtQA / PubMedQA / MedMCQA / MedQA).
//!
//! eval appends each prediction to OUT/predictions.jsonl as soon as it is made and, when run
//! again with the same settings, continues after the last one; OUT/metrics.json is written
//! (atomically) at the end.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use biomedgpt_eval::baseline::{Baseline, BaselineKind};
use biomedgpt_eval::data::{LoadStats, McRecord, McTask, QaRecord, QaTask, Subject, load_multiple_choice, load_qa, mc_split_file, parse_predictions};
use biomedgpt_eval::metrics::{BleuMode, DEFAULT_WORDNET_DIR, Scorer, TextScores, WordNet, WordPieceTokenizer};
use biomedgpt_eval::metrics::wordpiece::SHIPPED_VOCAB_NAME;
use biomedgpt_llama::{GenerationConfig, LlamaTokenizer, Strategy, choice_logprobs};
use biomedgpt_serve::request::{Event, Job, Message, Params, Part, PromptSpec, Role, Work};
use biomedgpt_serve::{Engine, EngineConfig, Stats};

use crate::lm::{Family, TextLm, family_of};
use biomedgpt_model::{BioMedGpt, answer_text, split_reasoning};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::generate::{DecodingArgs, DecodingDefaults, ModelArgs};
use crate::progress::Progress;

/// The reference evaluation: 5 beams, repetition penalty 1.5, max_length 256 (255 new tokens
/// after the BOS it held as input id).
const EVAL_DECODING: DecodingDefaults = DecodingDefaults { max_new_tokens: 255, num_beams: 5, repetition_penalty: 1.5, length_penalty: 1.0 };

#[derive(Args)]
pub struct MetricArgs {
    /// BERT vocab.txt for the word pieces of BLEU and METEOR (the paper: SciBERT uncased).
    /// Default: the shipped ChEBI/GO vocabulary, whose numbers do not compare with the paper's.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// corpus: nltk corpus_bleu (MolT5, the paper); sentence: mean smoothed sentence BLEU.
    #[arg(long, value_enum, default_value = "corpus")]
    pub bleu: BleuArg,
    /// WordNet 3.0 database directory for METEOR (Debian: wordnet-base).
    #[arg(long, env = "BIOMEDGPT_WORDNET", default_value = DEFAULT_WORDNET_DIR)]
    pub wordnet: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BleuArg {
    Corpus,
    Sentence,
}

impl MetricArgs {
    fn scorer(&self) -> Result<(Scorer, String)> {
        let (tokenizer, vocab_name) = match &self.vocab {
            Some(path) => (WordPieceTokenizer::from_file(path)?, path.display().to_string()),
            None => {
                eprintln!(
                    "note: BLEU/METEOR use the shipped word-piece vocabulary ({SHIPPED_VOCAB_NAME}); \
                     pass --vocab scibert_scivocab_uncased/vocab.txt for numbers comparable with the paper"
                );
                (WordPieceTokenizer::shipped(), SHIPPED_VOCAB_NAME.to_string())
            }
        };
        Ok((Scorer::new(tokenizer, WordNet::open(&self.wordnet)?), vocab_name))
    }

    fn mode(&self) -> BleuMode {
        match self.bleu {
            BleuArg::Corpus => BleuMode::Corpus,
            BleuArg::Sentence => BleuMode::Sentence,
        }
    }
}

#[derive(Args)]
pub struct ScoreArgs {
    /// JSONL, one {"prediction": .., "reference": ..} per line.
    #[arg(long)]
    pub predictions: PathBuf,
    #[command(flatten)]
    pub metrics: MetricArgs,
}

pub fn score(args: ScoreArgs) -> Result<()> {
    let path = &args.predictions;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let pairs = parse_predictions(&text, &path.display().to_string()).map_err(anyhow::Error::msg)?;
    let (scorer, _) = args.metrics.scorer()?;
    let (scores, _) = scorer.score(pairs.iter().map(|(p, r)| (p.as_str(), r.as_str())), args.metrics.mode())?;
    println!("{}", serde_json::to_string(&scores)?);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    Pubchemqa,
    Uniprotqa,
    Pubmedqa,
    Medmcqa,
    Medqa,
}

enum Task {
    Qa(QaTask),
    Mc(McTask),
}

impl TaskArg {
    fn task(self) -> Task {
        match self {
            TaskArg::Pubchemqa => Task::Qa(QaTask::PubChemQa),
            TaskArg::Uniprotqa => Task::Qa(QaTask::UniProtQa),
            TaskArg::Pubmedqa => Task::Mc(McTask::PubMedQa),
            TaskArg::Medmcqa => Task::Mc(McTask::MedMcQa),
            TaskArg::Medqa => Task::Mc(McTask::MedQa),
        }
    }

    fn name(self) -> &'static str {
        match self.task() {
            Task::Qa(t) => t.name(),
            Task::Mc(t) => t.name(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BaselineArg {
    Retrieval,
    MostFrequent,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Model directory (BioMedGPT layout, or a LLaMA directory for the text-only tasks).
    #[arg(long, required_unless_present = "baseline")]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub task: TaskArg,
    /// Dataset directory ({split}.json / .jsonl) or file.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate the first N records only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output directory (predictions.jsonl, metrics.json); default eval/<task>-<split>[-<baseline>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Answer with a baseline fitted on --train-split instead of a model.
    #[arg(long, value_enum, conflicts_with = "model")]
    pub baseline: Option<BaselineArg>,
    #[arg(long, default_value = "train")]
    pub train_split: String,
    /// With --model: do not score the baselines beside the model (they are by default, on the
    /// same records, when the training split exists).
    #[arg(long)]
    pub no_baselines: bool,
    /// Leave malformed records (and molecules/proteins the model cannot read) out, counted.
    #[arg(long)]
    pub skip_invalid: bool,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Questions decoded together by the serving engine's continuous batching (greedy and
    /// sampling; beam search runs one question at a time). Answers do not depend on it.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// MiB of prompt keys and values kept for later questions that start the same way (every
    /// record shares the system prompt); 0 turns it off. Answers do not depend on it.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mb: usize,
    #[command(flatten)]
    pub metrics: MetricArgs,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Reads the predictions made so far, keyed by record source. A last line cut off by a crash is
/// dropped (and the file rewritten without it) so the run can continue.
fn read_predictions(path: &Path) -> Result<HashMap<String, Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut done = HashMap::new();
    // Bytes, not text: a crash can cut a multibyte character in the last line, which must not
    // make the whole file read as empty (issue 26, D4: every record was then answered again).
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut kept = String::new();
    for (i, raw) in lines.iter().enumerate() {
        let parsed = std::str::from_utf8(raw).map_err(|e| e.to_string()).and_then(|line| serde_json::from_str::<Value>(line).map(|v| (line, v)).map_err(|e| e.to_string()));
        match parsed.map(|(line, v)| (line.to_string(), v)) {
            Ok((line, v)) => {
                let source = v["source"].as_str().map(str::to_string).with_context(|| format!("{}:{}: no source", path.display(), i + 1))?;
                done.insert(source, v);
                kept.push_str(&line);
                kept.push('\n');
            }
            Err(_) if i + 1 == lines.len() => {
                eprintln!("note: {}: dropping an incomplete last line (interrupted run)", path.display());
                biomedgpt_io::npy::write_atomic(path, kept.as_bytes()).with_context(|| format!("rewriting {}", path.display()))?;
            }
            Err(e) => bail!("{}:{}: not valid JSON ({e}); move the file away to start over", path.display(), i + 1),
        }
    }
    Ok(done)
}

struct Appender(std::fs::File);

impl Appender {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self(std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?))
    }

    fn push(&mut self, v: &Value) -> Result<()> {
        writeln!(self.0, "{v}")?;
        self.0.flush()?;
        Ok(())
    }
}

/// Settings that must not change between a run and its continuation.
fn check_run_settings(out: &Path, settings: &Value) -> Result<()> {
    let path = out.join("run.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let previous: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        if &previous != settings {
            bail!(
                "{} holds predictions made with other settings ({}); now: {}. Use another --out or remove it",
                out.display(),
                previous,
                settings
            );
        }
    } else {
        biomedgpt_io::npy::write_atomic(&path, serde_json::to_string_pretty(settings)?.as_bytes())?;
    }
    Ok(())
}

fn load_model(args: &EvalArgs) -> Result<BioMedGpt> {
    let model = ModelArgs { model: args.model.clone().expect("clap requires --model without --baseline"), dtype: args.dtype.clone(), device: args.device.clone() };
    crate::ask::open(&model)
}

/// The language model of `--model` for multiple-choice scoring: a GPT-2 directory (BioMedLM), or
/// the LLaMA of a BioMedGPT or LLaMA directory (BOS first for LLaMA; GPT-2 adds none).
fn load_text_lm(args: &EvalArgs) -> Result<TextLm> {
    let dir = args.model.clone().expect("clap requires --model without --baseline");
    let model_args = ModelArgs { model: dir.clone(), dtype: args.dtype.clone(), device: args.device.clone() };
    if dir.join("config.json").is_file() && family_of(&dir)? == Family::Gpt2 {
        return model_args.open();
    }
    let model = crate::ask::open(&model_args)?;
    Ok(TextLm { model: Box::new(model.llm), tokenizer: model.tokenizer })
}

fn stats_json(stats: &LoadStats) -> Value {
    json!({"records": stats.records, "multi_subject_skipped": stats.multi_subject, "invalid_skipped": stats.invalid.len()})
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let data_file = match args.task.task() {
        Task::Qa(_) => biomedgpt_eval::data::qa::split_file(&args.data, &args.split)?,
        Task::Mc(task) => mc_split_file(&args.data, task, &args.split)?,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = args.baseline.map(|b| format!("-{}", baseline_kind(b).name())).unwrap_or_default();
        PathBuf::from("eval").join(format!("{}-{}{suffix}", args.task.name(), args.split))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data = json!({"path": args.data.display().to_string(), "file": data_file.display().to_string(), "sha256": sha256_file(&data_file)?, "split": args.split});
    match args.task.task() {
        Task::Qa(task) => eval_qa(&args, task, &out, data),
        Task::Mc(task) => eval_mc(&args, task, &out, data),
    }
}

fn baseline_kind(arg: BaselineArg) -> BaselineKind {
    match arg {
        BaselineArg::Retrieval => BaselineKind::Retrieval,
        BaselineArg::MostFrequent => BaselineKind::MostFrequent,
    }
}

fn limited<T>(mut records: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        records.truncate(n);
    }
    records
}

/// The engine's parameters for `generate`'s decoding settings.
pub(crate) fn engine_params(config: &GenerationConfig) -> Params {
    let mut p = Params { max_tokens: Some(config.max_new_tokens), repetition_penalty: config.repetition_penalty, ..Params::default() };
    match config.strategy {
        Strategy::Greedy => {}
        Strategy::Sample { temperature, top_k, top_p, seed } => {
            p.temperature = Some(temperature);
            p.top_k = top_k;
            p.top_p = top_p;
            p.seed = Some(seed);
        }
        Strategy::Beam { num_beams, length_penalty, early_stopping } => {
            p.num_beams = num_beams;
            p.length_penalty = length_penalty;
            p.early_stopping = early_stopping;
        }
    }
    p
}

/// One model answer: the text scored, and a reasoning model's thinking.
struct Prediction {
    text: String,
    reasoning: Option<String>,
}

/// Answers to `records`, decoded together by the serving engine: each is the chat `ask` builds
/// (the molecule or protein, then the question), its text extracted as `ask` does; a reasoning
/// model's (BioMedGPT-R1) scored text is what follows `</think>` (empty if it never got there).
/// `reference_length`: R1's answers end at config.yaml's `max_length` counting the prompt.
fn engine_answers(engine: &mut Engine, config: &GenerationConfig, reference_length: bool, records: &[&QaRecord]) -> Vec<Result<Prediction>> {
    let mut params = engine_params(config);
    if reference_length && engine.model().r1.is_some() {
        params.max_tokens = None;
    }
    let mut receivers = Vec::with_capacity(records.len());
    let jobs = records
        .iter()
        .map(|r| {
            let (events, rx) = tokio::sync::mpsc::unbounded_channel();
            receivers.push(rx);
            let subject = match &r.subject {
                Subject::Molecule { smiles } => Part::Molecule(smiles.clone()),
                Subject::Protein { sequence, .. } => Part::Protein(sequence.clone()),
            };
            let message = Message { role: Role::User, parts: vec![subject, Part::Text(r.question.clone())] };
            let work = Work::Generate { prompt: PromptSpec::Chat(vec![message]), params: params.clone() };
            Job { id: r.source.clone(), work, molecules: Default::default(), events, embeddings: None, submitted: std::time::Instant::now() }
        })
        .collect();
    engine.run_jobs(jobs);
    let model = engine.model();
    let eos = model.eos_token_ids();
    receivers
        .into_iter()
        .map(|mut rx| {
            let mut tokens = None;
            while let Ok(event) = rx.try_recv() {
                match event {
                    Event::Finished { tokens: t, .. } => tokens = Some(t),
                    Event::Failed(f) => bail!("{}", f.message),
                    _ => {}
                }
            }
            let mut ids = tokens.context("the engine gave no answer")?;
            if ids.last().is_some_and(|t| eos.contains(t)) {
                ids.pop();
            }
            let decoded = model.tokenizer.decode(&ids)?;
            Ok(match &model.r1 {
                Some(_) => {
                    let (reasoning, answer) = split_reasoning(&decoded);
                    Prediction { text: answer.unwrap_or_default(), reasoning: Some(reasoning) }
                }
                None => Prediction { text: answer_text(&decoded), reasoning: None },
            })
        })
        .collect()
}

fn eval_qa(args: &EvalArgs, task: QaTask, out: &Path, data: Value) -> Result<()> {
    let (records, stats) = load_qa(&args.data, task, &args.split, args.skip_invalid)?;
    let records = limited(records, args.limit);
    if records.is_empty() {
        bail!("{}: no records to evaluate", args.data.display());
    }
    let (scorer, vocab_name) = args.metrics.scorer()?;
    enum Answerer {
        Model(Box<Engine>, GenerationConfig),
        Baseline(Baseline),
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (mut answerer, settings) = match args.baseline {
        Some(kind) => {
            let (train, _) = load_qa(&args.data, task, &args.train_split, true)?;
            let baseline = Baseline::fit(baseline_kind(kind), &train);
            let settings = json!({"task": task.name(), "baseline": baseline.kind().name(), "train_split": args.train_split, "data": data});
            (Answerer::Baseline(baseline), settings)
        }
        None => {
            let model = load_model(args)?;
            // BioMedGPT-R1 decodes as its config.yaml says (as `ask`); 10B as the reference evaluation.
            let defaults = model.r1.as_ref().map_or(EVAL_DECODING, DecodingDefaults::r1);
            let config = args.decoding.config_with(model.eos_token_ids(), &defaults)?;
            let settings = json!({"task": task.name(), "model": args.model.as_ref().map(|m| m.display().to_string()), "dtype": args.dtype, "decoding": format!("{config:?}"), "system_prompt": model.system_prompt, "data": data});
            let positions = model.llm.config().max_position_embeddings;
            // Whole prompts in one prefill, as `ask` runs them.
            let engine_config = EngineConfig { max_batch: args.batch_size, max_context: positions, prefill_chunk: positions, encoder_cache: 64, prefix_cache_bytes: args.prefix_cache_mb.saturating_mul(1 << 20), batch_wait: std::time::Duration::ZERO };
            let engine = Engine::new(model, engine_config, std::sync::Arc::new(Stats::new()));
            (Answerer::Model(Box::new(engine), config), settings)
        }
    };
    check_run_settings(out, &settings)?;
    let predictions_path = out.join("predictions.jsonl");
    let done = read_predictions(&predictions_path)?;
    let todo: Vec<&QaRecord> = records.iter().filter(|r| !done.contains_key(&r.source)).collect();
    if !done.is_empty() {
        eprintln!("resuming: {} of {} records already answered in {}", records.len() - todo.len(), records.len(), predictions_path.display());
    }
    let mut appender = Appender::open(&predictions_path)?;
    let mut progress = Progress::new(todo.len(), "records", true);
    let mut unanswerable = Vec::new();
    // Groups of a few batches: the engine refills the batch as answers end, and each group's
    // predictions are written before the next starts (what a resumed run keeps).
    let group = match &answerer {
        Answerer::Model(..) => args.batch_size * 4,
        Answerer::Baseline(_) => 1,
    };
    for records in todo.chunks(group) {
        let answers = match &mut answerer {
            Answerer::Baseline(b) => records.iter().map(|r| Ok(Prediction { text: b.answer(r).unwrap_or_default(), reasoning: None })).collect(),
            Answerer::Model(engine, config) => engine_answers(engine, config, args.decoding.max_new_tokens.is_none(), records),
        };
        for (record, answer) in records.iter().zip(answers) {
            let line = match answer {
                Ok(Prediction { text, reasoning: None }) => json!({"source": record.source, "question": record.question, "reference": record.answer, "prediction": text}),
                Ok(Prediction { text, reasoning: Some(r) }) => {
                    json!({"source": record.source, "question": record.question, "reference": record.answer, "prediction": text, "reasoning": r})
                }
                Err(e) if args.skip_invalid => {
                    unanswerable.push(format!("{}: {e:#}", record.source));
                    json!({"source": record.source, "error": format!("{e:#}")})
                }
                Err(e) => return Err(e.context(format!("{} (use --skip-invalid to leave such records out)", record.source))),
            };
            appender.push(&line)?;
            progress.advance(1);
        }
    }
    progress.finish();
    let done = read_predictions(&predictions_path)?;
    let answered: Vec<(&QaRecord, &str)> = records
        .iter()
        .filter_map(|r| done.get(&r.source).and_then(|v| v["prediction"].as_str()).map(|p| (r, p)))
        .collect();
    let skipped_at_eval = records.len() - answered.len();
    let (scores, _) = scorer.score(answered.iter().map(|(r, p)| (*p, r.answer.as_str())), args.metrics.mode())?;
    let baselines = match &answerer {
        Answerer::Model(..) if !args.no_baselines => baselines_beside(args, task, &answered, &scorer)?,
        _ => Value::Null,
    };
    let report = json!({
        "run": settings,
        "metrics": scores,
        "baselines": baselines,
        "bleu": format!("{:?}", args.metrics.mode()).to_lowercase(),
        "vocab": vocab_name,
        "wordnet": args.metrics.wordnet.display().to_string(),
        "records": {"loaded": stats_json(&stats), "limit": args.limit, "evaluated": scores.n, "unanswerable_skipped": skipped_at_eval},
    });
    write_report(out, &report)?;
    for message in stats.invalid.iter().chain(&unanswerable) {
        eprintln!("skipped: {message}");
    }
    print_summary(&scores);
    Ok(())
}

/// The retrieval and most-frequent baselines scored on the records the model answered, so that
/// every model number has its baselines beside it. Null when there is no training split.
fn baselines_beside(args: &EvalArgs, task: QaTask, answered: &[(&QaRecord, &str)], scorer: &Scorer) -> Result<Value> {
    let Ok((train, _)) = load_qa(&args.data, task, &args.train_split, true) else {
        eprintln!("note: no {} split in {}: baselines not scored", args.train_split, args.data.display());
        return Ok(Value::Null);
    };
    let mut out = serde_json::Map::new();
    for kind in [BaselineKind::Retrieval, BaselineKind::MostFrequent] {
        let baseline = Baseline::fit(kind, &train);
        let predictions: Vec<String> = answered.iter().map(|(r, _)| baseline.answer(r).unwrap_or_default()).collect();
        let (scores, _) = scorer.score(
            answered.iter().zip(&predictions).map(|((r, _), p)| (p.as_str(), r.answer.as_str())),
            args.metrics.mode(),
        )?;
        out.insert(kind.name().to_string(), serde_json::to_value(scores)?);
    }
    out.insert("train_split".into(), json!(args.train_split));
    Ok(Value::Object(out))
}

fn write_report(out: &Path, report: &Value) -> Result<()> {
    let path = out.join("metrics.json");
    biomedgpt_io::npy::write_atomic(&path, (serde_json::to_string_pretty(report)? + "\n").as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn print_summary(scores: &TextScores) {
    println!("{}", serde_json::to_string(scores).expect("scores serialize"));
}

/// lm-evaluation-harness `_encode_pair`: trailing spaces of the context move to the continuation;
/// the context is tokenized alone, and the continuation's tokens are those of context +
/// continuation after as many tokens as the context has.
fn encode_pair(tokenizer: &LlamaTokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = context.trim_end_matches(' ');
    let continuation = format!("{}{continuation}", &context[trimmed.len()..]);
    let whole = tokenizer.encode(&format!("{trimmed}{continuation}"), true)?;
    let context_ids = tokenizer.encode(trimmed, true)?;
    let continuation_ids = whole.get(context_ids.len()..).unwrap_or_default().to_vec();
    Ok((context_ids, continuation_ids))
}

fn eval_mc(args: &EvalArgs, task: McTask, out: &Path, data: Value) -> Result<()> {
    if args.baseline.is_some() {
        bail!("--baseline applies to pubchemqa and uniprotqa; multiple-choice tasks report accuracy of a model");
    }
    let (records, stats) = load_multiple_choice(&args.data, task, &args.split, args.skip_invalid)?;
    let records = limited(records, args.limit);
    if records.is_empty() {
        bail!("{}: no records to evaluate", args.data.display());
    }
    let lm = load_text_lm(args)?;
    let settings = json!({"task": task.name(), "model": args.model.as_ref().map(|m| m.display().to_string()), "dtype": args.dtype, "scoring": "log-likelihood of each choice (lm-evaluation-harness), BOS first", "data": data});
    check_run_settings(out, &settings)?;
    let predictions_path = out.join("predictions.jsonl");
    let done = read_predictions(&predictions_path)?;
    let todo: Vec<&McRecord> = records.iter().filter(|r| !done.contains_key(&r.source)).collect();
    let mut appender = Appender::open(&predictions_path)?;
    let mut progress = Progress::new(todo.len(), "questions", true);
    // A record longer than any tokenization of the context could fit is refused before it is
    // tokenized: no token of these vocabularies spans more than a few dozen bytes, and a 200 MB
    // question took 5 GB in the tokenizer before the context error (issue 39, D14).
    let max_bytes = lm.model.max_positions().saturating_mul(MAX_BYTES_PER_POSITION);
    for record in todo {
        let longest_choice = record.choices.iter().map(String::len).max().unwrap_or(0);
        let bytes = record.context.len() + longest_choice;
        if bytes > max_bytes {
            bail!(
                "{}: the question and its longest choice have {bytes} bytes, more than the model's {} positions can hold (at most {max_bytes} bytes are tokenized)",
                record.source,
                lm.model.max_positions()
            );
        }
        let mut context = Vec::new();
        let mut continuations = Vec::new();
        for choice in &record.choices {
            let (ctx, continuation) = encode_pair(&lm.tokenizer, &record.context, choice)?;
            context = ctx; // the same for every choice: the context is tokenized alone
            continuations.push(continuation);
        }
        let scores = choice_logprobs(lm.model.as_ref(), &context, &continuations).with_context(|| record.source.clone())?;
        let logprobs: Vec<f64> = scores.iter().map(|s| s.logprob).collect();
        appender.push(&json!({"source": record.source, "logprobs": logprobs, "prediction": argmax(&logprobs), "gold": record.gold}))?;
        progress.advance(1);
    }
    progress.finish();
    let done = read_predictions(&predictions_path)?;
    let (mut correct, mut correct_norm) = (0usize, 0usize);
    for record in &records {
        let logprobs: Vec<f64> = done[&record.source]["logprobs"].as_array().context("logprobs")?.iter().filter_map(Value::as_f64).collect();
        let lengths: Vec<f64> = record.choices.iter().map(|c| c.trim_start().chars().count() as f64).collect();
        correct += (argmax(&logprobs) == record.gold) as usize;
        let normalized: Vec<f64> = logprobs.iter().zip(&lengths).map(|(l, n)| l / n).collect();
        correct_norm += (argmax(&normalized) == record.gold) as usize;
    }
    let n = records.len();
    let metrics = json!({"acc": correct as f64 / n as f64, "acc_norm": correct_norm as f64 / n as f64, "n": n});
    let report = json!({"run": settings, "metrics": metrics, "records": {"loaded": stats_json(&stats), "limit": args.limit}});
    write_report(out, &report)?;
    println!("{metrics}");
    Ok(())
}

/// Bytes per model position past which a text cannot fit the context, however it tokenizes.
const MAX_BYTES_PER_POSITION: usize = 128;

/// Index of the largest value; the first one on ties (numpy argmax).
fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}
