//! Finding the system LLVM and asking its `llvm-config`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The LLVM majors llvm-sys 231's bindings work with (README.md: "Which LLVM").
const SUPPORTED_MAJORS: [u32; 2] = [22, 23];
/// `llvm-config` names searched on `PATH`, newest first.
const PATH_NAMES: [&str; 3] = ["llvm-config-23", "llvm-config-22", "llvm-config"];
/// Where Debian and Ubuntu install each version's `llvm-config`.
const DISTRIBUTION_PATHS: [&str; 2] = ["/usr/lib/llvm-23/bin/llvm-config", "/usr/lib/llvm-22/bin/llvm-config"];

pub type ConfigResult<T> = Result<T, ConfigError>;

#[derive(Debug)]
pub enum ConfigError {
    /// No usable `llvm-config` was found; the text says what was tried.
    NotFound(String),
    /// `llvm-config` ran and failed, or printed something unusable.
    Tool { path: PathBuf, argument: String, message: String },
    Io(std::io::Error),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotFound(tried) => write!(
                f,
                "no LLVM 22 or 23 found for the CUDA backend (tried {tried}); install it \
                 (Debian/Ubuntu: `apt-get install llvm-22-dev libzstd-dev`) or set LLVM_CONFIG_PATH \
                 to its llvm-config"
            ),
            ConfigError::Tool { path, argument, message } => {
                write!(f, "`{} --link-static {argument}`: {message}", path.display())
            }
            ConfigError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<std::io::Error> for ConfigError {
    fn from(e: std::io::Error) -> Self {
        ConfigError::Io(e)
    }
}

/// The `llvm-config` to use: README.md's order, the first that runs and reports a supported major.
pub fn llvm_config_binary() -> ConfigResult<PathBuf> {
    for var in ["LLVM_CONFIG_PATH", "LLVM_SYS_231_PREFIX"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-env-changed=PATH");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("LLVM_CONFIG_PATH") {
        candidates.push(path.into());
    }
    if let Some(prefix) = std::env::var_os("LLVM_SYS_231_PREFIX") {
        candidates.push(Path::new(&prefix).join("bin").join("llvm-config"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for name in PATH_NAMES {
            candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
        }
    }
    candidates.extend(DISTRIBUTION_PATHS.iter().map(PathBuf::from));

    let mut tried = Vec::new();
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        match run(&candidate, "--version").map(|v| major(&v)) {
            Ok(Some(m)) if SUPPORTED_MAJORS.contains(&m) => return Ok(candidate),
            Ok(_) | Err(_) => tried.push(format!("{} (not LLVM 22/23)", candidate.display())),
        }
    }
    if tried.is_empty() {
        tried.push(format!("LLVM_CONFIG_PATH, LLVM_SYS_231_PREFIX, {} on PATH, {}", PATH_NAMES.join(", "), DISTRIBUTION_PATHS.join(", ")));
    }
    Err(ConfigError::NotFound(tried.join("; ")))
}

/// The major version in `llvm-config --version`'s "22.1.8" (or "23.1.0git").
fn major(version: &str) -> Option<u32> {
    version.trim().split('.').next()?.parse().ok()
}

/// The system LLVM's install prefix: where the crates.io bundler would have unpacked its archive.
pub fn llvm_path() -> ConfigResult<PathBuf> {
    Ok(PathBuf::from(llvm_config(None, "--prefix")?))
}

/// `prefix/bin/llvm-config` when a prefix is given and has one, else [`llvm_config_binary`].
fn binary_for(prefix: Option<&OsString>) -> ConfigResult<PathBuf> {
    if let Some(prefix) = prefix {
        let path = Path::new(prefix).join("bin").join("llvm-config");
        if path.is_file() {
            return Ok(path);
        }
    }
    llvm_config_binary()
}

/// `llvm-config --link-static ARGUMENT`, trimmed.
pub fn llvm_config(prefix: Option<&OsString>, argument: &str) -> ConfigResult<String> {
    run(&binary_for(prefix)?, argument)
}

fn run(path: &Path, argument: &str) -> ConfigResult<String> {
    let tool = |message: String| ConfigError::Tool { path: path.to_owned(), argument: argument.to_owned(), message };
    let output = Command::new(path).arg("--link-static").arg(argument).output().map_err(|e| tool(e.to_string()))?;
    if !output.status.success() {
        return Err(tool(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    String::from_utf8(output.stdout).map(|s| s.trim().to_owned()).map_err(|e| tool(e.to_string()))
}

pub fn get_libdir(prefix: Option<&OsString>) -> ConfigResult<String> {
    llvm_config(prefix, "--libdir")
}

pub fn get_includedir(prefix: Option<&OsString>) -> ConfigResult<String> {
    llvm_config(prefix, "--includedir")
}

pub fn get_version(prefix: Option<&OsString>) -> ConfigResult<String> {
    llvm_config(prefix, "--version")
}

/// `llvm-config --cxxflags` as separate compiler arguments.
pub fn get_cxxflags_args(prefix: Option<&OsString>) -> ConfigResult<Vec<OsString>> {
    Ok(llvm_config(prefix, "--cxxflags")?.split_whitespace().map(OsString::from).collect())
}

#[cfg(test)]
mod tests {
    use super::major;

    #[test]
    fn majors_of_release_and_development_versions() {
        assert_eq!(major("22.1.8\n"), Some(22));
        assert_eq!(major("23.1.0git"), Some(23));
        assert_eq!(major("garbage"), None);
    }
}
