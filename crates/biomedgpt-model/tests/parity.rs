//! BioMedGPT assembled vs the PyTorch reference (tests/fixtures/biomedgpt/make_fixtures.py):
//! transformers LlamaForCausalLM + EsmModel, the GraphMVP GIN, two Linear adapters, the reference
//! chat's prompt and splicing, on small random weights in the fused `.pth` layout with the real
//! prefixes, a 32001-row vocabulary and LLaMA-2's tokenizer.
//!
//! Tolerance: logits agree within 1e-4 x (1 + |expected|) in f32 (observed errors are ~1e-6;
//! the LLM weights are f16 values run in f32 on both sides). Token ids must be identical.

use std::path::{Path, PathBuf};

use biomedgpt_io::FloatType;
use biomedgpt_llama::{EarlyStopping, GenerationConfig, Strategy};
use biomedgpt_model::{BioMedGpt, Chat, Input};
use burn::tensor::Device;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    biomedgpt_io::npy::read_f32(&std::fs::read(dir().join(name)).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn build_chat<'m>(model: &'m BioMedGpt, case: &serde_json::Value) -> Chat<'m> {
    let mut chat = Chat::new(model);
    for turn in case["turns"].as_array().unwrap() {
        for item in turn.as_array().unwrap() {
            let (kind, payload) = (item[0].as_str().unwrap(), item[1].as_str().unwrap());
            match kind {
                "molecule" => drop(chat.add(&Input::Smiles(payload.into())).unwrap()),
                "protein" => drop(chat.add(&Input::Protein { name: "p".into(), sequence: payload.into() }).unwrap()),
                _ => chat.ask(payload).unwrap(),
            }
        }
    }
    chat
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        let err = (g - w).abs() / (1.0 + w.abs());
        worst = worst.max(err);
    }
    assert!(worst <= 1e-4, "{what}: worst relative error {worst:e}");
}

#[test]
fn prompt_tokens_logits_and_generation_match_the_reference() {
    let fx = expected();
    let model = BioMedGpt::load(&dir().join("tiny"), FloatType::F32, &Device::flex()).unwrap();
    assert!(model.has_molecule_encoder() && model.has_protein_encoder());
    assert_eq!(model.llm.config().vocab_size, 32001);
    let columns: Vec<usize> = fx["_settings"]["logit_columns"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let max_new = fx["_settings"]["max_new_tokens"].as_u64().unwrap() as usize;
    for name in ["text_only", "protein", "molecule", "mixed"] {
        let case = &fx[name];
        let mut chat = build_chat(&model, case);
        assert_eq!(chat.prompt.render(), case["prompt"].as_str().unwrap(), "{name}: prompt string");
        let (embeds, segment_ids) = chat.embeds().unwrap();
        let want_segments: Vec<Vec<u32>> = case["segment_ids"].as_array().unwrap().iter().map(ids).collect();
        assert_eq!(segment_ids, want_segments, "{name}: segment token ids");
        assert_eq!(embeds.dims()[1], case["prompt_tokens"].as_u64().unwrap() as usize, "{name}: prompt positions");

        let logits = model.prompt_logits(embeds).into_data().try_to_vec::<f32>().unwrap();
        let vocab = 32001;
        let (shape, want) = npy(&format!("logits_{name}.npy"));
        let t = shape[0];
        let got: Vec<f32> = (0..t).flat_map(|p| columns.iter().map(move |&c| (p, c))).map(|(p, c)| logits[p * vocab + c]).collect();
        assert_close(&got, &want, &format!("{name}: logits at sampled columns"));
        let (_, want_last) = npy(&format!("last_logits_{name}.npy"));
        assert_close(&logits[(t - 1) * vocab..], &want_last, &format!("{name}: last position logits"));

        let greedy = GenerationConfig { max_new_tokens: max_new, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: model.eos_token_ids() };
        let mut streamed = Vec::new();
        let answer = chat.answer(&greedy, &mut |id| streamed.push(id)).unwrap();
        assert_eq!(answer.token_ids, ids(&case["greedy_ids"]), "{name}: greedy ids");
        assert_eq!(streamed, answer.token_ids, "{name}: streamed ids");

        let mut chat = build_chat(&model, case);
        let beam = GenerationConfig {
            max_new_tokens: max_new,
            strategy: Strategy::Beam { num_beams: 5, length_penalty: 1.0, early_stopping: EarlyStopping::False },
            repetition_penalty: 1.5,
            eos_token_ids: model.eos_token_ids(),
        };
        let answer = chat.answer(&beam, &mut |_| {}).unwrap();
        assert_eq!(answer.token_ids, ids(&case["beam_ids"]), "{name}: beam ids (5 beams, penalty 1.5)");
    }
}

#[test]
fn answers_are_recorded_for_the_next_turn() {
    let model = BioMedGpt::load(&dir().join("tiny"), FloatType::F32, &Device::flex()).unwrap();
    let mut chat = Chat::new(&model);
    chat.add(&Input::Smiles("CCO".into())).unwrap();
    chat.ask("What is it?").unwrap();
    let config = GenerationConfig { max_new_tokens: 4, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: model.eos_token_ids() };
    let first = chat.answer(&config, &mut |_| {}).unwrap();
    chat.ask("And its boiling point?").unwrap();
    let rendered = chat.prompt.render();
    assert!(rendered.contains(&format!("Assistant: {} ### Human: And its boiling point? ### Assistant: ", first.text)), "{rendered}");
    assert!(chat.ask("  ").is_err());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model = BioMedGpt::load(&dir().join("tiny"), FloatType::F32, &Device::flex()).unwrap();
    let mut chat = Chat::new(&model);
    let err = chat.add(&Input::Smiles("C1CC".into())).unwrap_err().to_string();
    assert!(err.contains("C1CC") && err.contains("unclosed ring"), "{err}");
    let err = chat.add(&Input::Protein { name: "query".into(), sequence: "MKT1A".into() }).unwrap_err().to_string();
    assert!(err.contains("query") && err.contains('1'), "{err}");
    assert!(chat.prompt.messages.is_empty(), "failed inputs leave no message behind");
    let err = match BioMedGpt::load(&dir(), FloatType::F32, &Device::flex()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the fixture root is not a model directory"),
    };
    assert!(err.contains("not a model directory"), "{err}");
}

/// A chat that keeps its earlier turns' keys and values (`Chat::prefix`, `biomedgpt chat`'s
/// default) answers every turn with the same tokens as one that prefills the whole history
/// again: greedy, seeded sampling and beam search, a molecule and a protein in the prompt.
#[test]
fn a_chat_with_a_prefix_cache_answers_as_one_without() {
    use biomedgpt_llama::prefix_cache::{DEFAULT_BLOCK, PrefixCache};
    let model = BioMedGpt::load(&dir().join("tiny"), FloatType::F32, &Device::flex()).unwrap();
    let eos = model.eos_token_ids();
    let strategies = [
        Strategy::Greedy,
        Strategy::Sample { temperature: 0.8, top_k: Some(20), top_p: Some(0.9), seed: 5 },
        Strategy::Beam { num_beams: 3, length_penalty: 1.0, early_stopping: EarlyStopping::False },
    ];
    for strategy in strategies {
        let config = GenerationConfig { max_new_tokens: 6, strategy: strategy.clone(), repetition_penalty: 1.2, eos_token_ids: eos.clone() };
        let mut with = Chat::new(&model);
        with.prefix = Some(PrefixCache::new(DEFAULT_BLOCK, 16 << 20));
        let mut without = Chat::new(&model);
        for chat in [&mut with, &mut without] {
            chat.add(&Input::Smiles("CC(=O)Oc1ccccc1C(=O)O".into())).unwrap();
            chat.add(&Input::Protein { name: "p".into(), sequence: "MKTAYIAKQRQISFVKSHFSRQ".into() }).unwrap();
        }
        for (turn, question) in ["What is it?", "Does it bind the protein?", "Why?"].into_iter().enumerate() {
            with.ask(question).unwrap();
            without.ask(question).unwrap();
            let a = with.answer(&config, &mut |_| {}).unwrap();
            let b = without.answer(&config, &mut |_| {}).unwrap();
            assert_eq!(a.token_ids, b.token_ids, "{strategy:?}, turn {turn}");
            assert_eq!(a.text, b.text);
        }
        let hits = with.prefix.as_ref().unwrap().stats().hit_tokens;
        assert!(hits >= 2 * DEFAULT_BLOCK as u64, "{strategy:?}: the later turns restore the earlier ones ({hits} positions)");
    }
}
