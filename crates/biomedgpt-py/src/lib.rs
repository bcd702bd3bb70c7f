//! `import biomedgpt`: the model in-process for Python (pyo3; built with maturin, see
//! README.md). The same library calls as the CLI, so answers and embeddings equal its own:
//! [`BioMedGpt::load_with_dtype`] (the dtype decided as `--dtype`), [`Chat`] (the reference
//! prompt), [`TextTracker`] (streamed pieces that add up to the answer), the GIN / ESM-2 as
//! `embed` runs them.
//!
//! Model work runs with the GIL released (other Python threads go on); generation checks for
//! Ctrl-C between tokens and raises `KeyboardInterrupt`. Bad input raises `ValueError` naming it,
//! a missing path `FileNotFoundError`; a Rust panic becomes pyo3's `PanicException`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use biomedgpt_llama::text_stream::TextTracker;
use biomedgpt_llama::{EarlyStopping, GenerationConfig, Strategy};
use biomedgpt_model::text_lm::TextLm;
use biomedgpt_model::{BioMedGpt, Chat, Input, ModelError};
use biomedgpt_serve::openai::{ChatRequest, parse_body};
use biomedgpt_serve::request::{Event, Job, Work};
use biomedgpt_serve::{Engine, EngineConfig, Stats};
use burn::tensor::Device;
use numpy::ndarray::Array2;
use numpy::IntoPyArray;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `ask`'s default answer length (the reference's max_length 256 counting the BOS it held).
const DEFAULT_MAX_NEW_TOKENS: usize = 255;

fn model_error(e: ModelError) -> PyErr {
    if e.is_bad_input() { PyValueError::new_err(e.to_string()) } else { PyRuntimeError::new_err(e.to_string()) }
}

/// What both `load`s check first: the path exists, the device is one this build has.
fn load_args(path: &std::path::Path, device: &str) -> PyResult<Device> {
    if !path.exists() {
        return Err(PyFileNotFoundError::new_err(format!("{}: no such file or directory", path.display())));
    }
    self::device(device)
}

/// "cpu", "wgpu[:N]" or "cuda[:N]", as the CLI's `--device`: GPU devices where the package was
/// built with their feature, else a ValueError saying how to build it.
fn device(spec: &str) -> PyResult<Device> {
    biomedgpt_device::parse(spec).map_err(|e| PyValueError::new_err(format!("device {spec:?}: {e}")))
}

/// One SMILES or several, one sequence or several.
#[derive(FromPyObject)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A BioMedGPT model (a model directory: the 10B layout, a converted or fine-tuned one, the demo),
/// held by the serving engine so that `chat` runs exactly as `biomedgpt serve` does.
#[pyclass(name = "BioMedGPT", module = "biomedgpt", frozen)]
struct PyBioMedGpt {
    engine: Arc<Mutex<Engine>>,
}

/// The model inside the engine.
struct ModelGuard<'a>(std::sync::MutexGuard<'a, Engine>);

impl std::ops::Deref for ModelGuard<'_> {
    type Target = BioMedGpt;
    fn deref(&self) -> &BioMedGpt {
        self.0.model()
    }
}

fn lock(engine: &Mutex<Engine>) -> ModelGuard<'_> {
    ModelGuard(engine.lock().expect("model lock"))
}

#[allow(clippy::too_many_arguments)]
fn generation_config(
    eos: Vec<u32>,
    max_new_tokens: Option<usize>,
    num_beams: usize,
    repetition_penalty: f32,
    length_penalty: f32,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    seed: u64,
) -> PyResult<GenerationConfig> {
    let sampling = temperature.is_some() || top_k.is_some() || top_p.is_some();
    let strategy = match (num_beams, sampling) {
        (0, _) => return Err(PyValueError::new_err("num_beams must be at least 1")),
        (n, true) if n > 1 => return Err(PyValueError::new_err("beam search with sampling is not supported: drop num_beams or the sampling arguments")),
        (n, false) if n > 1 => Strategy::Beam { num_beams: n, length_penalty, early_stopping: EarlyStopping::False },
        (_, true) => Strategy::Sample { temperature: temperature.unwrap_or(1.0), top_k, top_p, seed },
        (_, false) => Strategy::Greedy,
    };
    let config = GenerationConfig { max_new_tokens: max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS), strategy, repetition_penalty, eos_token_ids: eos };
    config.validate().map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(config)
}

/// The molecules, then the proteins, as `ask --smiles --protein` adds them.
fn inputs(smiles: Option<OneOrMany>, protein: Option<OneOrMany>) -> Vec<Input> {
    let mut inputs: Vec<Input> = smiles.map(OneOrMany::into_vec).unwrap_or_default().into_iter().map(Input::Smiles).collect();
    inputs.extend(protein.map(OneOrMany::into_vec).unwrap_or_default().into_iter().map(|sequence| Input::Protein { name: "protein".into(), sequence }));
    inputs
}

/// Runs `work` with the GIL released; `stop()` inside it turns true once Python has a pending
/// signal (Ctrl-C), whose exception is then raised.
fn interruptible<T: Send>(py: Python<'_>, work: impl FnOnce(&dyn Fn() -> bool) -> T + Send) -> PyResult<T> {
    let pending: Mutex<Option<PyErr>> = Mutex::new(None);
    let stop = || {
        if let Err(e) = Python::attach(|py| py.check_signals()) {
            *pending.lock().expect("signal slot") = Some(e);
        }
        pending.lock().expect("signal slot").is_some()
    };
    let out = py.detach(|| work(&stop));
    match pending.into_inner().expect("signal slot") {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[pymethods]
impl PyBioMedGpt {
    /// Loads a model directory. `dtype`: "auto" (the stored dtype; GGUF blocks stay in their
    /// blocks), "f32", "f16" or "bf16", as the CLI's `--dtype`. `device`: "cpu".
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu", dtype = "auto", prefix_cache_mb = 512))]
    fn load(py: Python<'_>, path: PathBuf, device: &str, dtype: &str, prefix_cache_mb: usize) -> PyResult<Self> {
        let device = load_args(&path, device)?;
        let model = py.detach(|| BioMedGpt::load_with_dtype(&path, dtype, &device)).map_err(model_error)?;
        let positions = model.llm.config().max_position_embeddings;
        // Whole prompts in one prefill, as `ask` runs them (eval's engine likewise), after what
        // the prefix cache holds of them.
        let config = EngineConfig { max_batch: 16, max_context: positions, prefill_chunk: positions, encoder_cache: 64, prefix_cache_bytes: prefix_cache_mb.saturating_mul(1 << 20), batch_wait: std::time::Duration::ZERO };
        let engine = Engine::new(model, config, Arc::new(Stats::new()));
        Ok(PyBioMedGpt { engine: Arc::new(Mutex::new(engine)) })
    }

    /// Answers `question` about the molecules (`smiles`: one or a list) and proteins (`protein`:
    /// one sequence or a list), as `biomedgpt ask` does with the same arguments: greedy by
    /// default, beam search with `num_beams` > 1, sampling with `temperature`/`top_k`/`top_p`.
    /// `ignore_eos` goes on to `max_new_tokens`. With `stream=True`, returns an iterator of text
    /// pieces that add up to the answer.
    #[pyo3(signature = (question, smiles = None, protein = None, *, max_new_tokens = None, num_beams = None, repetition_penalty = None, length_penalty = None, temperature = None, top_k = None, top_p = None, seed = 0, ignore_eos = false, stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &self,
        py: Python<'_>,
        question: String,
        smiles: Option<OneOrMany>,
        protein: Option<OneOrMany>,
        max_new_tokens: Option<usize>,
        num_beams: Option<usize>,
        repetition_penalty: Option<f32>,
        length_penalty: Option<f32>,
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
        ignore_eos: bool,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        if question.trim().is_empty() {
            return Err(PyValueError::new_err("question is empty: ask something about the molecule or protein"));
        }
        // ignore_eos: go on to max_new_tokens (vLLM's and llama.cpp's extension, for fixed lengths).
        let (eos, defaults) = {
            let model = lock(&self.engine);
            let eos = if ignore_eos { Vec::new() } else { model.eos_token_ids() };
            // BioMedGPT-R1 decodes as its config.yaml says, as `biomedgpt ask` does.
            let defaults = match &model.r1 {
                Some(r1) => (r1.text_generation.num_beams, r1.text_generation.repetition_penalty, r1.text_generation.length_penalty),
                None => (1, 1.0, 1.0),
            };
            (eos, defaults)
        };
        let sampling = temperature.is_some() || top_k.is_some() || top_p.is_some();
        let num_beams = num_beams.unwrap_or(if sampling { 1 } else { defaults.0 });
        let (repetition_penalty, length_penalty) = (repetition_penalty.unwrap_or(defaults.1), length_penalty.unwrap_or(defaults.2));
        let config = generation_config(eos, max_new_tokens, num_beams, repetition_penalty, length_penalty, temperature, top_k, top_p, seed)?;
        // R1: without max_new_tokens, config.yaml's max_length (counting the prompt) bounds it.
        let length_from_config = max_new_tokens.is_none();
        let inputs = inputs(smiles, protein);
        if stream {
            return Ok(AnswerStream::start(self.engine.clone(), inputs, question, config, length_from_config).into_pyobject(py)?.into_any().unbind());
        }
        let engine = &self.engine;
        let answer = interruptible(py, |stop| {
            let model = lock(engine);
            let mut chat = Chat::new(&model);
            chat.length_from_config = length_from_config;
            for input in &inputs {
                chat.add(input)?;
            }
            chat.ask(&question)?;
            chat.answer_until(&config, &mut |_| {}, &|| stop())
        })?
        .map_err(model_error)?;
        Ok(answer.text.into_pyobject(py)?.into_any().unbind())
    }

    /// Answers a conversation in the shape of OpenAI's chat messages, as `biomedgpt serve`'s
    /// `/v1/chat/completions` does (the same code): `messages` is a list of `{"role", "content"}`
    /// dicts whose content is a string or a list of parts (`{"type": "text", "text"}`,
    /// `{"type": "molecule", "molecule": {"smiles"}}`, `{"type": "protein", "protein":
    /// {"sequence"}}`); the keyword arguments are that endpoint's fields (`max_tokens`,
    /// `temperature`, `seed`, `n`, `stop`, `num_beams`, `repetition_penalty`, `stream`, ...).
    /// Returns the answer, a list of `n` answers, or with `stream=True` an iterator of text
    /// pieces (the server's deltas). Errors name the field, as the server's 400s do.
    #[pyo3(signature = (messages, **fields))]
    fn chat(&self, py: Python<'_>, messages: Bound<'_, PyAny>, fields: Option<Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        let body = PyDict::new(py);
        if let Some(fields) = fields {
            body.update(fields.as_mapping())?;
        }
        body.set_item("messages", messages)?;
        let json: String = py.import("json")?.call_method1("dumps", (body,))?.extract()?;
        let request: ChatRequest = parse_body(json.as_bytes()).map_err(|f| PyValueError::new_err(f.message))?;
        let prompt = request.prompt().map_err(|f| PyValueError::new_err(f.message))?;
        let params = request.logprobs().and_then(|l| request.sampling.params(l)).map_err(|f| PyValueError::new_err(f.message))?;
        let n = params.n;
        if n > 16 {
            return Err(PyValueError::new_err(format!("n is {n}, above the 16 sequences one call decodes")));
        }
        if request.sampling.stream {
            if n > 1 {
                return Err(PyValueError::new_err("stream: one answer at a time (n = 1)"));
            }
            let work = Work::Generate { prompt, params };
            return Ok(AnswerStream::chat(self.engine.clone(), work).into_pyobject(py)?.into_any().unbind());
        }
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job { id: "python".into(), work: Work::Generate { prompt, params }, molecules: Default::default(), events, embeddings: None, submitted: std::time::Instant::now() };
        // The engine runs on its own thread while this one waits with the GIL released and
        // checks for Ctrl-C; an interrupt drops the receiver, which cancels the job at its next
        // step (as a client that leaves the server).
        let (done_tx, done_rx) = channel::<()>();
        let done_rx = Mutex::new(done_rx);
        let engine = self.engine.clone();
        let worker = std::thread::spawn(move || {
            engine.lock().expect("model lock").run_jobs(vec![job]);
            let _ = done_tx.send(());
        });
        loop {
            match py.detach(|| done_rx.lock().expect("done lock").recv_timeout(Duration::from_millis(50))) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        drop(rx);
                        let _ = py.detach(|| worker.join());
                        return Err(e);
                    }
                }
            }
        }
        let _ = py.detach(|| worker.join());
        // The answer is what the server would send: its streamed pieces, added up.
        let mut texts = vec![String::new(); n];
        while let Ok(event) = rx.try_recv() {
            match event {
                Event::Delta { choice, text, .. } => texts[choice].push_str(&text),
                Event::Failed(f) => return Err(PyValueError::new_err(f.message)),
                _ => {}
            }
        }
        if n == 1 {
            return Ok(texts.remove(0).into_pyobject(py)?.into_any().unbind());
        }
        Ok(texts.into_pyobject(py)?.into_any().unbind())
    }

    /// GIN features of each molecule, f32: `pool="mean"` gives an array `[n, 300]` (the mean
    /// over atoms, as `embed molecule --pool mean`), `pool="none"` a list of `[atoms, 300]`.
    #[pyo3(signature = (smiles, pool = "mean"))]
    fn embed_molecules(&self, py: Python<'_>, smiles: OneOrMany, pool: &str) -> PyResult<Py<PyAny>> {
        let smiles = smiles.into_vec();
        let mean = pooling(pool)?;
        let gin = lock(&self.engine).encoders().gin.ok_or_else(|| PyValueError::new_err("this model has no molecule encoder"))?;
        let width = gin.config().output_dim();
        let features = py.detach(|| -> Result<Vec<Vec<f32>>, String> {
            let mut graphs = Vec::with_capacity(smiles.len());
            for (i, s) in smiles.iter().enumerate() {
                graphs.push(biomedgpt_chem::featurize(s).map_err(|e| format!("smiles[{i}]: {e}"))?);
            }
            let out = if mean { gin.pooled_features(&graphs) } else { gin.node_features(&graphs) };
            out.map_err(|e| e.to_string())
        });
        let features = features.map_err(PyValueError::new_err)?;
        arrays(py, features, width, mean)
    }

    /// ESM-2 features of each protein, f32: `pool="mean"` gives `[n, hidden]` (the mean over
    /// residues, `<cls>`/`<eos>` left out, as `embed protein --pool mean`), `pool="none"` a list
    /// of `[residues + 2, hidden]` (the last hidden state, as BioMedGPT splices it).
    #[pyo3(signature = (sequences, pool = "mean"))]
    fn embed_proteins(&self, py: Python<'_>, sequences: OneOrMany, pool: &str) -> PyResult<Py<PyAny>> {
        let sequences = sequences.into_vec();
        let mean = pooling(pool)?;
        let (esm, alphabet, max_tokens) = {
            let model = lock(&self.engine);
            let esm = model.encoders().esm.ok_or_else(|| PyValueError::new_err("this model has no protein encoder"))?;
            let (alphabet, max_tokens) = model.protein_alphabet().expect("a protein encoder has its alphabet");
            (esm, alphabet.clone(), max_tokens)
        };
        let hidden = esm.config().hidden_size;
        let features = py.detach(|| -> Result<Vec<Vec<f32>>, String> {
            let mut ids = Vec::with_capacity(sequences.len());
            for (i, s) in sequences.iter().enumerate() {
                ids.push(alphabet.encode(&format!("sequences[{i}]"), s, max_tokens, true).map_err(|e| e.to_string())?.ids);
            }
            let pool = if mean { biomedgpt_esm::Pool::Mean } else { biomedgpt_esm::Pool::None };
            Ok(esm.embed(&ids, 8, None, pool, |_| {}).into_iter().map(|f| f.values).collect())
        });
        let features = features.map_err(PyValueError::new_err)?;
        arrays(py, features, hidden, mean)
    }
}

fn pooling(pool: &str) -> PyResult<bool> {
    match pool {
        "mean" => Ok(true),
        "none" => Ok(false),
        other => Err(PyValueError::new_err(format!("pool must be \"mean\" or \"none\", not {other:?}"))),
    }
}

/// Pooled rows as one `[n, width]` array, or per-item `[rows, width]` arrays in a list.
fn arrays(py: Python<'_>, features: Vec<Vec<f32>>, width: usize, pooled: bool) -> PyResult<Py<PyAny>> {
    let shaped = |values: Vec<f32>| -> PyResult<Array2<f32>> {
        let rows = values.len() / width.max(1);
        Array2::from_shape_vec((rows, width), values).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    };
    if pooled {
        let n = features.len();
        let array = Array2::from_shape_vec((n, width), features.concat()).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        return Ok(array.into_pyarray(py).into_any().unbind());
    }
    let list = features.into_iter().map(|v| shaped(v).map(|a| a.into_pyarray(py).into_any().unbind())).collect::<PyResult<Vec<_>>>()?;
    Ok(list.into_pyobject(py)?.into_any().unbind())
}

/// A text language model: a LLaMA-family HF directory, a GGUF file, or GPT-2 (BioMedLM), as the
/// CLI's `generate` and `inspect logits` open it.
#[pyclass(name = "LanguageModel", module = "biomedgpt", frozen)]
struct PyLanguageModel {
    lm: Arc<Mutex<TextLm>>,
}

#[pymethods]
impl PyLanguageModel {
    /// Loads an HF model directory or a `.gguf` file; `dtype` as the CLI's `--dtype`.
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu", dtype = "auto"))]
    fn load(py: Python<'_>, path: PathBuf, device: &str, dtype: &str) -> PyResult<Self> {
        let device = load_args(&path, device)?;
        let lm = py.detach(|| TextLm::open_with_dtype(&path, dtype, &device)).map_err(model_error)?;
        Ok(PyLanguageModel { lm: Arc::new(Mutex::new(lm)) })
    }

    /// Continues `prompt` (a LLaMA gets a BOS in front, GPT-2 none), as `biomedgpt generate`:
    /// greedy by default (128 new tokens at most), beams or seeded sampling as in `ask`. Returns
    /// the generated text, or with `stream=True` an iterator of its pieces.
    #[pyo3(signature = (prompt, *, max_new_tokens = 128, num_beams = 1, repetition_penalty = 1.0, length_penalty = 1.0, temperature = None, top_k = None, top_p = None, seed = 0, stream = false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: String,
        max_new_tokens: usize,
        num_beams: usize,
        repetition_penalty: f32,
        length_penalty: f32,
        temperature: Option<f32>,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
        stream: bool,
    ) -> PyResult<Py<PyAny>> {
        if prompt.trim().is_empty() {
            return Err(PyValueError::new_err("prompt is empty: give the text to continue"));
        }
        let eos = self.lm.lock().expect("model lock").model.eos_token_ids();
        let config = generation_config(eos, Some(max_new_tokens), num_beams, repetition_penalty, length_penalty, temperature, top_k, top_p, seed)?;
        if stream {
            return Ok(AnswerStream::continuation(self.lm.clone(), prompt, config).into_pyobject(py)?.into_any().unbind());
        }
        let lm = &self.lm;
        let text = interruptible(py, |stop| -> Result<String, String> {
            let lm = lm.lock().expect("model lock");
            let ids = lm.tokenizer.encode(&prompt, true).map_err(|e| e.to_string())?;
            let output = biomedgpt_llama::generate_until(lm.model.as_ref(), biomedgpt_llama::Prompt::Ids(ids), &config, &mut |_| {}, &|| stop()).map_err(|e| e.to_string())?;
            lm.tokenizer.decode(&output.tokens).map_err(|e| e.to_string())
        })?
        .map_err(PyValueError::new_err)?;
        Ok(text.into_pyobject(py)?.into_any().unbind())
    }

    /// Float32 logits of every position of `text` (BOS in front for a LLaMA), `[T, vocab]`, as
    /// `biomedgpt inspect logits --prompt`.
    fn logits(&self, py: Python<'_>, text: String) -> PyResult<Py<PyAny>> {
        if text.trim().is_empty() {
            return Err(PyValueError::new_err("text is empty"));
        }
        let lm = &self.lm;
        let (values, rows, vocab) = py
            .detach(|| -> Result<(Vec<f32>, usize, usize), String> {
                let lm = lm.lock().expect("model lock");
                let ids = lm.tokenizer.encode(&text, true).map_err(|e| e.to_string())?;
                let model = lm.model.as_ref();
                let input = biomedgpt_llama::generation::ids_tensor(&ids, 1, &model.device());
                let logits = model.forward(biomedgpt_llama::DecoderInput::Ids(input), None, &mut model.new_cache(1));
                let values = logits.cast(burn::tensor::DType::F32).into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
                Ok((values, ids.len(), model.vocab_size()))
            })
            .map_err(PyValueError::new_err)?;
        let array = Array2::from_shape_vec((rows, vocab), values).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py).into_any().unbind())
    }
}

/// What the generating thread sends an [`AnswerStream`].
enum Piece {
    Text(String),
    Failed(String),
    Done,
}

/// The pieces of an answer as they are generated (`ask(..., stream=True)`): an iterator of str.
/// Beam search yields its answer whole at the end. Dropping it (or Ctrl-C while waiting) stops
/// the generation at the next token.
#[pyclass(module = "biomedgpt")]
struct AnswerStream {
    pieces: Mutex<Receiver<Piece>>,
    cancel: Arc<AtomicBool>,
    done: AtomicBool,
}

impl AnswerStream {
    /// Runs `work` on its own thread: it gets a sink for text pieces and the stop flag, and
    /// returns the text still to send when generation ends.
    fn spawn(work: impl FnOnce(&dyn Fn(String), &dyn Fn() -> bool) -> Result<String, String> + Send + 'static) -> Self {
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = cancel.clone();
        std::thread::spawn(move || {
            let send = |piece: String| {
                if !piece.is_empty() {
                    let _ = tx.send(Piece::Text(piece));
                }
            };
            match work(&send, &|| stop.load(Ordering::Relaxed)) {
                Ok(rest) => {
                    send(rest);
                    let _ = tx.send(Piece::Done);
                }
                Err(e) => {
                    let _ = tx.send(Piece::Failed(e));
                }
            }
        });
        AnswerStream { pieces: Mutex::new(rx), cancel, done: AtomicBool::new(false) }
    }

    /// A conversation's answer (`chat(..., stream=True)`): the serving engine's text deltas as
    /// the server streams them. Stopping drops the job's receiver, which cancels it at the
    /// engine's next step (as a client that leaves the server).
    fn chat(engine: Arc<Mutex<Engine>>, work: Work) -> Self {
        Self::spawn(move |send, stop| {
            let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let job = Job { id: "python".into(), work, molecules: Default::default(), events, embeddings: None, submitted: std::time::Instant::now() };
            let runner = std::thread::spawn(move || engine.lock().expect("model lock").run_jobs(vec![job]));
            let mut failure = None;
            // An event comes at least once per token; the channel closes when the job ends.
            while let Some(event) = rx.blocking_recv() {
                if stop() {
                    break;
                }
                match event {
                    Event::Delta { text, .. } => send(text),
                    Event::Failed(f) => failure = Some(f.message),
                    _ => {}
                }
            }
            drop(rx);
            let _ = runner.join();
            failure.map_or(Ok(String::new()), Err)
        })
    }

    /// A chat answer (`ask(..., stream=True)`), trimmed as `ask` trims it (R1's kept whole).
    fn start(engine: Arc<Mutex<Engine>>, inputs: Vec<Input>, question: String, config: GenerationConfig, length_from_config: bool) -> Self {
        Self::spawn(move |send, stop| {
            let model = lock(&engine);
            let mut chat = Chat::new(&model);
            chat.length_from_config = length_from_config;
            for input in &inputs {
                chat.add(input).map_err(|e| e.to_string())?;
            }
            chat.ask(&question).map_err(|e| e.to_string())?;
            let eos = config.eos_token_ids.clone();
            let beams = matches!(config.strategy, Strategy::Beam { .. });
            // BioMedGPT-10B's answers are trimmed; R1's text is kept whole, as its chat returns it.
            let mut tracker = TextTracker::new(model.r1.is_none(), Vec::new());
            let answer = chat
                .answer_until(
                    &config,
                    &mut |id| {
                        if !beams && !eos.contains(&id) {
                            tracker.extend(&[id]);
                            send(tracker.update(&model.tokenizer, false).0);
                        }
                    },
                    stop,
                )
                .map_err(|e| e.to_string())?;
            if beams {
                return Ok(answer.text);
            }
            Ok(tracker.update(&model.tokenizer, true).0)
        })
    }

    /// A continuation (`LanguageModel.generate(..., stream=True)`), untrimmed as `generate`.
    fn continuation(lm: Arc<Mutex<TextLm>>, prompt: String, config: GenerationConfig) -> Self {
        Self::spawn(move |send, stop| {
            let lm = lm.lock().expect("model lock");
            let ids = lm.tokenizer.encode(&prompt, true).map_err(|e| e.to_string())?;
            let eos = config.eos_token_ids.clone();
            let beams = matches!(config.strategy, Strategy::Beam { .. });
            let mut tracker = TextTracker::new(false, Vec::new());
            let output = biomedgpt_llama::generate_until(
                lm.model.as_ref(),
                biomedgpt_llama::Prompt::Ids(ids),
                &config,
                &mut |id| {
                    if !beams && !eos.contains(&id) {
                        tracker.extend(&[id]);
                        send(tracker.update(&lm.tokenizer, false).0);
                    }
                },
                stop,
            )
            .map_err(|e| e.to_string())?;
            if beams {
                return lm.tokenizer.decode(&output.tokens).map_err(|e| e.to_string());
            }
            Ok(tracker.update(&lm.tokenizer, true).0)
        })
    }
}

#[pymethods]
impl AnswerStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        if self.done.load(Ordering::Relaxed) {
            return Ok(None);
        }
        loop {
            let got = py.detach(|| self.pieces.lock().expect("stream lock").recv_timeout(Duration::from_millis(50)));
            match got {
                Ok(Piece::Text(t)) => return Ok(Some(t)),
                Ok(Piece::Done) | Err(RecvTimeoutError::Disconnected) => {
                    self.done.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                Ok(Piece::Failed(message)) => {
                    self.done.store(true, Ordering::Relaxed);
                    return Err(PyValueError::new_err(message));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        self.cancel.store(true, Ordering::Relaxed);
                        self.done.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Drop for AnswerStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The graph the GIN reads for `smiles` (RDKit, as `biomedgpt inspect featurize`): a dict of
/// int64 arrays `atoms` `[atoms, 2]` (type, chirality), `edge_index` `[2, edges]`, `edge_attr`
/// `[edges, 2]` (bond type, direction), self loops left to the GIN.
/// A reasoning model's answer (BioMedGPT-R1) split as DeepSeek's API splits it: `(thinking,
/// answer)`, the text before and after the first `</think>`, trimmed; `answer` is None when the
/// model never finished thinking.
#[pyfunction]
fn split_reasoning(text: &str) -> (String, Option<String>) {
    biomedgpt_model::split_reasoning(text)
}

#[pyfunction]
fn featurize<'py>(py: Python<'py>, smiles: &str) -> PyResult<Bound<'py, PyDict>> {
    let graph = biomedgpt_chem::featurize(smiles).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let array = |rows: usize, cols: usize, values: Vec<i64>| {
        Array2::from_shape_vec((rows, cols), values).map_err(|e| PyRuntimeError::new_err(e.to_string())).map(|a| a.into_pyarray(py))
    };
    let out = PyDict::new(py);
    let atoms = graph.atoms.len();
    out.set_item("atoms", array(atoms, 2, graph.atoms.iter().flatten().copied().collect())?)?;
    let edges = graph.edge_attr.len();
    out.set_item("edge_index", array(2, edges, graph.edge_index.concat())?)?;
    out.set_item("edge_attr", array(edges, 2, graph.edge_attr.iter().flatten().copied().collect())?)?;
    Ok(out)
}

/// BLEU-2/4, ROUGE-1/2/L and METEOR of predictions against references (the MolT5 protocol, as
/// `biomedgpt score`): word pieces from the shipped vocabulary unless `vocab` names one,
/// WordNet from `wordnet` (Debian's `wordnet-base` by default). `bleu`: "corpus" or "sentence".
#[pyfunction]
#[pyo3(signature = (predictions, references, bleu = "corpus", vocab = None, wordnet = None))]
fn score<'py>(py: Python<'py>, predictions: Vec<String>, references: Vec<String>, bleu: &str, vocab: Option<PathBuf>, wordnet: Option<PathBuf>) -> PyResult<Bound<'py, PyDict>> {
    use biomedgpt_eval::metrics::{BleuMode, DEFAULT_WORDNET_DIR, Scorer, WordNet, WordPieceTokenizer};
    if predictions.len() != references.len() {
        return Err(PyValueError::new_err(format!("{} predictions for {} references", predictions.len(), references.len())));
    }
    let mode = match bleu {
        "corpus" => BleuMode::Corpus,
        "sentence" => BleuMode::Sentence,
        other => return Err(PyValueError::new_err(format!("bleu must be \"corpus\" or \"sentence\", not {other:?}"))),
    };
    let wordnet_dir = wordnet.unwrap_or_else(|| PathBuf::from(DEFAULT_WORDNET_DIR));
    if !wordnet_dir.exists() {
        return Err(PyFileNotFoundError::new_err(format!("{}: no WordNet here (Debian: apt install wordnet-base)", wordnet_dir.display())));
    }
    let scores = py.detach(|| -> Result<_, String> {
        let tokenizer = match &vocab {
            Some(path) => WordPieceTokenizer::from_file(path).map_err(|e| e.to_string())?,
            None => WordPieceTokenizer::shipped(),
        };
        let scorer = Scorer::new(tokenizer, WordNet::open(&wordnet_dir).map_err(|e| e.to_string())?);
        scorer.score(predictions.iter().map(String::as_str).zip(references.iter().map(String::as_str)), mode).map(|(s, _)| s).map_err(|e| e.to_string())
    });
    let scores = scores.map_err(PyValueError::new_err)?;
    let out = PyDict::new(py);
    for (key, value) in [("bleu2", scores.bleu2), ("bleu4", scores.bleu4), ("rouge1", scores.rouge1), ("rouge2", scores.rouge2), ("rougeL", scores.rouge_l), ("meteor", scores.meteor)] {
        out.set_item(key, value)?;
    }
    out.set_item("n", scores.n)?;
    Ok(out)
}

#[pymodule]
fn biomedgpt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBioMedGpt>()?;
    m.add_class::<AnswerStream>()?;
    m.add_class::<PyLanguageModel>()?;
    m.add_function(wrap_pyfunction!(featurize, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(split_reasoning, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
