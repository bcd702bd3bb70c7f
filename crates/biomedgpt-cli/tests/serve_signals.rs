//! `biomedgpt serve` as a process under stop signals, with a client that never reads its stream
//! (issue 39, D7/D8): one SIGTERM stops it within the request timeout plus the bounded wait for
//! open connections; a second one exits at once with 130.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

/// The server (the demo model) on a free port, and its address.
fn serve(timeout_s: &str) -> (Child, String) {
    common::serve(&["--dtype", "f32", "--timeout", timeout_s])
}

/// A connection with a 4 KB receive buffer: an answer it does not read fills the path to it
/// after a few kilobytes, and the server's writes wait.
fn small_window_connection(addr: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
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

/// A streamed completion (four choices with log-probabilities: megabytes of events) whose client
/// never reads a byte of the answer.
fn unread_stream(addr: &str) -> TcpStream {
    let body = r#"{"prompt": "The protein", "max_tokens": 900, "n": 4, "logprobs": 5, "ignore_eos": true, "stream": true}"#;
    let mut s = small_window_connection(addr);
    write!(s, "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    s
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

fn exit_within(child: &mut Child, bound: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            panic!("still running {bound:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (mut child, addr) = serve("600");
    let _stuck = unread_stream(&addr);
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-TERM");
    assert_eq!(exit_within(&mut child, Duration::from_secs(5)), Some(130));
}

#[test]
fn a_client_that_never_reads_cannot_hold_a_stopping_server() {
    // --timeout 2: the stuck request's time is up after 2 s, open connections get 10 s more.
    let (mut child, addr) = serve("2");
    let _stuck = unread_stream(&addr);
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-TERM");
    exit_within(&mut child, Duration::from_secs(25));
}

/// Out-of-range server settings are refused before the model is read, naming the flag.
#[test]
fn serve_refuses_settings_out_of_range() {
    for (args, needle) in [(vec!["--batch-wait-ms", "10001"], "--batch-wait-ms"), (vec!["--batch-wait-ms", "18446744073709551615"], "--batch-wait-ms"), (vec!["--max-batch", "0"], "--max-batch")] {
        let mut all = vec!["serve", "--model", "no-such-model-dir", "--port", "0"];
        all.extend(args.iter().copied());
        let (ok, _, stderr) = common::biomedgpt(&all);
        assert!(!ok && stderr.contains(needle), "{args:?}: {stderr}");
    }
}
