//! Connections a hostile client opens (issue 39, D3/D4): slowloris headers, stalled uploads and
//! more connections than the cap, each against a live server on loopback with short limits.
//! Raw sockets, bounded waits; the server keeps answering `/health` throughout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use biomedgpt_io::FloatType;
use biomedgpt_model::BioMedGpt;
use biomedgpt_serve::{ConnectionLimits, EngineConfig, ServeOptions, Server};
use burn::tensor::Device;

fn start(connections: ConnectionLimits) -> Server {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    let model = BioMedGpt::load(&demo, FloatType::F32, &Device::flex()).expect("demo model");
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        model_name: "demo".into(),
        max_queue: 16,
        timeout: Duration::from_secs(60),
        body_limit: 1 << 20,
        handle_signals: false,
        engine: EngineConfig { max_batch: 4, max_context: 256, prefill_chunk: 256, encoder_cache: 4 },
        connections,
    };
    Server::start(model, options).expect("server starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The whole response (the server closes or the read times out).
fn response(mut s: TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn health(addr: SocketAddr) -> String {
    let mut s = connect(addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    response(s)
}

#[test]
fn slowloris_headers_are_cut_off_and_health_keeps_answering() {
    let server = start(ConnectionLimits { header_timeout: Duration::from_millis(800), ..ConnectionLimits::default() });
    let addr = server.addr();
    let mut slow: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    let started = Instant::now();
    // One header byte every 200 ms: by the header timeout, every connection is closed.
    let mut closed_after = None;
    'outer: for round in 0..40 {
        for s in &mut slow {
            if s.write_all(if round == 0 { b"P" } else { b"x" }).is_err() {
                closed_after = Some(started.elapsed());
                break 'outer;
            }
        }
        assert!(health(addr).contains("\"ok\""), "health during the slowloris");
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed_after = closed_after.expect("slow connections are closed");
    assert!(closed_after < Duration::from_secs(4), "closed after {closed_after:?}");
    server.shutdown().unwrap();
}

#[test]
fn a_stalled_upload_gets_408_within_the_body_timeout() {
    let server = start(ConnectionLimits { body_timeout: Duration::from_millis(700), ..ConnectionLimits::default() });
    let addr = server.addr();
    let mut s = connect(addr);
    let started = Instant::now();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{\"messages\": [").unwrap();
    let text = response(s);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(health(addr).contains("\"ok\""));
    server.shutdown().unwrap();
}

#[test]
fn connections_over_the_cap_get_503_at_once() {
    let server = start(ConnectionLimits { max_connections: 3, header_timeout: Duration::from_secs(30), ..ConnectionLimits::default() });
    let addr = server.addr();
    // Three idle connections hold the three places (each has sent part of a request).
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /he").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let busy = health(addr);
    assert!(busy.starts_with("HTTP/1.1 503") && busy.contains("too many open connections"), "{busy}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A place freed is a place served.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if health(addr).contains("\"ok\"") {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place is not served");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.shutdown().unwrap();
}
