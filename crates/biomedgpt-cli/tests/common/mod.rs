//! What several of the CLI's test binaries share.

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
