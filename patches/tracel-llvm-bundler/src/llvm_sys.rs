//! The link lines llvm-sys would emit, for the system LLVM: cubecl-llvm builds llvm-sys with
//! `no-llvm-linking` and `disable-alltargets-init` and calls [`link`] from its own build script.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ConfigResult, get_includedir, get_libdir, llvm_config, llvm_path};

/// Defines the `LLVM_Initialize*` symbols llvm-sys declares (wrappers/target.c).
const TARGET_WRAPPERS: &str = include_str!("../wrappers/target.c");

/// Emits cargo's link configuration for the system LLVM, statically linked. Call from a build script.
pub fn link() -> ConfigResult<()> {
    let prefix: OsString = llvm_path()?.into_os_string();
    let prefix = Some(&prefix);
    // The wrappers use symbols of the LLVM archives: they go first on the link line.
    compile_target_wrappers(&get_includedir(prefix)?)?;

    let libdir = get_libdir(prefix)?;
    println!("cargo:rustc-link-search=native={libdir}");
    // `--libs` lists the archives in dependency order.
    for token in llvm_config(prefix, "--libs")?.split_whitespace() {
        // `-lLLVMCore`, or a full path where llvm-config was built to print them.
        let (dir, name) = library(token)
            .ok_or_else(|| ConfigError::NotFound(format!("a library name in `llvm-config --libs` (got `{token}`)")))?;
        let dir = dir.map(|d| d.display().to_string()).unwrap_or_else(|| libdir.clone());
        if Path::new(&dir).join(format!("lib{name}.a")).is_file() {
            if dir != libdir {
                println!("cargo:rustc-link-search=native={dir}");
            }
            println!("cargo:rustc-link-lib=static={name}");
        } else {
            println!("cargo:warning=LLVM library {name} has no lib{name}.a in {dir}; left out");
        }
    }
    for token in llvm_config(prefix, "--system-libs")?.split_whitespace() {
        let (dir, name) = library(token)
            .ok_or_else(|| ConfigError::NotFound(format!("a library name in `llvm-config --system-libs` (got `{token}`)")))?;
        if let Some(dir) = dir {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    // LLVM is C++.
    println!("cargo:rustc-link-lib=dylib=stdc++");
    Ok(())
}

/// `-lz` -> `z`; `/usr/lib/x86_64-linux-gnu/libz3.so` -> (that directory, `z3`).
fn library(token: &str) -> Option<(Option<PathBuf>, String)> {
    if let Some(name) = token.strip_prefix("-l") {
        return (!name.is_empty()).then(|| (None, name.to_owned()));
    }
    let path = Path::new(token);
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_prefix("lib")?;
    let name = stem.split(".so").next().filter(|_| stem.contains(".so")).or_else(|| stem.strip_suffix(".a"))?;
    (!name.is_empty()).then(|| (path.parent().map(Path::to_owned), name.to_owned()))
}

fn compile_target_wrappers(includedir: &str) -> ConfigResult<()> {
    let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| {
        ConfigError::Io(std::io::Error::other("OUT_DIR is not set: `link` must be called from a build script"))
    })?;
    let source = PathBuf::from(out_dir).join("tracel_llvm_target_wrappers.c");
    std::fs::write(&source, TARGET_WRAPPERS)?;
    cc::Build::new().file(&source).include(includedir).opt_level(3).compile("tracel_llvm_target_wrappers");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::library;
    use std::path::PathBuf;

    #[test]
    fn system_libraries_as_flags_and_paths() {
        assert_eq!(library("-lzstd"), Some((None, "zstd".into())));
        assert_eq!(
            library("/usr/lib/x86_64-linux-gnu/libz3.so"),
            Some((Some(PathBuf::from("/usr/lib/x86_64-linux-gnu")), "z3".into()))
        );
        assert_eq!(library("/opt/lib/libxml2.so.2"), Some((Some(PathBuf::from("/opt/lib")), "xml2".into())));
        assert_eq!(library("/opt/lib/libfoo.a"), Some((Some(PathBuf::from("/opt/lib")), "foo".into())));
        assert_eq!(library("-l"), None);
        assert_eq!(library("/opt/lib/foo.so"), None);
    }
}
