//! Parity with HF transformers on the fixtures that `tests/fixtures/llama/make_fixtures.py` and
//! `tests/fixtures/qwen2/make_fixtures.py` recorded (`LlamaForCausalLM`, `Qwen2ForCausalLM`; see
//! each folder's `versions.json` for the exact versions).
//!
//! Tolerance: f32 on CPU, |rust - torch| <= 1e-4 + 1e-4 * |torch| per logit. Both sides compute
//! in f32 with different summation orders (gemm blocking, softmax reductions); over 2-3 layers
//! that accumulates to ~1e-6 relative, so 1e-4 leaves margin while any real bug (a wrong mask,
//! rope layout or norm) shifts logits by 1e-2 or more.

use std::path::{Path, PathBuf};

use biomedgpt_io::{FloatType, npy};
use biomedgpt_llama::{
    DecoderInput, EarlyStopping, GenerationConfig, Llama, LlamaDir, LlamaTokenizer, Prompt, StepMask, Strategy,
    generate,
};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use serde_json::Value;

const CASES: &[&str] = &[
    "mha_untied_safetensors",
    "gqa_tied_linear_bin",
    "mqa_llama3_sharded_safetensors",
    "mha_sharded_bin",
    "real_vocab_f16",
    // Qwen2: q/k/v biases (random, non-zero), rope_theta 1e6, GQA tied / MHA untied.
    "qwen2/gqa_tied_safetensors",
    "qwen2/mha_untied_sharded",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A case's folder: `qwen2/<case>`, or a name under `llama/`.
fn case_dir(name: &str) -> PathBuf {
    if name.contains('/') { fixtures().join(name) } else { fixtures().join("llama").join(name) }
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case_dir(name).join("expected.json")).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(name: &str) -> Llama {
    LlamaDir::open_model(case_dir(name), FloatType::F32, &Device::flex()).unwrap()
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    npy::read_f32(&std::fs::read(path).unwrap()).unwrap()
}

fn ids_tensor(ids: &[Vec<u32>]) -> Tensor<2, Int> {
    let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(flat, [ids.len(), ids[0].len()]), &Device::flex())
}

fn to_vec(t: Tensor<3>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// Asserts |a - b| <= atol + rtol |b| elementwise and returns the largest relative error seen.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= atol + rtol * w.abs(), "{what}: element {i}: rust {g} vs torch {w}");
        worst = worst.max(err / w.abs().max(1.0));
    }
    worst
}

#[test]
fn logits_match_transformers_for_every_position() {
    for name in CASES {
        let model = load(name);
        let exp = expected(name);
        let ids = ids_of(&exp["input_ids"]);
        let from = exp["logits_from"].as_u64().unwrap() as usize;
        let logits = model.forward(DecoderInput::Ids(ids_tensor(&[ids.clone()])), None, &mut model.new_cache(1));
        let vocab = model.config().vocab_size;
        let got = to_vec(logits);
        let (shape, want) = read_npy(&case_dir(name).join("logits.npy"));
        assert_eq!(shape, vec![ids.len() - from, vocab]);
        let worst = assert_close(name, &got[from * vocab..], &want, 1e-4, 1e-4);
        eprintln!("{name}: max relative logit error {worst:.2e}");
    }
}

#[test]
fn cached_decoding_equals_full_recomputation() {
    for name in CASES {
        let model = load(name);
        let ids = ids_of(&expected(name)["input_ids"]);
        let vocab = model.config().vocab_size;
        let full = to_vec(model.forward(DecoderInput::Ids(ids_tensor(&[ids.clone()])), None, &mut model.new_cache(1)));
        let mut cache = model.new_cache(1);
        let split = ids.len() / 2;
        let mut got = to_vec(model.forward(DecoderInput::Ids(ids_tensor(&[ids[..split].to_vec()])), None, &mut cache));
        for &id in &ids[split..] {
            got.extend(to_vec(model.forward(DecoderInput::Ids(ids_tensor(&[vec![id]])), None, &mut cache)));
        }
        assert_eq!(cache.len(), ids.len());
        assert_close(&format!("{name} cached"), &got, &full, 1e-5, 1e-5);
        assert_eq!(got.len(), ids.len() * vocab);
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    for name in CASES {
        let exp = expected(name);
        if exp.get("batch").is_none() {
            continue;
        }
        let model = load(name);
        let rows: Vec<Vec<u32>> = exp["batch"]["input_ids"].as_array().unwrap().iter().map(ids_of).collect();
        let mask: Vec<Vec<bool>> = exp["batch"]["attention_mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|m| m.as_u64() == Some(1)).collect())
            .collect();
        let step_mask = StepMask(mask.clone());
        let logits = model.forward(DecoderInput::Ids(ids_tensor(&rows)), Some(&step_mask), &mut model.new_cache(2));
        let got = to_vec(logits);
        let (_, want) = read_npy(&case_dir(name).join("batch_logits.npy"));
        let vocab = model.config().vocab_size;
        let t = rows[0].len();
        for (b, row_mask) in mask.iter().enumerate() {
            for (i, &real) in row_mask.iter().enumerate() {
                if real {
                    let at = (b * t + i) * vocab;
                    assert_close(&format!("{name} batch row {b} pos {i}"), &got[at..at + vocab], &want[at..at + vocab], 1e-4, 1e-4);
                }
            }
        }
    }
}

fn run(model: &Llama, ids: &[u32], config: GenerationConfig) -> Vec<u32> {
    generate(model, Prompt::Ids(ids.to_vec()), &config, &mut |_| {}).unwrap().tokens
}

fn greedy_config(spec: &Value) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: spec["max_new_tokens"].as_u64().unwrap() as usize,
        strategy: Strategy::Greedy,
        repetition_penalty: spec["repetition_penalty"].as_f64().unwrap() as f32,
        eos_token_ids: ids_of(&spec["eos_token_id"]),
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in CASES {
        let model = load(name);
        let exp = expected(name);
        let ids = ids_of(&exp["input_ids"]);
        for key in ["greedy", "greedy_penalty"] {
            let spec = &exp[key];
            let want = ids_of(&spec["tokens"]);
            assert_eq!(run(&model, &ids, greedy_config(spec)), want, "{name} {key}");
        }
        assert_eq!(ids_of(&exp["greedy"]["tokens"]).len(), 40);
    }
}

#[test]
fn beam_search_matches_transformers() {
    for name in CASES {
        let model = load(name);
        let exp = expected(name);
        let ids = ids_of(&exp["input_ids"]);
        for (k, spec) in exp["beam"].as_array().unwrap().iter().enumerate() {
            let config = GenerationConfig {
                max_new_tokens: spec["max_new_tokens"].as_u64().unwrap() as usize,
                strategy: Strategy::Beam {
                    num_beams: spec["num_beams"].as_u64().unwrap() as usize,
                    length_penalty: spec["length_penalty"].as_f64().unwrap() as f32,
                    early_stopping: spec["early_stopping"].as_str().unwrap().parse::<EarlyStopping>().unwrap(),
                },
                repetition_penalty: spec["repetition_penalty"].as_f64().unwrap() as f32,
                eos_token_ids: ids_of(&spec["eos_token_id"]),
            };
            assert_eq!(run(&model, &ids, config), ids_of(&spec["tokens"]), "{name} beam setting {k}");
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_top_k_1_is_greedy() {
    let name = "mha_untied_safetensors";
    let model = load(name);
    let exp = expected(name);
    let ids = ids_of(&exp["input_ids"]);
    let sample = |seed, top_k, top_p| GenerationConfig {
        max_new_tokens: 24,
        strategy: Strategy::Sample {
            temperature: 0.9,
            top_k,
            top_p,
            seed,
        },
        repetition_penalty: 1.0,
        eos_token_ids: vec![],
    };
    let a = run(&model, &ids, sample(7, Some(50), Some(0.95)));
    let b = run(&model, &ids, sample(7, Some(50), Some(0.95)));
    let c = run(&model, &ids, sample(8, Some(50), Some(0.95)));
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "different seeds should diverge within 24 tokens");
    let greedy = GenerationConfig {
        max_new_tokens: 24,
        strategy: Strategy::Greedy,
        repetition_penalty: 1.0,
        eos_token_ids: vec![],
    };
    assert_eq!(run(&model, &ids, sample(3, Some(1), None)), run(&model, &ids, greedy));
}

#[test]
fn tokenizer_matches_llama_cpp_golden_vectors() {
    let dir = fixtures().join("tokenizer");
    let tokenizer = LlamaTokenizer::from_file(dir.join("llama2/tokenizer.json"), Some(1)).unwrap();
    let inputs = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let cases: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let expected: Vec<&str> = outputs.split('\n').collect();
    assert!(expected.len() >= 40, "golden file has {} cases", expected.len());
    for (text, line) in cases.iter().zip(&expected) {
        let want: Vec<u32> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert_eq!(tokenizer.encode(text, false).unwrap(), want, "text {text:?}");
    }
    assert_eq!(tokenizer.encode("Hello world", true).unwrap(), vec![1, 15043, 3186]);
}

#[test]
fn real_vocabulary_model_round_trips_text() {
    let name = "real_vocab_f16";
    let dir = LlamaDir::open(case_dir(name), FloatType::F32, &Device::flex()).unwrap();
    let exp = expected(name);
    let ids = dir.tokenizer.encode(exp["prompt"].as_str().unwrap(), true).unwrap();
    assert_eq!(ids, ids_of(&exp["input_ids"]));
    let tokens = run(&dir.model, &ids, greedy_config(&exp["greedy"]));
    assert_eq!(dir.tokenizer.decode(&tokens).unwrap(), exp["greedy"]["text"].as_str().unwrap());
}

#[test]
fn f16_and_bf16_loading_stay_close_to_f32() {
    let name = "real_vocab_f16";
    let exp = expected(name);
    let ids = ids_of(&exp["input_ids"]);
    let (_, want) = read_npy(&case_dir(name).join("logits.npy"));
    let from = exp["logits_from"].as_u64().unwrap() as usize;
    for (ty, tol) in [(FloatType::F16, 2e-2), (FloatType::BF16, 1e-1)] {
        let model = LlamaDir::open_model(case_dir(name), ty, &Device::flex()).unwrap();
        assert_eq!(model.dtype(), ty.dtype());
        let got = to_vec(model.forward(DecoderInput::Ids(ids_tensor(&[ids.clone()])), None, &mut model.new_cache(1)));
        let vocab = model.config().vocab_size;
        assert_close(&format!("{ty}"), &got[from * vocab..], &want, tol, tol);
    }
}

/// The multiple-choice score against a log-softmax (in f64) of the logits transformers
/// recorded: same sum within 1e-3 absolute over 6 tokens (logits agree to 1e-4 each).
#[test]
fn continuation_logprob_matches_log_softmax_of_transformers_logits() {
    let name = "mha_untied_safetensors";
    let model = load(name);
    let exp = expected(name);
    let ids = ids_of(&exp["input_ids"]);
    assert_eq!(exp["logits_from"].as_u64(), Some(0));
    let (shape, want) = read_npy(&case_dir(name).join("logits.npy"));
    let vocab = shape[1];
    let split = ids.len() / 2;
    let mut reference = 0f64;
    let mut greedy = true;
    for (k, &token) in ids[split..].iter().enumerate() {
        let row: Vec<f64> = want[(split - 1 + k) * vocab..(split + k) * vocab].iter().map(|&v| v as f64).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_z = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        reference += row[token as usize] - log_z;
        greedy &= row[token as usize] == max;
    }
    let got = biomedgpt_llama::continuation_logprob(&model, &ids[..split], &ids[split..]).unwrap();
    assert!((got.logprob - reference).abs() < 1e-3, "ours {} vs transformers {reference}", got.logprob);
    assert_eq!(got.is_greedy, greedy);
    assert!(biomedgpt_llama::continuation_logprob(&model, &[], &ids).is_err());
    assert!(biomedgpt_llama::continuation_logprob(&model, &ids, &[]).is_err());
}

/// Choices scored with the context's KV cache shared equal one full pass per choice.
#[test]
fn shared_context_choice_scores_equal_separate_passes() {
    let name = "mha_untied_safetensors";
    let model = load(name);
    let ids = ids_of(&expected(name)["input_ids"]);
    let context = &ids[..5];
    let choices = vec![ids[5..6].to_vec(), ids[5..9].to_vec(), vec![7, 8, 9]];
    let shared = biomedgpt_llama::choice_logprobs(&model, context, &choices).unwrap();
    for (choice, got) in choices.iter().zip(&shared) {
        let separate = biomedgpt_llama::continuation_logprob(&model, context, choice).unwrap();
        assert!((got.logprob - separate.logprob).abs() < 1e-4, "{choice:?}: {} vs {}", got.logprob, separate.logprob);
        assert_eq!(got.is_greedy, separate.is_greedy);
    }
}
