//! Dataset loaders on the shipped samples and on small files in each public format.

use std::path::{Path, PathBuf};

use biomedgpt_eval::data::{McTask, QaTask, Subject, load_multiple_choice, load_qa};

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

#[test]
fn shipped_molecule_sample_loads_and_every_smiles_featurizes_with_rdkit() {
    for (split, size) in [("train", 4000), ("valid", 300), ("test", 300)] {
        let (records, stats) = load_qa(&datasets().join("chebi"), QaTask::PubChemQa, split, false).unwrap();
        assert_eq!(records.len(), size, "{split}");
        assert_eq!(stats.multi_subject, 0);
        for r in &records {
            let Subject::Molecule { smiles } = &r.subject else { panic!("{}: not a molecule", r.source) };
            biomedgpt_chem::featurize(smiles).unwrap_or_else(|e| panic!("{}: {e}", r.source));
            assert_eq!(r.question, "Please describe this molecule.");
            assert!(!r.answer.is_empty());
        }
    }
}

#[test]
fn shipped_protein_sample_loads_with_sequences() {
    let (records, _) = load_qa(&datasets().join("swissprot"), QaTask::UniProtQa, "test", false).unwrap();
    assert!(records.len() > 200);
    let questions: std::collections::BTreeSet<&str> = records.iter().map(|r| r.question.as_str()).collect();
    assert!(questions.contains("What is the function of this protein?"), "{questions:?}");
    for r in &records {
        let Subject::Protein { sequence, .. } = &r.subject else { panic!("not a protein") };
        assert!(sequence.chars().all(|c| c.is_ascii_uppercase()), "{}", r.source);
    }
}

#[test]
fn multi_subject_records_are_counted_and_bad_records_are_errors_naming_file_and_line() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let dir = scratch.path();
    let file = dir.join("test.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"smiles": "CCO", "question": "Please describe this molecule.", "answer": "Ethanol."}"#, "\n",
            r#"{"smiles": ["CCO", "CC"], "question": "Compare.", "answer": "Both alkanes."}"#, "\n",
            "\n",
            r#"{"smiles": ["CC"], "question": "", "answer": "Ethane."}"#, "\n",
            r#"{"smiles": ["C"], "question": "Describe.", "answer": "Methane."}"#, "\n",
        ),
    )
    .unwrap();
    let err = load_qa(&dir, QaTask::PubChemQa, "test", false).unwrap_err().to_string();
    assert!(err.contains("test.jsonl:4") && err.contains("question") && err.contains("--skip-invalid"), "{err}");
    let (records, stats) = load_qa(&file, QaTask::PubChemQa, "test", true).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].source, format!("{}:5", file.display()));
    assert_eq!(stats.multi_subject, 1);
    assert_eq!(stats.invalid.len(), 1);

    // OpenBioMed's UniProtQA layout: accessions resolved through sequences.json.
    std::fs::write(
        dir.join("valid.json"),
        r#"[{"protein_accession": ["P1"], "question": "What is the function of this protein?", "answer": "Binds DNA."},
            {"protein_accession": ["P1", "P2"], "question": "Do they interact?", "answer": "Yes."},
            {"protein_accession": ["P9"], "question": "?", "answer": "?"}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("sequences.json"), r#"{"P1": "MKV", "P2": "MAA"}"#).unwrap();
    let err = load_qa(&dir, QaTask::UniProtQa, "valid", false).unwrap_err().to_string();
    assert!(err.contains("valid.json#2") && err.contains("P9"), "{err}");
    let (records, stats) = load_qa(&dir, QaTask::UniProtQa, "valid", true).unwrap();
    assert_eq!(records[0].subject, Subject::Protein { name: "P1".into(), sequence: "MKV".into() });
    assert_eq!((records.len(), stats.multi_subject, stats.invalid.len()), (1, 1, 1));
    let err = load_qa(&dir, QaTask::UniProtQa, "train", false).unwrap_err().to_string();
    assert!(err.contains("train.json or train.jsonl"), "{err}");
}

#[test]
fn multiple_choice_sets_give_lm_evaluation_harness_prompts() {
    let scratch = tempfile::tempdir().unwrap(); // removed when dropped (issue 39, D21)
    let dir = scratch.path();
    std::fs::write(
        dir.join("ori_pqal.json"),
        r#"{"123": {"QUESTION": "Do statins help?", "CONTEXTS": ["First.", "Second."], "LONG_ANSWER": "x", "final_decision": "maybe"}}"#,
    )
    .unwrap();
    let (records, _) = load_multiple_choice(&dir, McTask::PubMedQa, "test", false).unwrap();
    assert_eq!(records[0].context, "Abstract: First.\nSecond.\nQuestion: Do statins help?\nAnswer:");
    assert_eq!(records[0].choices, [" yes", " no", " maybe"]);
    assert_eq!(records[0].gold, 2);

    let medmcqa = dir.join("medmcqa.jsonl");
    std::fs::write(
        &medmcqa,
        concat!(
            r#"{"question": "Which vitamin?", "opa": "A", "opb": "B12", "opc": "C", "opd": "D", "cop": 2}"#, "\n",
            r#"{"question": "Which organ?", "opa": "Liver", "opb": "Heart", "opc": "Lung", "opd": "Skin", "cop": 4}"#, "\n",
        ),
    )
    .unwrap();
    let (records, _) = load_multiple_choice(&medmcqa, McTask::MedMcQa, "test", false).unwrap();
    assert_eq!(records[0].context, "Question: Which vitamin?\nChoices:\nA. A\nB. B12\nC. C\nD. D\nAnswer:");
    assert_eq!(records[0].choices, [" A", " B", " C", " D"]);
    assert_eq!((records[0].gold, records[1].gold), (1, 3), "cop is 1-based in the original release");

    let medqa = dir.join("medqa.jsonl");
    std::fs::write(
        &medqa,
        concat!(
            r#"{"question": "Best drug?", "answer": "Aspirin", "options": {"A": "Aspirin", "B": "Heparin", "C": "Insulin", "D": "Saline", "E": "None"}, "answer_idx": "A", "meta_info": "step1"}"#, "\n",
            r#"{"sent1": "Next step?", "ending0": "Wait", "ending1": "Operate", "ending2": "Scan", "ending3": "Discharge", "label": 2}"#, "\n",
            r#"{"question": "Broken", "options": {"A": "x"}, "answer_idx": "Z"}"#, "\n",
        ),
    )
    .unwrap();
    let err = load_multiple_choice(&medqa, McTask::MedQa, "test", false).unwrap_err().to_string();
    assert!(err.contains("medqa.jsonl:3") && err.contains("answer_idx"), "{err}");
    let (records, stats) = load_multiple_choice(&medqa, McTask::MedQa, "test", true).unwrap();
    assert_eq!(records[0].context, "Question: Best drug?\nA. Aspirin\nB. Heparin\nC. Insulin\nD. Saline\nE. None\nAnswer:");
    assert_eq!((records[0].choices.len(), records[0].gold), (5, 0));
    assert_eq!(records[1].context, "Question: Next step?\nA. Wait\nB. Operate\nC. Scan\nD. Discharge\nAnswer:");
    assert_eq!((records[1].gold, stats.invalid.len()), (2, 1));
}
