//! The HTTP side, on axum: routes, API key, limits, streaming, metrics and a graceful stop.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use biomedgpt_model::BioMedGpt;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::reasoning::ReasoningSplitter;
use crate::tools::Tools;
use crate::connections::{ConnectionCloser, ConnectionLimits};
use crate::engine::{Engine, EngineConfig, PromptLimits, Stats, model_failure};
use crate::openai::{self, ChatRequest, CompletionRequest, DetokenizeRequest, EmbeddingRequest, TokenizeRequest, error_body, parse_body, usage};
use crate::request::{EmbedInput, Event, Failure, FinishReason, Job, Params, ParsedMolecules, Part, PromptSpec, TokenLogprob, Work};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0: any free port (the address is printed and returned).
    pub port: u16,
    pub api_key: Option<String>,
    /// The id `/v1/models` lists and requests may name.
    pub model_name: String,
    /// Requests waiting for a place in the batch before new ones get 429.
    pub max_queue: usize,
    /// Longest a request may take, queueing included.
    pub timeout: Duration,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Stop on SIGTERM / Ctrl-C (the CLI; a second one exits at once); tests stop the server
    /// with [`Server::shutdown`].
    pub handle_signals: bool,
    pub engine: EngineConfig,
    /// Header and body timeouts, the connection cap, the shutdown bound.
    pub connections: ConnectionLimits,
}

struct App {
    jobs: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    stats: Arc<Stats>,
    options: ServeOptions,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    created: u64,
    /// Responses by endpoint and status.
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    limits: PromptLimits,
    /// A reasoning model (BioMedGPT-R1): chat answers split into `reasoning_content` and `content`.
    reasoning: bool,
    /// The model's tokenizer, for `/tokenize` and `/detokenize` (the engine has its own).
    tokenizer: biomedgpt_llama::LlamaTokenizer,
    /// Rows of the model's vocabulary (ids `/detokenize` accepts).
    vocab_size: usize,
}

/// Counts a request in flight until dropped (a stream holds it until its last event).
struct InFlight(Arc<App>);

impl InFlight {
    fn new(app: &Arc<App>) -> Self {
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(app.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl App {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:08x}{n:08x}", self.created as u32 ^ 0x5bd1_e995)
    }

    fn count(&self, endpoint: &'static str, status: u16) {
        *self.responses.lock().expect("responses lock").entry((endpoint, status)).or_default() += 1;
    }

    /// Reads a request's molecules with RDKit on tokio's blocking pool before the engine sees
    /// the request, so that a slow parse holds this request and not every sequence the engine
    /// is decoding (issue 39, D2). A chat too long for the context is refused first, unread.
    async fn read_molecules(&self, work: &Work, deadline: tokio::time::Instant) -> Result<ParsedMolecules, Failure> {
        let mut molecules: Vec<(String, String)> = Vec::new();
        match work {
            Work::Generate { prompt: PromptSpec::Chat(messages), .. } => {
                self.limits.check(messages)?;
                for (i, message) in messages.iter().enumerate() {
                    for (j, part) in message.parts.iter().enumerate() {
                        if let Part::Molecule(smiles) = part {
                            molecules.push((format!("messages[{i}].content[{j}]"), smiles.clone()));
                        }
                    }
                }
            }
            Work::Generate { prompt: PromptSpec::Text(_), .. } => {}
            Work::Embed(inputs) => {
                for (i, input) in inputs.iter().enumerate() {
                    if let EmbedInput::Molecule(smiles) = input {
                        molecules.push((format!("input[{i}]"), smiles.clone()));
                    }
                }
            }
        }
        // Without a molecule encoder the engine says so; nothing to read.
        if molecules.is_empty() || !self.limits.molecule_encoder {
            return Ok(ParsedMolecules::new());
        }
        let parse = tokio::task::spawn_blocking(move || {
            let mut parsed = ParsedMolecules::new();
            for (at, smiles) in molecules {
                if parsed.contains_key(&smiles) {
                    continue;
                }
                let graph = biomedgpt_chem::featurize(&smiles).map_err(|e| model_failure(&at, e.into()))?;
                parsed.insert(smiles, graph);
            }
            Ok(parsed)
        });
        match tokio::time::timeout_at(deadline, parse).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Failure::internal(format!("reading the molecules failed: {e}"))),
            Err(_) => Err(Failure { status: 504, message: format!("the request took longer than {} s", self.options.timeout.as_secs()), param: None }),
        }
    }

    fn submit(&self, id: &str, work: Work, molecules: ParsedMolecules, embeddings: Option<tokio::sync::oneshot::Sender<Result<(Vec<Vec<f32>>, usize), Failure>>>) -> Result<UnboundedReceiver<Event>, Failure> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Failure { status: 503, message: "the server is shutting down".into(), param: None });
        }
        let max_queue = self.options.max_queue;
        if self.stats.queued.fetch_add(1, Ordering::SeqCst) >= max_queue {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Failure { status: 429, message: format!("the queue is full ({max_queue} requests waiting): retry later"), param: None });
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Job { id: id.to_string(), work, molecules, events: tx, embeddings, submitted: Instant::now() };
        let sent = self.jobs.lock().expect("jobs lock").as_ref().map(|s| s.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Failure { status: 503, message: "the engine has stopped".into(), param: None });
        }
        Ok(rx)
    }

    /// What the engine's limits refuse before any work: more choices than one batch holds
    /// (issue 39, D22: `n` above `--max-batch` ran anyway).
    fn check_params(&self, params: &Params) -> Result<(), Failure> {
        let max = self.options.engine.max_batch;
        if params.n > max {
            return Err(Failure {
                status: 400,
                message: format!("n is {}, above this server's batch of {max} sequences (--max-batch)", params.n),
                param: Some("n".into()),
            });
        }
        Ok(())
    }

    fn check_model(&self, model: &Option<String>) -> Result<(), Failure> {
        match model {
            Some(m) if m != &self.options.model_name => Err(Failure {
                status: 404,
                message: format!("the model `{m}` does not exist: this server serves `{}`", self.options.model_name),
                param: Some("model".into()),
            }),
            _ => Ok(()),
        }
    }
}

fn failure_response(f: &Failure) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(error_body(f))).into_response()
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Failure> {
    body.map_err(|r| Failure { status: r.status().as_u16(), message: r.body_text(), param: None })
}

/// A running server: the engine thread and the HTTP runtime.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    engine_stopped: Option<std::sync::mpsc::Receiver<()>>,
}

impl Server {
    /// Binds the address, starts the engine on `model` (on a thread of its own, whose products
    /// use rayon's pool as the Python package's engine does: an engine holding one of the pool's
    /// threads for its whole life left a process with as many servers as pool threads unable to
    /// start another) and serves until stopped; returns at once.
    pub fn start(model: BioMedGpt, options: ServeOptions) -> std::io::Result<Server> {
        let (mut server, engine, jobs) = Self::launch(model, options)?;
        let (engine_done, engine_stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new().name("biomedgpt-engine".into()).spawn(move || {
            engine.run(jobs);
            let _ = engine_done.send(());
        })?;
        server.engine_stopped = Some(engine_stopped);
        Ok(server)
    }

    /// Binds the address, calls `on_ready` with it, and runs the engine on this thread until the
    /// server stops (the CLI: the command already runs on a thread of rayon's pool, whose other
    /// workers the kernels then use; a pool thread waiting for an engine elsewhere would leave
    /// them one worker short).
    pub fn run(model: BioMedGpt, options: ServeOptions, on_ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
        let (mut server, engine, jobs) = Self::launch(model, options)?;
        on_ready(server.addr);
        engine.run(jobs);
        server.join()
    }

    fn launch(model: BioMedGpt, options: ServeOptions) -> std::io::Result<(Server, Engine, std::sync::mpsc::Receiver<Job>)> {
        let listener = std::net::TcpListener::bind((options.host.as_str(), options.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::new());
        let reasoning = model.r1.is_some();
        let (tokenizer, vocab_size) = (model.tokenizer.clone(), model.llm.config().vocab_size);
        let engine = Engine::new(model, options.engine.clone(), stats.clone());
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
        let app = Arc::new(App {
            jobs: Mutex::new(Some(jobs_tx)),
            stats,
            options: options.clone(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            created: now_secs(),
            responses: Mutex::new(BTreeMap::new()),
            limits: engine.prompt_limits(),
            reasoning,
            tokenizer,
            vocab_size,
        });
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop_rx = stop.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        // Signal handlers are in place before `start` returns: a SIGTERM from then on drains.
        let signals = if options.handle_signals {
            let _entered = runtime.enter();
            Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?)
        } else {
            None
        };
        let thread = std::thread::Builder::new().name("biomedgpt-http".into()).spawn(move || {
            let result = runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let router = router(app.clone());
                let app_for_stop = app.clone();
                let shutdown = async move {
                    let mut signals = signals;
                    wait_for_stop(stop_rx, signals.as_mut()).await;
                    match signals.as_mut() {
                        // A second Ctrl-C or SIGTERM while draining: exit now (as uvicorn and
                        // vLLM do; issue 39, D8).
                        Some(term) => tokio::select! {
                            () = drain(&app_for_stop) => {}
                            _ = term.recv() => force_exit(),
                            _ = tokio::signal::ctrl_c() => force_exit(),
                        },
                        None => drain(&app_for_stop).await,
                    }
                };
                crate::connections::serve(listener, router, &app.options.connections, shutdown).await;
                Ok::<(), std::io::Error>(())
            });
            // No more jobs: the engine finishes what it holds and returns.
            app.jobs.lock().expect("jobs lock").take();
            result
        })?;
        Ok((Server { addr, stop, thread: Some(thread), engine_stopped: None }, engine, jobs_rx))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops as SIGTERM does: new requests get 503, those in flight finish, then it returns.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.notify_one();
        self.join()
    }

    /// Waits until the server has stopped (after a signal, with `handle_signals`).
    pub fn wait(mut self) -> std::io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> std::io::Result<()> {
        let result = match self.thread.take() {
            Some(t) => t.join().map_err(|_| std::io::Error::other("the HTTP thread panicked"))?,
            None => Ok(()),
        };
        if let Some(stopped) = self.engine_stopped.take() {
            let _ = stopped.recv();
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.notify_one();
            let _ = self.join();
        }
    }
}

fn force_exit() -> ! {
    eprintln!("second stop signal: exiting without waiting for the requests in flight");
    std::process::exit(130)
}

async fn wait_for_stop(stop: Arc<tokio::sync::Notify>, signals: Option<&mut tokio::signal::unix::Signal>) {
    match signals {
        None => stop.notified().await,
        Some(term) => tokio::select! {
            _ = stop.notified() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
    }
}

/// New requests get 503 from now on; returns when the requests in flight are done (or after
/// the request timeout).
async fn drain(app: &Arc<App>) {
    app.draining.store(true, Ordering::SeqCst);
    let in_flight = app.in_flight.load(Ordering::SeqCst);
    eprintln!("stopping: {in_flight} requests in flight finish first; new ones get 503");
    let deadline = Instant::now() + app.options.timeout;
    while app.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .layer(middleware::from_fn_with_state(app.clone(), read_body_in_time))
        .layer(middleware::from_fn_with_state(app.clone(), guard));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.options.body_limit))
        .with_state(app)
}

/// API key, body type and draining, before any work.
async fn guard(State(app): State<Arc<App>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(key) = &app.options.api_key {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Constant time: the comparison must not tell a client how many leading bytes it has right.
        let matches = given.is_some_and(|g| bool::from(subtle::ConstantTimeEq::ct_eq(g.as_bytes(), key.as_bytes())));
        if !matches {
            app.count("auth", 401);
            return failure_response(&Failure { status: 401, message: "invalid or missing API key (Authorization: Bearer KEY)".into(), param: None });
        }
    }
    // JSON bodies only: a form or text/plain POST is what a cross-site page can send without a
    // CORS preflight, so without a key it would reach the engine (issue 39, D27).
    if request.method() == axum::http::Method::POST {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            app.count("content_type", 415);
            let given = if content_type.is_empty() { "none".to_string() } else { format!("`{}`", content_type.escape_debug()) };
            return failure_response(&Failure { status: 415, message: format!("Content-Type must be application/json (got {given})"), param: None });
        }
    }
    if app.draining.load(Ordering::SeqCst) {
        app.count("draining", 503);
        return failure_response(&Failure { status: 503, message: "the server is shutting down".into(), param: None });
    }
    next.run(request).await
}

/// A route that exists, asked with another method: OpenAI's error body, not a bare 405 (D26).
async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path();
    let allowed = if path.starts_with("/v1/models") || path == "/health" || path == "/metrics" { "GET" } else { "POST" };
    let message = format!("method {} is not allowed on {path} (use {allowed})", request.method());
    let mut response = failure_response(&Failure { status: 405, message, param: None });
    response.headers_mut().insert(header::ALLOW, axum::http::HeaderValue::from_static(allowed));
    response
}

/// Reads a POST body within the body timeout (after the key and type checks): an upload that
/// stalls gets 408 instead of holding its buffer and connection (issue 39, D3).
async fn read_body_in_time(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let (limit, timeout) = (app.options.body_limit, app.options.connections.body_timeout);
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(e)) => {
            let too_large = std::iter::successors(std::error::Error::source(&e), |s| s.source()).any(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            let (status, message) = if too_large {
                (413, format!("the request body is larger than {limit} bytes (--body-limit)"))
            } else {
                (400, format!("reading the request body: {e}"))
            };
            app.count("body", status);
            failure_response(&Failure { status, message, param: None })
        }
        Err(_) => {
            app.count("body", 408);
            failure_response(&Failure {
                status: 408,
                message: format!("the request body did not arrive within {} s", timeout.as_secs_f64()),
                param: None,
            })
        }
    }
}

async fn not_found(request: Request) -> Response {
    failure_response(&Failure { status: 404, message: format!("no route {} {}", request.method(), request.uri().path()), param: None })
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "stopping"}))).into_response();
    }
    axum::Json(json!({"status": "ok"})).into_response()
}

/// The one model this server serves, as OpenAI describes a model.
fn model_object(app: &App) -> Value {
    json!({
        "id": app.options.model_name,
        "object": "model",
        "created": app.created,
        "owned_by": "biomedgpt-rs",
        "max_model_len": app.options.engine.max_context,
    })
}

async fn models(State(app): State<Arc<App>>) -> Response {
    app.count("models", 200);
    axum::Json(json!({"object": "list", "data": [model_object(&app)]})).into_response()
}

/// `GET /v1/models/{id}`: the model, or OpenAI's 404 for another id.
async fn model(State(app): State<Arc<App>>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    match app.check_model(&Some(id)) {
        Ok(()) => {
            app.count("models", 200);
            axum::Json(model_object(&app)).into_response()
        }
        Err(f) => {
            app.count("models", f.status);
            failure_response(&Failure { param: None, ..f })
        }
    }
}

/// llama-server's `POST /tokenize`: `{"tokens": [ids]}`, or `[{"id", "piece"}]` with
/// `with_pieces` (a piece that is not whole UTF-8 by itself, part of a character, is given as its
/// bytes, as llama-server does).
async fn tokenize(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = (|| -> Result<Value, Failure> {
        let req: TokenizeRequest = parse_body(&body_bytes(body)?)?;
        let ids = app.tokenizer.encode(&req.content, req.add_special).map_err(|e| Failure::bad_request(format!("content: {e}")))?;
        if !req.with_pieces {
            return Ok(json!({"tokens": ids}));
        }
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let bytes = app.tokenizer.token_bytes(id);
                match String::from_utf8(bytes) {
                    Ok(piece) => json!({"id": id, "piece": piece}),
                    Err(e) => json!({"id": id, "piece": e.into_bytes()}),
                }
            })
            .collect();
        Ok(json!({"tokens": tokens}))
    })();
    json_reply("tokenize", &app, result)
}

/// llama-server's `POST /detokenize`: `{"content": text}` of the ids, special tokens kept.
async fn detokenize(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let result = (|| -> Result<Value, Failure> {
        let req: DetokenizeRequest = parse_body(&body_bytes(body)?)?;
        let mut ids = Vec::with_capacity(req.tokens.len());
        for (i, &t) in req.tokens.iter().enumerate() {
            if t >= app.vocab_size as u64 {
                return Err(Failure { status: 400, message: format!("tokens[{i}]: {t} is outside the vocabulary of {} tokens", app.vocab_size), param: Some(format!("tokens[{i}]")) });
            }
            ids.push(t as u32);
        }
        let content = app.tokenizer.inner().decode(&ids, false).map_err(|e| Failure::bad_request(format!("tokens: {e}")))?;
        Ok(json!({"content": content}))
    })();
    json_reply("detokenize", &app, result)
}

/// A small JSON endpoint's answer: the body, or the failure's status and OpenAI error body.
fn json_reply(endpoint: &'static str, app: &App, result: Result<Value, Failure>) -> Response {
    match result {
        Ok(body) => {
            app.count(endpoint, 200);
            axum::Json(body).into_response()
        }
        Err(f) => {
            app.count(endpoint, f.status);
            failure_response(&f)
        }
    }
}

/// Prometheus text exposition (written out here: a handful of series does not need a metrics
/// framework).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let s = &app.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in lines {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let responses: Vec<(String, String)> = app
        .responses
        .lock()
        .expect("responses lock")
        .iter()
        .map(|((e, c), n)| (format!("{{endpoint=\"{e}\",status=\"{c}\"}}"), n.to_string()))
        .collect();
    metric("biomedgpt_requests_total", "counter", "Responses sent, by endpoint and HTTP status.", responses);
    let plain = |v: String| vec![(String::new(), v)];
    metric("biomedgpt_prompt_tokens_total", "counter", "Prompt positions prefilled.", plain(s.prompt_tokens.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_generation_tokens_total", "counter", "Tokens generated.", plain(s.generation_tokens.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.", plain(format!("{:.3}", s.tokens_per_second())));
    metric("biomedgpt_queue_length", "gauge", "Requests waiting for a place in the batch.", plain(s.queued.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_running_sequences", "gauge", "Sequences in the batch.", plain(s.running.load(Ordering::Relaxed).to_string()));
    let max_batch = app.options.engine.max_batch.max(1);
    metric(
        "biomedgpt_batch_occupancy",
        "gauge",
        "Sequences in the last decoding step over --max-batch.",
        plain(format!("{:.4}", s.last_batch.load(Ordering::Relaxed) as f64 / max_batch as f64)),
    );
    metric("biomedgpt_encoder_cache_hits_total", "counter", "Molecules and proteins taken from the encoder cache.", plain(s.encoder_cache_hits.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefill_passes_total", "counter", "Passes over the weights for prompts.", plain(s.prefill_passes.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefill_chunks_total", "counter", "Prompt chunks prefilled (several prompts share a pass).", plain(s.prefill_chunks.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefix_cache_hit_tokens_total", "counter", "Prompt positions restored from the prefix cache instead of prefilled.", plain(s.prefix_hit_tokens.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefix_cache_evictions_total", "counter", "Prefix-cache blocks dropped to make room.", plain(s.prefix_evictions.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefix_cache_bytes", "gauge", "Bytes of keys and values the prefix cache holds.", plain(s.prefix_bytes.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_prefix_cache_blocks", "gauge", "Blocks the prefix cache holds.", plain(s.prefix_blocks.load(Ordering::Relaxed).to_string()));
    metric("biomedgpt_encoder_runs_total", "counter", "Molecules and proteins encoded (GIN or ESM run).", plain(s.encoder_runs.load(Ordering::Relaxed).to_string()));
    {
        let h = s.ttft.lock().expect("stats lock");
        let mut lines: Vec<(String, String)> = h.bounds.iter().zip(&h.counts).map(|(b, c)| (format!("_bucket{{le=\"{b}\"}}"), c.to_string())).collect();
        lines.push(("_bucket{le=\"+Inf\"}".into(), h.count.to_string()));
        lines.push(("_sum".into(), format!("{:.6}", h.sum)));
        lines.push(("_count".into(), h.count.to_string()));
        metric("biomedgpt_time_to_first_token_seconds", "histogram", "Time from a request's arrival to its first token.", lines);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Completion => "completions",
        }
    }
}

async fn chat_completions(State(app): State<Arc<App>>, closer: Option<axum::Extension<ConnectionCloser>>, body: Result<Bytes, BytesRejection>) -> Response {
    let parsed = (|| {
        let body = body_bytes(body)?;
        let req: ChatRequest = parse_body(&body)?;
        app.check_model(&req.sampling.model)?;
        let prompt = req.prompt()?;
        let params = req.sampling.params(req.logprobs()?)?;
        app.check_params(&params)?;
        Ok::<_, Failure>((prompt, params, req.sampling.stream, req.sampling.include_usage()))
    })();
    respond(app, Kind::Chat, parsed, closer.map(|c| c.0)).await
}

async fn completions(State(app): State<Arc<App>>, closer: Option<axum::Extension<ConnectionCloser>>, body: Result<Bytes, BytesRejection>) -> Response {
    let parsed = (|| {
        let body = body_bytes(body)?;
        let req: CompletionRequest = parse_body(&body)?;
        app.check_model(&req.sampling.model)?;
        let prompt = req.prompt()?;
        let params = req.sampling.params(req.logprobs()?)?;
        if params.tools.is_some() {
            return Err(Failure { status: 400, message: "tools are for /v1/chat/completions (a text completion has no chat template)".into(), param: Some("tools".into()) });
        }
        app.check_params(&params)?;
        Ok::<_, Failure>((prompt, params, req.sampling.stream, req.sampling.include_usage()))
    })();
    respond(app, Kind::Completion, parsed, closer.map(|c| c.0)).await
}

async fn embeddings(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let _in_flight = InFlight::new(&app);
    let started = Instant::now();
    let id = app.id("embd");
    let result = async {
        let body = body_bytes(body)?;
        let req: EmbeddingRequest = parse_body(&body)?;
        app.check_model(&req.model)?;
        let work = Work::Embed(req.inputs()?);
        let deadline = tokio::time::Instant::now() + app.options.timeout;
        let molecules = app.read_molecules(&work, deadline).await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _events = app.submit(&id, work, molecules, Some(tx))?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Failure::internal("the engine dropped the request")),
            Err(_) => Err(Failure { status: 504, message: "the request timed out".into(), param: None }),
        }
    }
    .await;
    match result {
        Ok((vectors, tokens)) => {
            app.count("embeddings", 200);
            eprintln!("{id} embeddings 200 inputs={} tokens={tokens} {:.3}s", vectors.len(), started.elapsed().as_secs_f64());
            axum::Json(json!({
                "object": "list",
                "data": vectors.iter().enumerate().map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v})).collect::<Vec<_>>(),
                "model": app.options.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }))
            .into_response()
        }
        Err(f) => {
            app.count("embeddings", f.status);
            eprintln!("{id} embeddings {} {:.3}s: {}", f.status, started.elapsed().as_secs_f64(), f.message);
            failure_response(&f)
        }
    }
}

/// Submits a generation and answers with one JSON body or an SSE stream.
async fn respond(app: Arc<App>, kind: Kind, parsed: Result<(PromptSpec, Params, bool, bool), Failure>, closer: Option<ConnectionCloser>) -> Response {
    let in_flight = InFlight::new(&app);
    let started = Instant::now();
    let id = app.id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" });
    let endpoint = kind.endpoint();
    let fail = |f: Failure| {
        app.count(endpoint, f.status);
        eprintln!("{id} {endpoint} {} {:.3}s: {}", f.status, started.elapsed().as_secs_f64(), f.message);
        failure_response(&f)
    };
    let (prompt, params, stream, include_usage) = match parsed {
        Ok(p) => p,
        Err(f) => return fail(f),
    };
    let n = params.n;
    let want_logprobs = params.logprobs.is_some();
    // With functions to call, an answer is read whole before it is sent: calls or text.
    let tools = params.tools.clone();
    let deadline = tokio::time::Instant::now() + app.options.timeout;
    let work = Work::Generate { prompt, params };
    let molecules = match app.read_molecules(&work, deadline).await {
        Ok(m) => m,
        Err(f) => return fail(f),
    };
    let mut rx = match app.submit(&id, work, molecules, None) {
        Ok(rx) => rx,
        Err(f) => return fail(f),
    };
    let timed_out = || Failure { status: 504, message: format!("the request took longer than {} s", app.options.timeout.as_secs()), param: None };
    // The first event says whether the prompt was accepted: errors get their status code.
    let (prompt_tokens, cached_tokens) = match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Some(Event::Started { prompt_tokens, cached_tokens })) => (prompt_tokens, cached_tokens),
        Ok(Some(Event::Failed(f))) => return fail(f),
        Ok(Some(_)) | Ok(None) => return fail(Failure::internal("the engine stopped before the request started")),
        Err(_) => return fail(timed_out()),
    };
    let created = now_secs();
    let model = app.options.model_name.clone();
    if stream {
        let state = StreamState {
            app: app.clone(),
            _in_flight: in_flight,
            rx,
            kind,
            id: id.clone(),
            created,
            model,
            n,
            finished: 0,
            completion_tokens: 0,
            prompt_tokens,
            cached_tokens,
            include_usage,
            deadline,
            pending: VecDeque::new(),
            ended: false,
            started,
            outcome: "cancelled",
            _alive: Arc::new(()),
            splitters: (kind == Kind::Chat && app.reasoning).then(|| (0..n).map(|_| ReasoningSplitter::default()).collect()),
            held: tools.map(|t| (t, vec![(String::new(), Vec::new()); n])),
        };
        // A stream still alive well past its deadline has a client that stopped reading (its
        // events are only taken when the socket has room): close the connection (D7).
        if let Some(closer) = closer {
            let alive = Arc::downgrade(&state._alive);
            let grace = app.options.connections.stream_grace;
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline + grace).await;
                if alive.upgrade().is_some() {
                    closer.close();
                }
            });
        }
        let mut state = state;
        if kind == Kind::Chat {
            for choice in 0..n {
                let chunk = state.chunk(json!({"index": choice, "delta": {"role": "assistant", "content": ""}, "logprobs": Value::Null, "finish_reason": Value::Null}));
                state.pending.push_back(chunk);
            }
        }
        let events = futures_util::stream::unfold(state, |mut st| async move { st.next().await.map(|e| (Ok::<_, Infallible>(e), st)) });
        return Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    }

    let mut texts = vec![String::new(); n];
    let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
    let mut reasons: Vec<Option<FinishReason>> = vec![None; n];
    let mut completion_tokens = 0;
    while reasons.iter().any(Option::is_none) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Delta { choice, text, logprobs: lp })) => {
                texts[choice].push_str(&text);
                logprobs[choice].extend(lp);
            }
            Ok(Some(Event::Finished { choice, reason, completion_tokens: c, .. })) => {
                reasons[choice] = Some(reason);
                completion_tokens += c;
            }
            Ok(Some(Event::Failed(f))) => return fail(f),
            Ok(Some(Event::Started { .. })) => {}
            Ok(None) => return fail(Failure::internal("the engine stopped during the request")),
            Err(_) => return fail(timed_out()),
        }
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            let reason = reasons[i].map(FinishReason::as_str);
            match kind {
                Kind::Chat => {
                    let (message, reason) = match tool_calls(tools.as_ref(), &texts[i], reasons[i], &id, i) {
                        Some(calls) => (json!({"role": "assistant", "content": Value::Null, "tool_calls": calls}), Some("tool_calls")),
                        None => (chat_message(&texts[i], app.reasoning), reason),
                    };
                    json!({
                        "index": i,
                        "message": message,
                        "logprobs": if want_logprobs { openai::chat_logprobs(&logprobs[i]) } else { Value::Null },
                        "finish_reason": reason,
                    })
                }
                Kind::Completion => json!({
                    "index": i,
                    "text": texts[i],
                    "logprobs": if want_logprobs { openai::completion_logprobs(&logprobs[i]) } else { Value::Null },
                    "finish_reason": reason,
                }),
            }
        })
        .collect();
    app.count(endpoint, 200);
    eprintln!("{id} {endpoint} 200 prompt={prompt_tokens} cached={cached_tokens} completion={completion_tokens} {:.3}s", started.elapsed().as_secs_f64());
    let object = if kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    axum::Json(json!({
        "id": id,
        "object": object,
        "created": created,
        "model": app.options.model_name,
        "choices": choices,
        "usage": usage(prompt_tokens, cached_tokens, completion_tokens),
    }))
    .into_response()
}

/// A finished answer's `tool_calls` (OpenAI's shape, ids unique per response), when the request
/// has functions and the answer, ended by the model or its grammar, is calls.
fn tool_calls(tools: Option<&Tools>, text: &str, reason: Option<FinishReason>, id: &str, choice: usize) -> Option<Vec<Value>> {
    let calls = tools.filter(|_| reason == Some(FinishReason::Stop))?.parse(text)?;
    let id = id.rsplit('-').next().unwrap_or(id);
    Some(
        calls
            .iter()
            .enumerate()
            .map(|(k, c)| json!({"id": format!("call_{id}_{choice}_{k}"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect(),
    )
}

/// A chat choice's `message`; a reasoning model's text split as DeepSeek's API returns it
/// (`content` null when the model never finished thinking).
fn chat_message(text: &str, reasoning: bool) -> Value {
    if !reasoning {
        return json!({"role": "assistant", "content": text});
    }
    let (thinking, answer) = biomedgpt_model::split_reasoning(text);
    json!({"role": "assistant", "content": answer, "reasoning_content": thinking})
}

struct StreamState {
    app: Arc<App>,
    _in_flight: InFlight,
    rx: UnboundedReceiver<Event>,
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    n: usize,
    finished: usize,
    completion_tokens: usize,
    prompt_tokens: usize,
    cached_tokens: usize,
    include_usage: bool,
    deadline: tokio::time::Instant,
    pending: VecDeque<SseEvent>,
    ended: bool,
    started: Instant,
    outcome: &'static str,
    /// Dropped with the stream: the deadline watchdog holds a weak reference.
    _alive: Arc<()>,
    /// A reasoning model's chat: each choice's text split into `reasoning_content` and `content`.
    splitters: Option<Vec<ReasoningSplitter>>,
    /// The request's functions and each choice's text and logprobs so far: with functions to
    /// call, a choice is sent whole when it ends (calls, or text).
    held: Option<(Tools, Vec<(String, Vec<TokenLogprob>)>)>,
}

impl StreamState {
    fn chunk(&self, choice: Value) -> SseEvent {
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut body = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": [choice]});
        if self.include_usage {
            body["usage"] = Value::Null;
        }
        SseEvent::default().data(body.to_string())
    }

    fn delta(&mut self, choice: usize, text: &str, logprobs: &[TokenLogprob], reason: Option<FinishReason>) -> SseEvent {
        let reason = reason.map(FinishReason::as_str);
        let has_logprobs = !logprobs.is_empty();
        match self.kind {
            Kind::Chat => {
                let delta = match self.splitters.as_mut().and_then(|s| s.get_mut(choice)) {
                    Some(splitter) => {
                        let (reasoning, content) = if reason.is_some() { splitter.finish() } else { splitter.push(text) };
                        let mut delta = json!({});
                        if !reasoning.is_empty() {
                            delta["reasoning_content"] = reasoning.into();
                        }
                        if !content.is_empty() {
                            delta["content"] = content.into();
                        }
                        delta
                    }
                    None if reason.is_some() && text.is_empty() => json!({}),
                    None => json!({"content": text}),
                };
                self.chunk(json!({
                    "index": choice,
                    "delta": delta,
                    "logprobs": if has_logprobs { openai::chat_logprobs(logprobs) } else { Value::Null },
                    "finish_reason": reason,
                }))
            }
            Kind::Completion => self.chunk(json!({
                "index": choice,
                "text": text,
                "logprobs": if has_logprobs { openai::completion_logprobs(logprobs) } else { Value::Null },
                "finish_reason": reason,
            })),
        }
    }

    fn error(&mut self, f: Failure) -> SseEvent {
        self.ended = true;
        self.outcome = "failed";
        eprintln!("{} {} {} (stream) {:.3}s: {}", self.id, self.kind.endpoint(), f.status, self.started.elapsed().as_secs_f64(), f.message);
        self.app.count(self.kind.endpoint(), f.status);
        SseEvent::default().data(error_body(&f).to_string())
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        if self.ended {
            return None;
        }
        if self.finished == self.n {
            self.ended = true;
            self.outcome = "done";
            if self.include_usage {
                let mut body = json!({"id": self.id, "object": if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                    "created": self.created, "model": self.model, "choices": []});
                body["usage"] = usage(self.prompt_tokens, self.cached_tokens, self.completion_tokens);
                self.pending.push_back(SseEvent::default().data("[DONE]"));
                return Some(SseEvent::default().data(body.to_string()));
            }
            return Some(SseEvent::default().data("[DONE]"));
        }
        let event = loop {
            match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
                Ok(Some(Event::Delta { choice, text, logprobs })) if self.held.is_some() => {
                    let (held_text, held_logprobs) = &mut self.held.as_mut().expect("checked").1[choice];
                    held_text.push_str(&text);
                    held_logprobs.extend(logprobs);
                }
                other => break other,
            }
        };
        match event {
            Ok(Some(Event::Delta { choice, text, logprobs })) => Some(self.delta(choice, &text, &logprobs, None)),
            Ok(Some(Event::Finished { choice, reason, completion_tokens, .. })) => {
                self.finished += 1;
                self.completion_tokens += completion_tokens;
                let finished = self.held.as_mut().map(|(_, held)| std::mem::take(&mut held[choice]));
                if let Some((text, logprobs)) = finished {
                    if let Some(mut calls) = tool_calls(self.held.as_ref().map(|(tools, _)| tools), &text, Some(reason), &self.id, choice) {
                        for (k, call) in calls.iter_mut().enumerate() {
                            call["index"] = k.into();
                        }
                        return Some(self.chunk(json!({
                            "index": choice,
                            "delta": {"tool_calls": calls},
                            "logprobs": if logprobs.is_empty() { Value::Null } else { openai::chat_logprobs(&logprobs) },
                            "finish_reason": "tool_calls",
                        })));
                    }
                    if !text.is_empty() || !logprobs.is_empty() {
                        let piece = self.delta(choice, &text, &logprobs, None);
                        let end = self.delta(choice, "", &[], Some(reason));
                        self.pending.push_back(end);
                        return Some(piece);
                    }
                }
                Some(self.delta(choice, "", &[], Some(reason)))
            }
            Ok(Some(Event::Started { .. })) => Some(SseEvent::default().comment("started")),
            Ok(Some(Event::Failed(f))) => Some(self.error(f)),
            Ok(None) => Some(self.error(Failure::internal("the engine stopped during the request"))),
            Err(_) => {
                let secs = self.app.options.timeout.as_secs();
                Some(self.error(Failure { status: 504, message: format!("the request took longer than {secs} s"), param: None }))
            }
        }
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if self.outcome == "done" {
            self.app.count(self.kind.endpoint(), 200);
        }
        if self.outcome != "failed" {
            eprintln!(
                "{} {} {} (stream) prompt={} completion={} {:.3}s",
                self.id,
                self.kind.endpoint(),
                if self.outcome == "done" { "200" } else { "cancelled" },
                self.prompt_tokens,
                self.completion_tokens,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
