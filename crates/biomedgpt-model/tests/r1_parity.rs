//! BioMedGPT-R1 assembled vs the PyTorch reference (tests/fixtures/biomedgpt_r1/make_fixtures.py):
//! transformers Qwen2ForCausalLM + EsmModel, the GraphMVP GIN, two Linear adapters, the R1 chat's
//! prompt (no BOS, `<｜User｜>`/`<｜Assistant｜><think>`), context truncation and generation from
//! config.yaml's `text_generation`, on small random weights in the released layout
//! (config.yaml naming `./checkpoints/biomedgpt-r1/{llm,protein}`, one pytorch_model.bin).
//!
//! Tolerance: every logit within 1e-4 of its position's largest (both sides f32, summation order
//! differs; observed 1e-6 to 1e-5 at every instruction-set level, where an error relative to each
//! logit itself reached 1.2e-4 on a near-zero logit under the scalar kernels).
//! Token ids and texts must be identical.

use std::path::{Path, PathBuf};

use biomedgpt_llama::{EarlyStopping, GenerationConfig, Strategy};
use biomedgpt_model::{BioMedGpt, Chat, Input, split_reasoning};
use burn::tensor::Device;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/biomedgpt_r1")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load() -> BioMedGpt {
    BioMedGpt::load_with_dtype(&dir().join("tiny"), "auto", &Device::flex()).unwrap()
}

/// config.yaml's generation: 2 beams, repetition penalty 1.5, length penalty 1.
fn default_config(model: &BioMedGpt) -> GenerationConfig {
    let g = &model.r1.as_ref().unwrap().text_generation;
    GenerationConfig {
        max_new_tokens: 0, // the chat takes max_length - prompt positions
        strategy: Strategy::Beam { num_beams: g.num_beams, length_penalty: g.length_penalty, early_stopping: EarlyStopping::False },
        repetition_penalty: g.repetition_penalty,
        eos_token_ids: model.eos_token_ids(),
    }
}

fn add_turn(chat: &mut Chat, turn: &Value) {
    for item in turn.as_array().unwrap() {
        let (kind, payload) = (item[0].as_str().unwrap(), item[1].as_str().unwrap());
        match kind {
            "molecule" => drop(chat.add(&Input::Smiles(payload.into())).unwrap()),
            "protein" => drop(chat.add(&Input::Protein { name: "p".into(), sequence: payload.into() }).unwrap()),
            _ => chat.ask(payload).unwrap(),
        }
    }
}

#[test]
fn the_released_layout_loads_as_the_reference_builds_it() {
    let model = load();
    let r1 = model.r1.as_ref().expect("config.yaml makes it R1");
    assert_eq!(model.llm.config().architecture(), biomedgpt_llama::Architecture::Qwen2);
    assert_eq!(model.llm.dtype(), burn::tensor::DType::F32, "use_float16: false");
    let fx = expected();
    assert_eq!(model.llm.config().vocab_size as u64, fx["_settings"]["vocab_rows"].as_u64().unwrap(), "rows of the resized embeddings");
    assert_eq!(model.eos_token_ids(), vec![fx["_settings"]["eos_token_id"].as_u64().unwrap() as u32]);
    assert_eq!(r1.context_max_length, Some(260));
    assert!(model.has_molecule_encoder() && model.has_protein_encoder());
}

#[test]
fn prompts_logits_and_answers_match_the_reference() {
    let fx = expected();
    let model = load();
    for name in ["molecule", "protein", "mixed", "text_only", "two_turns"] {
        let case = &fx[name];
        let turns = case["turns"].as_array().unwrap();
        let steps = case["steps"].as_array().unwrap();
        // One chat answers with config.yaml's beam search turn after turn; the other is the same
        // conversation, answered greedily at its last turn.
        let mut chat = Chat::new(&model);
        let mut greedy_chat = Chat::new(&model);
        for (t, (turn, step)) in turns.iter().zip(steps).enumerate() {
            add_turn(&mut chat, turn);
            add_turn(&mut greedy_chat, turn);
            assert_eq!(chat.prompt.render(), step["prompt"].as_str().unwrap(), "{name} turn {t}: prompt string");
            let (embeds, segment_ids) = chat.embeds().unwrap();
            let want: Vec<Vec<u32>> = step["segment_ids"].as_array().unwrap().iter().map(ids).collect();
            assert_eq!(segment_ids, want, "{name} turn {t}: segment ids (no BOS)");
            assert_eq!(embeds.dims()[1] as u64, step["prompt_positions"].as_u64().unwrap(), "{name} turn {t}: positions");
            let kept = model.fit_to_context(embeds);
            assert_eq!(kept.dims()[1] as u64, step["kept_positions"].as_u64().unwrap(), "{name} turn {t}: positions kept");

            if t + 1 == turns.len() {
                let logits = model.prompt_logits(kept).into_data().try_to_vec::<f32>().unwrap();
                let (shape, want) = biomedgpt_io::npy::read_f32(&std::fs::read(dir().join(format!("logits_{name}.npy"))).unwrap()).unwrap();
                assert_eq!(shape[0] * shape[1], logits.len(), "{name}: logits shape");
                // Relative to each position's largest logit: summation-order error scales with
                // the summands, and this random model's logits reach the hundreds.
                let vocab = shape[1];
                let mut worst = 0f32;
                for (got_row, want_row) in logits.chunks(vocab).zip(want.chunks(vocab)) {
                    let scale = want_row.iter().fold(1f32, |m, w| m.max(w.abs()));
                    worst = got_row.iter().zip(want_row).fold(worst, |m, (g, w)| m.max((g - w).abs() / scale));
                }
                eprintln!("{name}: largest logit error {worst:.2e} of the largest logit");
                assert!(worst <= 1e-4, "{name}: largest logit error {worst:e} of the largest logit");

                let greedy = GenerationConfig { strategy: Strategy::Greedy, repetition_penalty: 1.0, ..default_config(&model) };
                let answer = greedy_chat.answer(&greedy, &mut |_| {}).unwrap();
                assert_eq!(answer.token_ids, ids(&step["greedy_ids"]), "{name}: greedy ids");
                assert_eq!(answer.text, step["greedy_text"].as_str().unwrap(), "{name}: greedy text");
            }
            let mut streamed = Vec::new();
            let answer = chat.answer(&default_config(&model), &mut |id| streamed.push(id)).unwrap();
            assert_eq!(answer.token_ids, ids(&step["default_ids"]), "{name} turn {t}: ids with config.yaml's beam search");
            assert_eq!(answer.text, step["default_text"].as_str().unwrap(), "{name} turn {t}: decoded text");
            assert_eq!(answer.prompt_tokens as u64, step["kept_positions"].as_u64().unwrap());
            if t + 1 < turns.len() {
                greedy_chat.prompt.push_answer(&answer.text);
            }
        }
    }
}

#[test]
fn an_explicit_length_replaces_max_length() {
    let model = load();
    let mut chat = Chat::new(&model);
    chat.ask("What is aspirin?").unwrap();
    chat.length_from_config = false;
    let config = GenerationConfig { max_new_tokens: 3, strategy: Strategy::Greedy, repetition_penalty: 1.0, eos_token_ids: vec![] };
    assert_eq!(chat.answer(&config, &mut |_| {}).unwrap().token_ids.len(), 3);
}

#[test]
fn answers_split_into_thinking_and_final_text() {
    // The two-turn case's first answer holds a `</think>` the random model wrote.
    let fx = expected();
    let text = fx["two_turns"]["steps"][0]["default_text"].as_str().unwrap();
    let (thinking, answer) = split_reasoning(text);
    let at = text.find("</think>").expect("the fixture's answer closes its thinking");
    assert_eq!(thinking, text[..at].trim());
    assert_eq!(answer.as_deref(), Some(text[at + "</think>".len()..].trim()));
}
