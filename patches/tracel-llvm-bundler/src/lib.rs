//! A stand-in for crates.io's `tracel-llvm-bundler` 23.1.0-4 that links the system LLVM, found
//! through `llvm-config`, instead of downloading a prebuilt archive at build time (README.md).
//!
//! Only what cubecl-llvm's build script calls is here: [`config::llvm_path`],
//! [`config::get_cxxflags_args`] and [`llvm_sys::link`].

pub mod config;
pub mod llvm_sys;
