//! SIGTERM with requests in flight (its own test binary: the signal goes to this process): the
//! streams in flight finish, new requests get 503, then the server stops by itself.

use std::time::Duration;

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_serve::{ConnectionLimits, EngineConfig, ServeOptions, Server};
use burn::tensor::Device;
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_stops() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    let model = BioMedGpt::load(&dir, FloatType::F32, &Device::flex()).unwrap();
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        model_name: "demo".into(),
        max_queue: 16,
        timeout: Duration::from_secs(120),
        body_limit: 1 << 20,
        handle_signals: true,
        engine: EngineConfig { max_batch: 8, max_context: 1024, prefill_chunk: 512, encoder_cache: 8, prefix_cache_bytes: 0, batch_wait: std::time::Duration::ZERO },
        connections: ConnectionLimits::default(),
    };
    let server = Server::start(model, options).unwrap();
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let body = json!({"prompt": "The protein", "max_tokens": 1000, "ignore_eos": true, "stream": true});
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = client.post(format!("{base}/v1/completions")).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut s = resp.bytes_stream();
        let first = tokio::time::timeout(Duration::from_secs(30), s.next()).await.expect("first event");
        assert!(first.is_some());
        streams.push(s);
    }
    // SAFETY: sends a signal to this process, whose SIGTERM handler the server installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = client.post(format!("{base}/v1/completions")).json(&json!({"prompt": "x", "max_tokens": 2})).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    let v: serde_json::Value = refused.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("shutting down"));
    for mut s in streams {
        let mut text = String::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), s.next()).await.expect("bounded") {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        assert!(text.trim_end().ends_with("data: [DONE]"), "an in-flight stream was cut: ...{}", &text[text.len().saturating_sub(200)..]);
        assert!(text.contains("\"finish_reason\":\"length\""));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(server.wait().is_ok()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true), "the server did not stop after SIGTERM");
}
