//! The server end to end on loopback, on the demo model (models/demo), patterned on llama.cpp's
//! `tools/server/tests` and vLLM's `tests/entrypoints/openai`: the answers equal `ask`'s, stream
//! and non-stream agree, batching changes no answer, cancelled requests free their place, every
//! bad request gets its status and an OpenAI-shaped error body. Each test starts its own server
//! on a free port and stops it; every wait is bounded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use biomedgpt_io::FloatType;
use biomedgpt_llama::{GenerationConfig, Strategy};
use biomedgpt_model::{BioMedGpt, Chat, Input};
use biomedgpt_serve::{ConnectionLimits, EngineConfig, ServeOptions, Server};
use burn::tensor::Device;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo")
}

fn demo() -> BioMedGpt {
    BioMedGpt::load(&demo_dir(), FloatType::F32, &Device::flex()).expect("demo model")
}

fn options() -> ServeOptions {
    ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        model_name: "demo".into(),
        max_queue: 256,
        timeout: Duration::from_secs(120),
        body_limit: 1 << 20,
        handle_signals: false,
        engine: EngineConfig { max_batch: 16, max_context: 1024, prefill_chunk: 512, encoder_cache: 64, prefix_cache_bytes: 64 << 20, batch_wait: std::time::Duration::ZERO },
        connections: ConnectionLimits::default(),
    }
}

struct Running {
    server: Option<Server>,
    base: String,
    client: reqwest::Client,
}

impl Running {
    fn start(options: ServeOptions) -> Running {
        let server = Server::start(demo(), options).expect("server starts");
        let base = format!("http://{}", server.addr());
        let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        Running { server: Some(server), base, client }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.client.post(format!("{}{path}", self.base)).json(body).send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post_raw(&self, path: &str, body: &'static str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A streamed request's events (`data:` payloads, `[DONE]` included).
    async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let resp = self.client.post(format!("{}{path}", self.base)).json(body).send().await.expect("request sent");
        assert_eq!(resp.status().as_u16(), 200, "stream status");
        let mut bytes = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = bytes.next().await {
            buf.push_str(std::str::from_utf8(&chunk.expect("stream chunk")).unwrap());
        }
        buf.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string)).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().expect("server stops");
        }
    }
}

/// The chat content of a streamed answer, and its finish reason.
fn streamed_chat(events: &[String]) -> (String, String) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "the stream ends with [DONE]");
    let mut text = String::new();
    let mut reason = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(r) = c["finish_reason"].as_str() {
                reason = r.to_string();
            }
        }
    }
    (text, reason)
}

fn molecule_question(smiles: &str, question: &str) -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": [
        {"type": "molecule", "molecule": {"smiles": smiles}},
        {"type": "text", "text": question},
    ]}]})
}

const MOLECULES: [&str; 8] = ["CCO", "c1ccccc1O", "CC(=O)O", "C1CCCCC1", "N[C@@H](C)C(=O)O", "CCN(CC)CC", "O=C=O", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"];
const QUESTIONS: [&str; 4] = ["Describe this molecule.", "What is it?", "Tell me about its structure.", "Is it an acid?"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_answers_equal_ask_and_stream_equals_non_stream() {
    // `ask`'s answers, computed in process with the same code path as `biomedgpt ask`.
    let model = demo();
    let config = GenerationConfig { max_new_tokens: 255, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: model.eos_token_ids() };
    let mut expected = Vec::new();
    for (i, smiles) in MOLECULES.iter().take(4).enumerate() {
        let mut chat = Chat::new(&model);
        chat.add(&Input::Smiles(smiles.to_string())).unwrap();
        chat.ask(QUESTIONS[i % 4]).unwrap();
        expected.push(chat.answer(&config, &mut |_| {}).unwrap());
    }
    let protein = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWAAIGLNNLPGTLLVLEKLNRLSAGNWHIRT";
    let mut chat = Chat::new(&model);
    chat.add(&Input::Protein { name: "protein".into(), sequence: protein.into() }).unwrap();
    chat.ask("What is its function?").unwrap();
    let protein_answer = chat.answer(&config, &mut |_| {}).unwrap();
    drop(chat);
    drop(model);

    let server = Running::start(options());
    for (i, smiles) in MOLECULES.iter().take(4).enumerate() {
        let body = molecule_question(smiles, QUESTIONS[i % 4]);
        let (status, v) = server.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], expected[i].text.as_str(), "{smiles}: server vs ask");
        assert_eq!(v["usage"]["prompt_tokens"], expected[i].prompt_tokens);
        assert_eq!(v["usage"]["completion_tokens"], expected[i].token_ids.len());
        assert_eq!(v["object"], "chat.completion");
        let mut stream_body = body.clone();
        stream_body["stream"] = json!(true);
        let (text, reason) = streamed_chat(&server.stream("/v1/chat/completions", &stream_body).await);
        assert_eq!(text, expected[i].text, "{smiles}: stream vs non-stream");
        assert_eq!(reason, v["choices"][0]["finish_reason"].as_str().unwrap());
    }
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "protein", "protein": {"sequence": protein}}, {"type": "text", "text": "What is its function?"}]}]});
    let (status, v) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], protein_answer.text.as_str(), "protein: server vs ask");

    // Text completions: stream and non-stream agree, and usage comes last with include_usage.
    let body = json!({"prompt": "The molecule is", "max_tokens": 12, "ignore_eos": true});
    let (status, v) = server.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = server.stream("/v1/completions", &sb).await;
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    let usage: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 12);
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    let text: String = events[..n - 2]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, v["choices"][0]["text"].as_str().unwrap());

    // A stop string ends the answer before it, in both forms.
    let full = expected[0].text.clone();
    let words: Vec<&str> = full.split(' ').collect();
    if words.len() > 2 {
        let stop = words[2];
        let mut body = molecule_question(MOLECULES[0], QUESTIONS[0]);
        body["stop"] = json!([stop]);
        let (_, v) = server.post("/v1/chat/completions", &body).await;
        let cut = full[..full.find(stop).unwrap()].trim_end();
        assert_eq!(v["choices"][0]["message"]["content"], cut);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        body["stream"] = json!(true);
        assert_eq!(streamed_chat(&server.stream("/v1/chat/completions", &body).await).0, cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_streams_answer_as_they_do_alone() {
    let server = Running::start(options());
    let bodies: Vec<Value> = (0..64).map(|i| {
        let mut b = molecule_question(MOLECULES[i % 8], QUESTIONS[(i / 8) % 4]);
        b["stream"] = json!(true);
        // Every fourth one samples (seeded): the same seed gives the same text under load.
        if i % 4 == 3 {
            b["temperature"] = json!(0.9);
            b["top_p"] = json!(0.95);
            b["seed"] = json!(1000 + i);
        }
        b
    }).collect();
    // Alone, one at a time.
    let mut solo = Vec::new();
    for b in bodies.iter().take(32) {
        solo.push(streamed_chat(&server.stream("/v1/chat/completions", b).await));
    }
    // Bodies 32..64 repeat 0..32's prompts (same molecule/question/seed), all at once.
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let client = server.client.clone();
            let url = format!("{}/v1/chat/completions", server.base);
            let body = bodies[i % 32].clone();
            tokio::spawn(async move {
                let resp = client.post(url).json(&body).send().await.expect("sent");
                assert_eq!(resp.status().as_u16(), 200);
                let mut bytes = resp.bytes_stream();
                let mut buf = String::new();
                while let Some(c) = bytes.next().await {
                    buf.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
                }
                let events: Vec<String> = buf.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string)).collect();
                streamed_chat(&events)
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(120), t).await.expect("bounded").expect("task");
        assert_eq!(got, solo[i % 32], "client {i}: answer under load differs from alone");
    }
    eprintln!("64 concurrent streams in {:.2} s", started.elapsed().as_secs_f64());
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("biomedgpt_requests_total{endpoint=\"chat\",status=\"200\"} 96"), "{metrics}");
    // Eight molecules, each encoded once: every later request took the cached features.
    assert!(metrics.contains("biomedgpt_encoder_runs_total 8\n"), "{metrics}");
    // Prompts that arrived together shared passes over the weights (and answered as alone).
    let counter = |name: &str| -> u64 { metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap() };
    let (passes, chunks) = (counter("biomedgpt_prefill_passes_total"), counter("biomedgpt_prefill_chunks_total"));
    assert!(chunks >= 96 && passes < chunks, "{passes} passes for {chunks} prompt chunks");
    eprintln!("{chunks} prompt chunks in {passes} passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_free_their_places() {
    let mut opts = options();
    opts.engine.max_batch = 8;
    let server = Running::start(opts);
    let long = json!({"prompt": "The protein", "max_tokens": 1000, "ignore_eos": true, "stream": true});
    // 32 long streams: 8 decode, 24 wait. Read each one's first event, then hang up.
    let mut open = Vec::new();
    for _ in 0..32 {
        let resp = server.client.post(format!("{}/v1/completions", server.base)).json(&long).send();
        open.push(resp);
    }
    let mut streams = Vec::new();
    for r in open {
        let resp = tokio::time::timeout(Duration::from_secs(60), r).await.expect("bounded").expect("sent");
        assert_eq!(resp.status().as_u16(), 200);
        streams.push(resp.bytes_stream());
    }
    for s in streams.iter_mut().take(8) {
        let _ = tokio::time::timeout(Duration::from_secs(30), s.next()).await.expect("first event");
    }
    drop(streams);
    // A fresh request now runs at once: had the 32 kept their places it would wait for
    // 32 x 1000 tokens.
    let started = Instant::now();
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "The molecule", "max_tokens": 8, "ignore_eos": true})).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert!(took < Duration::from_secs(10), "the fresh request took {took:?}");
    // And the batch is empty again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
        if m.contains("biomedgpt_running_sequences 0\n") && m.contains("biomedgpt_queue_length 0\n") {
            break;
        }
        assert!(Instant::now() < deadline, "cancelled requests still hold places:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_an_openai_error() {
    let mut opts = options();
    opts.api_key = Some("sekret".into());
    opts.body_limit = 4096;
    opts.engine.max_context = 128;
    opts.engine.max_batch = 4;
    let server = Running::start(opts);
    let key = Some("sekret");
    let chat = "/v1/chat/completions";
    let cases: Vec<(&str, &'static str, u16, &str)> = vec![
        (chat, "{not json", 400, "invalid JSON"),
        (chat, "", 400, "empty"),
        (chat, r#"{"messages": []}"#, 400, "messages is empty"),
        (chat, r#"{"model": "demo"}"#, 400, "messages is required"),
        (chat, r#"{"messages": [{"role": "tool", "content": "x"}]}"#, 400, "must follow an assistant message with tool_calls"),
        (chat, r#"{"messages": [{"role": "user", "content": ""}]}"#, 400, "content is empty"),
        (chat, r#"{"messages": [{"role": "user", "content": []}]}"#, 400, "content is empty"),
        (chat, r#"{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#, 400, "`image_url` is not supported"),
        (chat, r#"{"messages": [{"role": "user", "content": [{"type": "molecule", "molecule": {"smiles": "C1CC"}}]}]}"#, 400, "invalid SMILES"),
        (chat, r#"{"messages": [{"role": "user", "content": [{"type": "molecule", "molecule": {}}]}]}"#, 400, "needs {\"molecule\""),
        (chat, r#"{"messages": [{"role": "user", "content": [{"type": "protein", "protein": {"sequence": "MK1TA"}}]}]}"#, 400, "messages[0].content[0]"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#, 400, "last message must be the user's"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}"#, 400, "temperature must be between 0 and 2"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}"#, 400, "top_p"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "n": 0}"#, 400, "n must be between"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "num_beams": 100000}"#, 400, "num_beams must be between"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#, 400, "`max_tokens`"),
        // Issue 39: D1 (2^64 - 1 wrapped the context check), D25 (type errors name the field),
        // D23 (stop strings bounded), D22 (n above --max-batch), D9 (NUL in a SMILES).
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 18446744073709551615, "ignore_eos": true, "stream": true}"#, 400, "maximum context length is 128 tokens"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "abc"}"#, 400, "`max_tokens`: invalid type: string"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "stream": 1}"#, 400, "`stream`"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}"#, 400, "at most 4 stop strings"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "n": 8}"#, 400, "--max-batch"),
        (chat, r#"{"messages": [{"role": "user", "content": [{"type": "molecule", "molecule": {"smiles": "CC\u0000O"}}]}]}"#, 400, "U+0000 at byte 2"),
        (chat, "[1, 2]", 400, "invalid request body"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500}"#, 400, "maximum context length is 128 tokens"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}"#, 400, "tools[0].function"),
        (chat, r#"{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4"}"#, 404, "`gpt-4` does not exist"),
        ("/v1/completions", r#"{"prompt": ""}"#, 400, "prompt is empty"),
        ("/v1/completions", r#"{"prompt": [1, 2, 3]}"#, 400, "one string"),
        ("/v1/embeddings", r#"{"input": "hello"}"#, 400, "text embeddings are not offered"),
        ("/v1/embeddings", r#"{"input": [{"type": "protein", "protein": {"sequence": "MKTAYIAK"}}], "encoding_format": "base64"}"#, 400, "encoding_format"),
        ("/v1/nothing", "{}", 404, "no route"),
    ];
    for (path, body, status, needle) in cases {
        let (got, v) = server.post_raw(path, body, key).await;
        assert_eq!(got, status, "{path} {body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{body}: no OpenAI error body: {v}"));
        assert!(message.contains(needle), "{body}: `{message}` does not say `{needle}`");
        assert!(v["error"]["type"].is_string());
    }
    // A type error names the field in `param` too (D25); a protein's location is said once (D28).
    let (_, v) = server.post_raw(chat, r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#, key).await;
    assert_eq!(v["error"]["param"], "temperature", "{v}");
    let (_, v) = server.post_raw(chat, r#"{"messages": [{"role": "user", "content": [{"type": "protein", "protein": {"sequence": "MK1TA"}}]}]}"#, key).await;
    let m = v["error"]["message"].as_str().unwrap();
    assert_eq!(m.matches("messages[0].content[0]").count(), 1, "{m}");
    // A long stop string (D23) and a long invalid SMILES quoted once, shortly (D24).
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stop": ["x".repeat(300)]});
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 256"), "{v}");
    let smiles = format!("C{}", "=".repeat(3000));
    let body = json!({"messages": [{"role": "user", "content": [{"type": "molecule", "molecule": {"smiles": smiles}}]}]});
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 600 && text.contains("3001 characters"), "{text}");
    // The wrong method gets an OpenAI error body and Allow (D26); a body that is not JSON by its
    // Content-Type gets 415, as a cross-site form post would (D27).
    let resp = server.client.get(format!("{}{chat}", server.base)).bearer_auth("sekret").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("use POST"), "{v}");
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").header("content-type", content_type)
            .body(r#"{"messages": [{"role": "user", "content": "hi"}]}"#).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 415, "{content_type}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("application/json"), "{v}");
    }
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").header("content-type", "application/json; charset=utf-8")
        .body(r#"{"messages": [{"role": "user", "content": "Describe ethanol."}], "max_tokens": 2}"#).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "a charset parameter is fine");
    // A prompt that cannot fit is refused before any encoder runs (issue 39, D5): three
    // 100-atom molecules need 300 positions of the 128.
    let runs = |text: &str| {
        text.lines().find(|l| l.starts_with("biomedgpt_encoder_runs_total")).and_then(|l| l.split_whitespace().nth(1)).map(str::to_string)
    };
    let before = runs(&server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap());
    let molecule = |n: usize| json!({"type": "molecule", "molecule": {"smiles": format!("{}O", "C".repeat(n))}});
    let body = json!({"messages": [{"role": "user", "content": [molecule(99), molecule(100), molecule(101), {"type": "text", "text": "Compare them."}]}]});
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("need at least 303"), "{m}");
    let after = runs(&server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap());
    assert_eq!(before, after, "no encoder ran");
    // The context limit names the prompt's tokens and the limit.
    let long_question = "word ".repeat(200);
    let body = json!({"messages": [{"role": "user", "content": long_question}]});
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("128 tokens") && m.contains("the prompt has"), "{m}");
    // Without the key, or with a wrong one: 401.
    for k in [None, Some("wrong")] {
        let (got, v) = server.post_raw(chat, r#"{"messages": [{"role": "user", "content": "hi"}]}"#, k).await;
        assert_eq!(got, 401, "{v}");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    // A body over the limit: 413 with an error body.
    let big = format!(r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#, "x".repeat(10_000));
    let resp = server.client.post(format!("{}{chat}", server.base)).bearer_auth("sekret").header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    // The server is still healthy after all of that, and answers.
    let (got, v) = server.post_raw(chat, r#"{"messages": [{"role": "user", "content": "Describe ethanol."}], "max_tokens": 4}"#, key).await;
    assert_eq!(got, 200, "{v}");
    // /health needs no key.
    let h = server.client.get(format!("{}/health", server.base)).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 200);
}

/// A client that gives up on a long embeddings request frees the engine at the next molecule,
/// so the next request is served promptly (issue 39, D6: 49 s of engine time after the client
/// left, and 9 other requests timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_stops_its_engine_work() {
    let server = Running::start(options());
    let molecules: Vec<Value> = (0..64).map(|i| json!({"type": "molecule", "molecule": {"smiles": format!("{}O", "C".repeat(900 + i))}})).collect();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let gave_up = impatient.post(format!("{}/v1/embeddings", server.base)).json(&json!({"input": molecules})).send().await;
    assert!(gave_up.is_err(), "64 molecules of 900 atoms take longer than 0.5 s");
    let started = Instant::now();
    let (status, v) = server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Describe ethanol."}], "max_tokens": 2})).await;
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(8), "the next request waited {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() {
    let mut opts = options();
    opts.engine.max_batch = 1;
    opts.max_queue = 2;
    let server = Running::start(opts);
    let long = json!({"prompt": "The protein", "max_tokens": 1000, "ignore_eos": true, "stream": true});
    // One decodes, two wait (the queue), the rest are refused. Requests stay open (a client
    // that hangs up leaves the queue), each sent a moment after the one before.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let client = server.client.clone();
        let url = format!("{}/v1/completions", server.base);
        let body = long.clone();
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&body).send().await.expect("sent");
            let status = r.status().as_u16();
            if status != 429 {
                // Hold the stream open (the task is aborted at the end).
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(r);
                return (status, Value::Null);
            }
            (status, r.json().await.unwrap())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused: Vec<_> = tasks.drain(3..).collect();
    for t in refused {
        let (status, v) = tokio::time::timeout(Duration::from_secs(10), t).await.expect("a refusal is immediate").unwrap();
        assert_eq!(status, 429, "{v}");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("queue is full"));
    }
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_logprobs_embeddings_and_models() {
    let server = Running::start(options());
    let mut body = molecule_question("CCO", "Describe this molecule.");
    body["n"] = json!(3);
    body["temperature"] = json!(1.0);
    body["seed"] = json!(7);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    body["max_tokens"] = json!(6);
    let (status, v) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for c in choices {
        let content = c["logprobs"]["content"].as_array().unwrap();
        assert!(!content.is_empty());
        for t in content {
            let lp = t["logprob"].as_f64().unwrap();
            assert!(lp <= 0.0);
            let top = t["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 2);
            assert!(top[0]["logprob"].as_f64().unwrap() >= lp - 1e-6, "the best alternative is at least the chosen one");
        }
    }
    // The same seed gives the same choices again.
    let (_, again) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(again["choices"], v["choices"]);

    let (status, v) = server
        .post("/v1/embeddings", &json!({"input": [{"type": "molecule", "molecule": {"smiles": "CCO"}}, {"type": "protein", "protein": {"sequence": "MKTAYIAKQR"}}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // GIN width 300 (the demo's GIN keeps GraphMVP's width) and the demo ESM's width.
    assert!(data[0]["embedding"].as_array().unwrap().len() > 10);
    assert!(data.iter().all(|d| d["embedding"].as_array().unwrap().iter().all(|x| x.as_f64().unwrap().is_finite())));
    // Molecule embedding = the mean of the GIN's per-atom features.
    let model = demo();
    let (_, features, _) = model.features(&Input::Smiles("CCO".into())).unwrap();
    let [rows, width] = features.dims();
    let f = features.into_data().try_to_vec::<f32>().unwrap();
    for j in 0..width {
        let mean: f32 = (0..rows).map(|r| f[r * width + j]).sum::<f32>() / rows as f32;
        let got = data[0]["embedding"][j].as_f64().unwrap() as f32;
        assert!((got - mean).abs() <= 1e-5 * mean.abs().max(1.0), "feature {j}: {got} vs {mean}");
    }

    let m: Value = server.client.get(format!("{}/v1/models", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["data"][0]["id"], "demo");
}

/// The HTTP layer reads molecules with RDKit before the engine sees them (issue 39, D2): the
/// engine encodes the graph it is handed and does not parse the SMILES again. Here the graph of
/// ethanol comes under a key RDKit would refuse; the answer and embedding are ethanol's.
#[test]
fn the_engine_encodes_the_graphs_it_is_handed() {
    use biomedgpt_serve::request::{EmbedInput, Event, Job, Message, Params, Part, PromptSpec, Role, Work};
    let mut engine = biomedgpt_serve::Engine::new(demo(), options().engine, std::sync::Arc::new(biomedgpt_serve::Stats::new()));
    let params = Params { max_tokens: Some(8), ..Params::default() };
    let ethanol = biomedgpt_chem::featurize("CCO").unwrap();
    let job = |smiles: &str, parsed: bool, embed: bool| {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, embeddings) = tokio::sync::oneshot::channel();
        let work = if embed {
            Work::Embed(vec![EmbedInput::Molecule(smiles.into())])
        } else {
            let message = Message { role: Role::User, parts: vec![Part::Molecule(smiles.into()), Part::Text("What is it?".into())] };
            Work::Generate { prompt: PromptSpec::Chat(vec![message]), params: params.clone() }
        };
        let molecules = if parsed { [(smiles.to_string(), ethanol.clone())].into() } else { Default::default() };
        let job = Job { id: smiles.into(), work, molecules, events, embeddings: embed.then_some(tx), submitted: Instant::now() };
        (job, rx, embeddings)
    };
    let answer = |mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>| -> Result<Vec<u32>, String> {
        while let Ok(event) = rx.try_recv() {
            match event {
                Event::Finished { tokens, .. } => return Ok(tokens),
                Event::Failed(f) => return Err(f.message),
                _ => {}
            }
        }
        Err("no answer".into())
    };
    let (plain, plain_rx, _) = job("CCO", false, false);
    let (handed, handed_rx, _) = job("not a SMILES", true, false);
    // (Another string: the handed graph's features are now cached under the first.)
    let (unparsed, unparsed_rx, _) = job("not a SMILES either", false, false);
    engine.run_jobs(vec![plain, handed, unparsed]);
    let expected = answer(plain_rx).expect("ethanol answers");
    assert_eq!(answer(handed_rx), Ok(expected), "the handed graph is encoded");
    let refused = answer(unparsed_rx).expect_err("without a graph the engine reads the SMILES itself");
    assert!(refused.contains("invalid SMILES"), "{refused}");

    let (plain, _, plain_vec) = job("CCO", false, true);
    let (handed, _, handed_vec) = job("not a SMILES", true, true);
    engine.run_jobs(vec![plain, handed]);
    type Embedded = Result<(Vec<Vec<f32>>, usize), biomedgpt_serve::request::Failure>;
    let vector = |rx: tokio::sync::oneshot::Receiver<Embedded>| rx.blocking_recv().expect("embedding sent").expect("embedding").0;
    assert_eq!(vector(handed_vec), vector(plain_vec));
}

/// llama-server's `/tokenize` and `/detokenize`, and `GET /v1/models/{id}`: ids as the model's
/// tokenizer gives them (BOS with `add_special`), pieces that add up to the text (a byte-fallback
/// piece as its bytes), text back from ids; out-of-vocabulary ids and other models refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_detokenize_and_one_model() {
    let server = Running::start(options());
    let tokenizer = demo().tokenizer;
    let text = "Aspirin is 2-acetoxybenzoic acid, \u{3b2}.";
    let (status, body) = server.post("/tokenize", &json!({"content": text})).await;
    assert_eq!(status, 200, "{body}");
    let ids = tokenizer.encode(text, false).unwrap();
    assert_eq!(body["tokens"], json!(ids));
    let (_, body) = server.post("/tokenize", &json!({"content": text, "add_special": true})).await;
    assert_eq!(body["tokens"][0], 1, "BOS first: {body}");
    let (_, body) = server.post("/tokenize", &json!({"content": text, "with_pieces": true})).await;
    let mut bytes = Vec::new();
    for t in body["tokens"].as_array().unwrap() {
        match &t["piece"] {
            Value::String(s) => bytes.extend(s.as_bytes()),
            Value::Array(b) => bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8)),
            other => panic!("piece {other}"),
        }
    }
    // SentencePiece marks spaces with the first piece's "▁"; the pieces' text is the text.
    assert_eq!(String::from_utf8(bytes).unwrap().trim_start(), text);
    let (status, body) = server.post("/detokenize", &json!({"tokens": ids})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"], text);
    let (status, body) = server.post("/detokenize", &json!({"tokens": [5, 99999999]})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("tokens[1]"), "{body}");
    let (status, _) = server.post("/tokenize", &json!({"text": "wrong field"})).await;
    assert_eq!(status, 400);

    let model: Value = server.client.get(format!("{}/v1/models/demo", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!((model["id"].as_str(), model["object"].as_str()), (Some("demo"), Some("model")));
    let resp = server.client.get(format!("{}/v1/models/other", server.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let error: Value = resp.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("`other` does not exist"), "{error}");
}

/// `response_format`: answers held to JSON while they are decoded (llguidance). With schemas of
/// enums, nested objects, arrays and bounded numbers, the demo model's greedy and sampled answers
/// parse and keep every constraint; streamed equals whole; what cannot be honoured is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_format_holds_answers_to_json_schemas() {
    let server = Running::start(options());
    let schemas = [
        json!({"type": "object", "properties": {"kind": {"enum": ["acid", "base", "salt"]}}, "required": ["kind"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "props": {"type": "object", "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["count"], "additionalProperties": false}},
            "required": ["name", "tags", "props"], "additionalProperties": false}),
    ];
    let check = |schema_index: usize, v: &Value| match schema_index {
        0 => assert!(["acid", "base", "salt"].contains(&v["kind"].as_str().unwrap()) && v.as_object().unwrap().len() == 1, "{v}"),
        _ => {
            assert!(v["name"].as_str().unwrap().chars().count() <= 12, "{v}");
            let tags = v["tags"].as_array().unwrap();
            assert!(tags.len() <= 3 && tags.iter().all(|t| t.as_str().unwrap().chars().count() <= 8), "{v}");
            let count = v["props"]["count"].as_i64().unwrap();
            assert!((1..=9).contains(&count), "{v}");
        }
    };
    for (k, schema) in schemas.iter().enumerate() {
        for sampling in [json!({}), json!({"temperature": 0.9, "seed": 3})] {
            let mut body = molecule_question("CCO", "Describe it as JSON.");
            body["max_tokens"] = json!(300);
            body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}});
            for (key, value) in sampling.as_object().unwrap() {
                body[key] = value.clone();
            }
            let (status, answer) = server.post("/v1/chat/completions", &body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
            let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("schema {k}: {content:?}: {e}"));
            check(k, &parsed);
            body["stream"] = json!(true);
            let (streamed, _) = streamed_chat(&server.stream("/v1/chat/completions", &body).await);
            assert_eq!(streamed, content, "schema {k}: streamed == whole");
        }
    }
    // Any JSON object, and a text completion too.
    let mut body = molecule_question("CCO", "JSON please.");
    body["response_format"] = json!({"type": "json_object"});
    body["max_tokens"] = json!(300);
    let (status, answer) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).is_ok_and(|v| v.is_object()), "{content:?}");
    let (status, answer) = server
        .post("/v1/completions", &json!({"prompt": "The molecule as JSON:", "max_tokens": 300, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schemas[0]}}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    check(0, &serde_json::from_str(answer["choices"][0]["text"].as_str().unwrap().trim()).unwrap());

    // What cannot be honoured: named.
    for (format, extra, needle) in [
        (json!({"type": "xml"}), json!({}), "`xml` is not supported"),
        (json!({"type": "json_schema", "json_schema": {"schema": 5}}), json!({}), "must be a JSON schema"),
        (json!({"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}), json!({}), "response_format"),
        (json!({"type": "json_object"}), json!({"num_beams": 2}), "beam search"),
    ] {
        let mut body = molecule_question("CCO", "x");
        body["response_format"] = format.clone();
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = server.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{format}: {answer}");
        assert_eq!(answer["error"]["param"], "response_format", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(needle), "{format}: {answer}");
    }
}

/// Prefix caching changes no answer (issue 42): the same requests, in the same order, to a
/// server with a prefix cache and 16-position prefill chunks (restored positions and chunks end
/// in other places than whole prompts, down to a last chunk of one position) and to one with
/// neither, give identical choices, logprobs
/// included, greedy and seeded sampling, chat (molecules, several turns) and text completions;
/// the cached server reports the positions it restored in `usage` and `/metrics`. A third
/// server with the cache and whole-prompt chunks answers the same too (three engines in one
/// process: each runs on a thread of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_cache_changes_no_answer() {
    let mut cached_small_chunks = options();
    cached_small_chunks.engine.prefill_chunk = 16;
    let mut uncached = options();
    uncached.engine.prefix_cache_bytes = 0;
    let servers = [Running::start(cached_small_chunks), Running::start(uncached), Running::start(options())];

    let with = |mut body: Value, extra: &Value| {
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let greedy = json!({"max_tokens": 12, "logprobs": true, "top_logprobs": 3});
    let sampled = json!({"max_tokens": 12, "temperature": 0.9, "seed": 11, "n": 2, "logprobs": true, "top_logprobs": 2});
    let ibuprofen = "CC(C)Cc1ccc(cc1)C(C)C(=O)O";
    let first = with(molecule_question(ibuprofen, "Describe this molecule."), &greedy);
    let long_text = "The molecule ibuprofen is a nonsteroidal anti-inflammatory drug used to treat pain, fever and inflammation; it works by inhibiting cyclooxygenase";
    let mut requests: Vec<(&str, Value)> = vec![
        ("/v1/chat/completions", first.clone()),
        ("/v1/chat/completions", Value::Null), // the second turn, made from the first answer
        ("/v1/chat/completions", with(molecule_question(ibuprofen, "Is it an acid?"), &greedy)),
        ("/v1/chat/completions", with(molecule_question("CCO", "What is it?"), &sampled)),
        ("/v1/chat/completions", first.clone()),
        ("/v1/chat/completions", with(molecule_question(ibuprofen, "Describe this molecule."), &sampled)),
        ("/v1/completions", json!({"prompt": long_text, "max_tokens": 10, "logprobs": 2})),
        ("/v1/completions", json!({"prompt": format!("{long_text} enzymes, which make prostaglandins"), "max_tokens": 10, "logprobs": 2})),
    ];

    let mut answers: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    let mut cached: Vec<Vec<u64>> = vec![Vec::new(); servers.len()];
    let mut prompt_tokens: Vec<u64> = Vec::new();
    for i in 0..requests.len() {
        if i == 1 {
            let reply = answers[0][0][0]["message"]["content"].as_str().unwrap().to_string();
            let mut turns = first.clone();
            turns["messages"].as_array_mut().unwrap().extend([json!({"role": "assistant", "content": reply}), json!({"role": "user", "content": "And its weight?"})]);
            requests[1].1 = turns;
        }
        let (path, body) = &requests[i];
        for (s, server) in servers.iter().enumerate() {
            let (status, v) = server.post(path, body).await;
            assert_eq!(status, 200, "request {i} on server {s}: {v}");
            answers[s].push(v["choices"].clone());
            cached[s].push(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap());
            if s == 0 {
                prompt_tokens.push(v["usage"]["prompt_tokens"].as_u64().unwrap());
            }
        }
    }
    for s in [0, 2] {
        for (i, (a, b)) in answers[s].iter().zip(&answers[1]).enumerate() {
            assert_eq!(a, b, "answer {i} of server {s} differs from the server without the cache");
        }
    }
    assert!(answers[0][0][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(cached[1].iter().all(|&c| c == 0), "no cache, nothing restored: {:?}", cached[1]);
    let c = &cached[0];
    assert_eq!(c[0], 0, "the first prompt finds nothing");
    // The second turn, the same molecule with another question, another molecule (the system
    // prompt), the same prompt again, the longer completion: each restores what came before,
    // to the position (not only whole 16-position blocks): the same prompt again all but its
    // last position, the longer completion all of the shorter one's positions.
    for i in [1, 2, 3, 4, 5, 7] {
        assert!(c[i] > 0, "request {i}: cached {c:?}");
    }
    assert_eq!(c[4], prompt_tokens[4] - 1, "the same prompt again: {c:?} of {prompt_tokens:?}");
    assert!(c[7] >= prompt_tokens[6] - 1, "the longer completion: {c:?} of {prompt_tokens:?}");
    let metrics = servers[0].client.get(format!("{}/metrics", servers[0].base)).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok())).unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(value("biomedgpt_prefix_cache_hit_tokens_total") as u64, c.iter().sum::<u64>());
    assert!(value("biomedgpt_prefix_cache_bytes") > 0.0 && value("biomedgpt_prefix_cache_bytes") <= (64 << 20) as f64);
    assert_eq!(value("biomedgpt_prefix_cache_evictions_total"), 0.0);
}

/// Requests that reach an idle engine together are prefilled in one pass (`batch_wait`): three
/// completions sent at once to a server that waits 300 ms after the first make one prefill pass
/// of three chunks, and their answers are those each gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_is_prefilled_in_one_pass() {
    let mut waits = options();
    waits.engine.batch_wait = Duration::from_millis(300);
    let server = Running::start(waits);
    let body = |text: &str| json!({"prompt": text, "max_tokens": 4, "temperature": 0});
    let texts = ["Aspirin is", "Caffeine is a stimulant that", "Proteins fold into"];
    let bodies: Vec<Value> = texts.iter().map(|t| body(t)).collect();
    let (a, b, c) = tokio::join!(server.post("/v1/completions", &bodies[0]), server.post("/v1/completions", &bodies[1]), server.post("/v1/completions", &bodies[2]));
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok())).unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!((value("biomedgpt_prefill_passes_total"), value("biomedgpt_prefill_chunks_total")), (1.0, 3.0), "{metrics}");
    let alone = Running::start(options());
    for ((status, together), text) in [a, b, c].into_iter().zip(texts) {
        assert_eq!(status, 200, "{together}");
        let (_, single) = alone.post("/v1/completions", &body(text)).await;
        assert_eq!(together["choices"], single["choices"], "{text}");
    }
}

/// Function calling (issue 42): with `tool_choice` `required` or a named function the answer is
/// a call of that function whose arguments follow its parameters' schema, returned as
/// `message.tool_calls` with `finish_reason: "tool_calls"`, streamed or not; `auto` answers a
/// call or text; an earlier turn's calls and a tool's result go back into the prompt; bad tool
/// fields are 400s naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_called_with_arguments_that_follow_their_schemas() {
    let server = Running::start(options());
    let weight = json!({"type": "function", "function": {"name": "molecular_weight", "description": "The molecular weight of a molecule in g/mol",
        "parameters": {"type": "object", "properties": {"smiles": {"type": "string", "maxLength": 60}, "isotopes": {"type": "boolean"}}, "required": ["smiles", "isotopes"], "additionalProperties": false}}});
    // Strict schemas, as OpenAI's strict mode asks (bounded strings: the random demo model
    // would otherwise write until max_tokens).
    let search = json!({"type": "function", "function": {"name": "search_literature", "parameters": {"type": "object",
        "properties": {"query": {"type": "string", "maxLength": 40}, "limit": {"type": "integer", "minimum": 1, "maximum": 20}}, "required": ["query", "limit"], "additionalProperties": false}}});
    let question = |choice: Value, extra: Value| {
        let mut body = molecule_question("CCO", "What is its molecular weight?");
        body["tools"] = json!([weight, search]);
        body["tool_choice"] = choice;
        body["max_tokens"] = json!(200);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let check_call = |call: &Value, name: &str| -> Value {
        assert_eq!(call["type"], "function", "{call}");
        assert_eq!(call["function"]["name"], name, "{call}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
        let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        arguments
    };
    for (choice, name) in [(json!("required"), None), (json!({"type": "function", "function": {"name": "search_literature"}}), Some("search_literature"))] {
        for extra in [json!({}), json!({"temperature": 1.0, "seed": 3})] {
            let (status, v) = server.post("/v1/chat/completions", &question(choice.clone(), extra.clone())).await;
            assert_eq!(status, 200, "{v}");
            let c = &v["choices"][0];
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            assert!(c["message"]["content"].is_null(), "{v}");
            let calls = c["message"]["tool_calls"].as_array().unwrap();
            assert!(!calls.is_empty());
            for call in calls {
                let called = call["function"]["name"].as_str().unwrap();
                assert!(name.is_none_or(|n| n == called), "{choice}: {called}");
                let arguments = check_call(call, called);
                if called == "molecular_weight" {
                    assert!(arguments["smiles"].is_string() && arguments["isotopes"].is_boolean(), "{arguments}");
                } else {
                    assert!(arguments["query"].as_str().is_some_and(|q| q.chars().count() <= 40), "{arguments}");
                    assert!(arguments["limit"].as_i64().is_some_and(|l| (1..=20).contains(&l)), "{arguments}");
                }
            }
            // Streamed: the same calls in one delta, with their indices.
            let mut body = question(choice.clone(), extra);
            body["stream"] = json!(true);
            let events = server.stream("/v1/chat/completions", &body).await;
            let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
            let last = chunks.iter().rev().find(|c| c["choices"][0]["finish_reason"].is_string()).unwrap();
            assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{last}");
            let streamed = last["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
            assert_eq!(streamed.len(), calls.len());
            for (k, (s, c)) in streamed.iter().zip(calls).enumerate() {
                assert_eq!(s["index"], k);
                assert_eq!(s["function"], c["function"], "streamed == whole");
            }
        }
    }
    // auto: a call of a listed function, or text (the random demo model decides).
    let (status, v) = server.post("/v1/chat/completions", &question(json!("auto"), json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let c = &v["choices"][0];
    match c["finish_reason"].as_str().unwrap() {
        "tool_calls" => {
            let call = &c["message"]["tool_calls"][0];
            check_call(call, call["function"]["name"].as_str().unwrap());
        }
        _ => assert!(!c["message"]["content"].as_str().unwrap().trim_start().starts_with('<'), "{v}"),
    }
    // "none": no functions described, an ordinary answer; the next turn with the call and its
    // result in the history.
    let (status, v) = server.post("/v1/chat/completions", &question(json!("none"), json!({"max_tokens": 8}))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string() && v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
    let mut follow = question(json!("auto"), json!({"max_tokens": 8}));
    follow["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "molecular_weight", "arguments": "{\"smiles\": \"CCO\", \"isotopes\": false}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "46.07"}),
    ]);
    let (status, v) = server.post("/v1/chat/completions", &follow).await;
    assert_eq!(status, 200, "{v}");
    let (_, before) = server.post("/v1/chat/completions", &question(json!("auto"), json!({"max_tokens": 8}))).await;
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > before["usage"]["prompt_tokens"].as_u64().unwrap() + 20, "the call and the result are in the prompt");

    // Bad tool fields.
    let cases: Vec<(Value, &str)> = vec![
        (question(json!({"type": "function", "function": {"name": "other"}}), json!({})), "tool_choice"),
        (question(json!("sometimes"), json!({})), "tool_choice"),
        (question(json!("auto"), json!({"tools": [{"type": "function", "function": {"name": "has space"}}]})), "tools[0].function.name"),
        (question(json!("auto"), json!({"tools": [{"type": "retrieval"}]})), "tools[0].type"),
        (question(json!("auto"), json!({"tools": [weight, weight]})), "tools[1].function.name"),
        (question(json!("auto"), json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "string"}}]})), "tools[0].function.parameters"),
        (question(json!("auto"), json!({"response_format": {"type": "json_object"}})), "tools"),
        (question(json!("auto"), json!({"num_beams": 2})), "tools"),
        // OpenAI's limits: names of at most 64 characters, at most 128 functions; a choice
        // needs functions to choose from.
        (question(json!("auto"), json!({"tools": [{"type": "function", "function": {"name": "n".repeat(65)}}]})), "tools[0].function.name"),
        (question(json!("auto"), json!({"tools": (0..129).map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}})).collect::<Vec<_>>()})), "tools"),
        (question(json!("required"), json!({"tools": []})), "tool_choice"),
    ];
    for (body, param) in cases {
        let (status, v) = server.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{param}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    // The limits themselves are allowed; an empty list without a choice is no tools at all.
    let (status, v) = server.post("/v1/chat/completions", &question(json!("auto"), json!({"max_tokens": 2, "tools": [{"type": "function", "function": {"name": "n".repeat(64)}}]}))).await;
    assert_eq!(status, 200, "{v}");
    let mut no_tools = question(json!("auto"), json!({"max_tokens": 2, "tools": []}));
    no_tools.as_object_mut().unwrap().remove("tool_choice");
    let (status, v) = server.post("/v1/chat/completions", &no_tools).await;
    assert!(status == 200 && v["choices"][0]["message"]["content"].is_string(), "{v}");
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "Ethanol", "tools": [weight]})).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("tools")), "{v}");
    let mut bad_tool_message = follow.clone();
    bad_tool_message["messages"][2]["content"] = json!(46.07);
    let (status, v) = server.post("/v1/chat/completions", &bad_tool_message).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("messages[2].content")), "{v}");
    let mut lone_result = question(json!("auto"), json!({}));
    lone_result["messages"].as_array_mut().unwrap().push(json!({"role": "tool", "content": "46.07"}));
    let (status, v) = server.post("/v1/chat/completions", &lone_result).await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("messages[1].role")), "{v}");
}
