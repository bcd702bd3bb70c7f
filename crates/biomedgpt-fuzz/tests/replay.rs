//! Every committed corpus file and crash regression (`fuzz/corpus/<target>/*`,
//! `fuzz/regressions/<target>/*`) through its target: none may panic. What cargo-fuzz found
//! once stays fixed in CI without running a fuzzer.

use std::path::Path;

#[test]
fn every_corpus_file_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut total = 0;
    for (name, target) in biomedgpt_fuzz::TARGETS {
        let mut files = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
                files += 1;
            }
        }
        assert!(files > 0, "{name}: no corpus in {}", root.join("corpus").join(name).display());
        total += files;
    }
    eprintln!("replayed {total} inputs over {} targets", biomedgpt_fuzz::TARGETS.len());
}
