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
    start_with_timeout(connections, Duration::from_secs(60))
}

fn start_with_timeout(connections: ConnectionLimits, timeout: Duration) -> Server {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo");
    let model = BioMedGpt::load(&demo, FloatType::F32, &Device::flex()).expect("demo model");
    let options = ServeOptions {
        host: "127.0.0.1".into(),
        port: 0,
        api_key: None,
        model_name: "demo".into(),
        max_queue: 16,
        timeout,
        body_limit: 1 << 20,
        handle_signals: false,
        engine: EngineConfig { max_batch: 16, max_context: 1024, prefill_chunk: 256, encoder_cache: 4, prefix_cache_bytes: 0, batch_wait: std::time::Duration::ZERO },
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

/// A connection with a 4 KB receive buffer: an answer it does not read fills the path to it after
/// a few kilobytes, and the server's writes wait.
fn small_window_connection(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(addr) = addr else { panic!("loopback is IPv4") };
    // SAFETY: a new socket, configured and connected with plain values, then owned by TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size as *const _ as *const libc::c_void, std::mem::size_of::<libc::c_int>() as u32);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(fd, &sin as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32);
        assert_eq!(rc, 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

/// A stream whose client stops reading cannot outlive `--timeout`: its connection is closed once
/// the deadline and the grace have passed, so the answer read afterwards is cut, not finished
/// (issue 39, D7).
#[test]
fn an_unread_stream_is_closed_after_its_deadline() {
    let limits = ConnectionLimits { stream_grace: Duration::from_millis(500), ..ConnectionLimits::default() };
    let server = start_with_timeout(limits, Duration::from_secs(6));
    let mut s = small_window_connection(server.addr());
    // 16 choices of 900 tokens, each with its 20 most likely tokens: tens of megabytes of
    // events, far more than the socket buffers between the two ends hold (4 MB here).
    let body = r#"{"messages": [{"role": "user", "content": "Describe a protein."}], "max_tokens": 900, "n": 16, "logprobs": true, "top_logprobs": 20, "ignore_eos": true, "stream": true}"#;
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut received = Vec::new();
    let started = Instant::now();
    let end = s.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(end.is_ok(), "the server kept the connection open: {end:?} after {:?}", started.elapsed());
    assert!(text.starts_with("HTTP/1.1 200") && !text.contains("[DONE]"), "{} bytes, ends {:?}", text.len(), &text[text.len().saturating_sub(80)..]);
    assert!(health(server.addr()).contains("\"ok\""));
    server.shutdown().unwrap();
}
