//! Builds the small C++ shim over RDKit (Debian: `librdkit-dev libboost-serialization-dev`).
//! RDKIT_INCLUDE_DIR / RDKIT_LIB_DIR point elsewhere for other installs.

use std::path::PathBuf;

fn main() {
    let include = PathBuf::from(std::env::var("RDKIT_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include/rdkit".into()));
    let lib = std::env::var("RDKIT_LIB_DIR").unwrap_or_else(|_| "/usr/lib".into());
    println!("cargo:rerun-if-env-changed=RDKIT_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=RDKIT_LIB_DIR");
    if !include.join("GraphMol/SmilesParse/SmilesParse.h").is_file() {
        panic!(
            "RDKit headers not found in {}: install them (Debian/Ubuntu: `apt-get install librdkit-dev \
             libboost-serialization-dev`) or set RDKIT_INCLUDE_DIR and RDKIT_LIB_DIR",
            include.display()
        );
    }
    cxx_build::bridge("src/rdkit.rs")
        .file("src/rdkit_shim.cc")
        .include(&include)
        .std("c++17")
        .flag_if_supported("-w")
        .compile("biomedgpt_rdkit_shim");
    println!("cargo:rustc-link-search=native={lib}");
    for name in ["RDKitFingerprints", "RDKitSubgraphs", "RDKitSmilesParse", "RDKitGraphMol", "RDKitDataStructs", "RDKitRDGeneral"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    println!("cargo:rerun-if-changed=src/rdkit_shim.cc");
    println!("cargo:rerun-if-changed=src/rdkit_shim.h");
}
