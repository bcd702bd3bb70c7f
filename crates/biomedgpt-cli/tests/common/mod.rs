//! What several of the CLI's test binaries share (each binary uses some of it).
#![allow(dead_code)]

use std::path::Path;

/// A directory for one test, removed with everything in it when dropped (issue 39, D21).
pub struct TestDir(tempfile::TempDir);

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

/// `biomedgpt-cli-<test binary>-<name>-XXXX` under the temporary directory.
pub fn temp_dir(name: &str) -> TestDir {
    TestDir(tempfile::Builder::new().prefix(&format!("biomedgpt-cli-{}-{name}-", env!("CARGO_CRATE_NAME"))).tempdir().unwrap())
}

/// The repository root (fixtures and the demo model are found from there).
pub fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the CLI in the repository root: success, stdout, stderr.
pub fn biomedgpt(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_biomedgpt")).args(args).current_dir(root()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `biomedgpt serve ARGS --port 0` in the repository root, and the address its first line says
/// it listens on.
pub fn serve(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_biomedgpt"))
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).expect("listening line").to_string();
    (child, addr)
}
