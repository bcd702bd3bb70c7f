//! A short soak (issue 39): 200 mixed requests (answered, streamed, refused, abandoned mid-stream,
//! timed out, embeddings) from 32 clients at once, then the server's memory back near its warm
//! level and its answers unchanged. Its own test binary: the resident size measured is this
//! process's, which holds the server.

use std::path::PathBuf;
use std::time::Duration;

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_serve::{ConnectionLimits, EngineConfig, ServeOptions, Server};
use burn::tensor::Device;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Resident memory in bytes, after handing freed heap pages back (glibc keeps them otherwise,
/// and the question is whether memory is still held, not how the allocator caches it).
fn resident() -> u64 {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).unwrap().parse::<u64>().unwrap() * 1024
}

fn chat(question: &str, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": [
        {"type": "molecule", "molecule": {"smiles": "CC(=O)Oc1ccccc1C(=O)O"}}, {"type": "text", "text": question}]}], "max_tokens": 12});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mixed_requests_from_32_clients_leave_the_server_as_it_was() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    let model = BioMedGpt::load(&demo, FloatType::F32, &Device::flex()).unwrap();
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        model_name: "demo".into(),
        max_queue: 256,
        timeout: Duration::from_secs(120),
        body_limit: 1 << 20,
        handle_signals: false,
        engine: EngineConfig { max_batch: 16, max_context: 1024, prefill_chunk: 512, encoder_cache: 8, prefix_cache_bytes: 0, batch_wait: std::time::Duration::ZERO },
        connections: ConnectionLimits::default(),
    };
    let server = Server::start(model, options).unwrap();
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let url = format!("{base}/v1/chat/completions");

    // Warm: every kind of request once, and the reference answer.
    let reference = client.post(&url).json(&chat("Describe this molecule.", json!({}))).send().await.unwrap().json::<Value>().await.unwrap();
    let answer = reference["choices"][0]["message"]["content"].clone();
    assert!(answer.is_string(), "{reference}");
    for _ in 0..3 {
        let _ = client.post(&url).json(&chat("What is it?", json!({"stream": true}))).send().await.unwrap().text().await;
        let _ = client.post(format!("{base}/v1/embeddings")).json(&json!({"input": [{"type": "molecule", "molecule": {"smiles": "CCO"}}]})).send().await;
    }
    // And 32 at once, as the soak sends them: prompts arriving together are prefilled in one
    // pass, whose work buffers (kept per thread between products, bounded) are larger than one
    // prompt's. Warm means the server has seen its load's shape.
    let burst: Vec<_> = (0..32)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.post(&url).json(&chat(&format!("Warm-up {i}: what is it?"), json!({}))).send().await.unwrap().status() })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap().as_u16(), 200);
    }
    let warm = resident();

    let mut clients = Vec::new();
    for c in 0..32usize {
        let (client, url, base) = (client.clone(), url.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for r in 0..(200 / 32 + usize::from(c < 200 % 32)) {
                let question = format!("Question {c}-{r}: what is it?");
                let outcome = match (c + r) % 6 {
                    0 => client.post(&url).json(&chat(&question, json!({}))).send().await.map(|r| r.status().as_u16()),
                    1 => match client.post(&url).json(&chat(&question, json!({"stream": true, "temperature": 0.7, "seed": c}))).send().await {
                        Ok(resp) => resp.text().await.map(|t| if t.trim_end().ends_with("[DONE]") { 200 } else { 0 }),
                        Err(e) => Err(e),
                    },
                    2 => client.post(&url).header("content-type", "application/json").body("{\"messages\": [").send().await.map(|r| r.status().as_u16()),
                    // Abandoned after the first event of a long stream.
                    3 => match client.post(&url).json(&chat(&question, json!({"stream": true, "max_tokens": 400, "ignore_eos": true}))).send().await {
                        Ok(resp) => {
                            let mut events = resp.bytes_stream();
                            let _ = events.next().await;
                            Ok(499)
                        }
                        Err(e) => Err(e),
                    },
                    // Given up on by the client after 50 ms.
                    4 => {
                        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(50)).build().unwrap();
                        Ok(impatient.post(&url).json(&chat(&question, json!({"max_tokens": 300, "ignore_eos": true}))).send().await.map_or(408, |r| r.status().as_u16()))
                    }
                    _ => client
                        .post(format!("{base}/v1/embeddings"))
                        .json(&json!({"input": [{"type": "molecule", "molecule": {"smiles": format!("{}O", "C".repeat(1 + (c * 7 + r) % 30))}}]}))
                        .send()
                        .await
                        .map(|r| r.status().as_u16()),
                };
                outcomes.push(((c + r) % 6, outcome.expect("the server answered")));
            }
            outcomes
        }));
    }
    let mut total = 0;
    for handle in clients {
        for (kind, status) in handle.await.unwrap() {
            let expected: &[u16] = match kind {
                2 => &[400],
                3 => &[499],
                4 => &[408, 200],
                _ => &[200],
            };
            assert!(expected.contains(&status), "request kind {kind}: status {status}");
            total += 1;
        }
    }
    assert_eq!(total, 200);

    // Everything abandoned is gone from the engine, memory is back, answers are unchanged.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let gauge = |name: &str| metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("?").to_string();
        let running = format!("{} running, {} queued", gauge("biomedgpt_running_sequences"), gauge("biomedgpt_queue_length"));
        if running == "0 running, 0 queued" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "requests still running: {running}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = client.post(&url).json(&chat("Describe this molecule.", json!({}))).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(after["choices"][0]["message"]["content"], answer, "the same greedy answer after the soak");
    let end = resident();
    assert!((end as f64) <= warm as f64 * 1.10, "resident memory {end} after the soak vs {warm} warm");
    eprintln!("resident memory: warm {:.1} MB, after 200 requests {:.1} MB", warm as f64 / 1e6, end as f64 / 1e6);
    server.shutdown().unwrap();
}
