"""Seeds of the fuzz corpora (fuzz/corpus/<target>/), small valid inputs the fuzzer mutates.
Versions: tests/fixtures/requirements.txt (torch 2.15, safetensors 0.8, gguf 0.19, numpy 2.4).
Run from the repository root: /path/to/venv/bin/python fuzz/make_corpus.py"""
import io
import json
import os
import zipfile

import numpy as np
import torch
from safetensors.numpy import save as st_save
import gguf

root = "fuzz/corpus"


def put(target, name, data):
    os.makedirs(f"{root}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{root}/{target}/{name}", "wb") as f:
        f.write(data)


# PyTorch checkpoints: a state dict, nested dicts, shared storages, f16 and bf16, an offset view.
states = {
    "plain": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)},
    "nested": {"model": {"layer.0.weight": torch.ones(2, 2, dtype=torch.float16)}, "step": 3, "name": "x"},
    "shared": (lambda t: {"a": t, "b": t[1:], "c": t.to(torch.bfloat16)})(torch.arange(4, dtype=torch.float32)),
}
for name, state in states.items():
    buf = io.BytesIO()
    torch.save(state, buf)
    put("torch_zip", f"{name}.pth", buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        put("pickle", f"{name}.pkl", z.read(pkl))

put("safetensors", "two.safetensors", st_save({"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), dtype=np.float16)}, {"format": "pt"}))
put("safetensors", "empty.safetensors", st_save({}))

# A tiny LLaMA GGUF: metadata, a SentencePiece vocabulary, one f32 and one Q8_0 tensor.
w = gguf.GGUFWriter("fuzz/corpus-tmp.gguf", "llama")
w.add_block_count(1)
w.add_context_length(64)
w.add_embedding_length(32)
w.add_feed_forward_length(64)
w.add_head_count(2)
w.add_head_count_kv(1)
w.add_layer_norm_rms_eps(1e-6)
w.add_tokenizer_model("llama")
tokens = ["<unk>", "<s>", "</s>", "\u2581a", "\u2581b", "<0x41>", "ab", "\u2581"]
w.add_token_list(tokens)
w.add_token_scores([0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -1.5, -4.0])
w.add_token_types([2, 3, 3, 1, 1, 6, 1, 1])
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
q = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
w.add_tensor("output.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
with open("fuzz/corpus-tmp.gguf", "rb") as f:
    put("gguf", "tiny_llama.gguf", f.read())
os.remove("fuzz/corpus-tmp.gguf")

for i, rec in enumerate(json.load(open("datasets/chebi/test.json"))[:12]):
    put("smiles", f"chebi{i}.smi", rec["smiles"][0])
for i, s in enumerate(["C[C@H](N)C(=O)O", "c1ccccc1", "[Na+].[Cl-]", "C1CC1C(F)(F)F", "F/C=C/F", "[2H]C([2H])([2H])O", "C#N", "*C"]):
    put("smiles", f"hand{i}.smi", s)

put("fasta", "two.fasta", ">sp|P1|A protein one\nMKTAYIAKQRQISFVKSHFSRQ\nLEERLGLIEV\n>b\nMKT*\n")
put("fasta", "lower.fasta", ">x\nmktayiak\n\n>y desc\nXBZUO\n")

configs = [
    {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100},
    {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
     "eos_token_id": [2, 3], "tie_word_embeddings": True, "torch_dtype": "bfloat16"},
]
for i, c in enumerate(configs):
    put("llama_config", f"config{i}.json", json.dumps(c))
put("biomedgpt_json", "demo.json", json.dumps({"max_protein_tokens": 256, "notice": "demo"}))
put("biomedgpt_json", "lora.json", json.dumps({"llm": "llm", "weights": "w.pth", "lora": {"weights": "l.safetensors", "rank": 8, "alpha": 16}}))

put("tokenizer", "text.txt", "Aspirin (acetylsalicylic acid) inhibits COX-1 and COX-2.")
put("tokenizer", "unicode.txt", "\u03b2-lactam 5\u2032-UTR \U0001f9ec \u00e9t\u00e9 \u4e2d\u6587")

chat = {"model": "demo", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [
    {"type": "molecule", "molecule": {"smiles": "CCO"}}, {"type": "text", "text": "What is it?"}]}],
    "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 1, "n": 2, "stop": ["###"], "max_tokens": 16,
    "stream": True, "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2,
    "frequency_penalty": 0.5, "presence_penalty": -0.5, "repetition_penalty": 1.2}
put("chat_request", "full.json", json.dumps(chat))
put("chat_request", "protein.json", json.dumps({"messages": [{"role": "user", "content": [
    {"type": "protein", "protein": {"sequence": "MKTAYIAK"}}, {"type": "text", "text": "Function?"}]}], "num_beams": 3}))
put("chat_request", "turns.json", json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]}))
put("chat_request", "tools.json", json.dumps({"messages": [
    {"role": "user", "content": [{"type": "molecule", "molecule": {"smiles": "CCO"}}, {"type": "text", "text": "Weight?"}]},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "molecular_weight", "arguments": "{\"smiles\": \"CCO\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "46.07"}],
    "tools": [{"type": "function", "function": {"name": "molecular_weight", "description": "g/mol", "parameters": {"type": "object", "properties": {"smiles": {"type": "string"}}, "required": ["smiles"]}}},
              {"type": "function", "function": {"name": "search"}}],
    "tool_choice": {"type": "function", "function": {"name": "search"}}}))
put("completion_request", "plain.json", json.dumps({"prompt": "The molecule", "max_tokens": 8, "logprobs": 2, "ignore_eos": True}))
put("completion_request", "list.json", json.dumps({"prompt": ["x"], "stop": "y", "echo": False}))
put("embedding_request", "both.json", json.dumps({"input": [{"type": "molecule", "molecule": {"smiles": "CCO"}},
    {"type": "protein", "protein": {"sequence": "MKT"}}], "encoding_format": "float"}))

lines = [json.dumps(r) for r in json.load(open("datasets/chebi/test.json"))[:3]]
put("jsonl", "chebi.jsonl", "\n".join(lines) + "\n")
lines = [json.dumps(r) for r in json.load(open("datasets/swissprot/test.json"))[:3]]
put("jsonl", "swissprot.jsonl", "\n".join(lines) + "\n")

put("score", "pairs.jsonl", "\n".join(json.dumps(r) for r in [
    {"prediction": "The molecule is an aromatic ether.", "reference": "The molecule is an ether."},
    {"prediction": "It binds zinc ions.", "reference": "Binds 2 zinc ions per subunit."}]) + "\n\n")
put("score", "unicode.jsonl", json.dumps({"prediction": "Na\u207a channel \u03b2-subunit", "reference": "sodium channel beta"}) + "\n")

# Regressions: the inputs of issue 26's defects, kept beside what the fuzzer finds.
def reg(target, name, data):
    os.makedirs(f"fuzz/regressions/{target}", exist_ok=True)
    with open(f"fuzz/regressions/{target}/{name}", "wb") as f:
        f.write(data)


bomb = b"\x80\x02)q\x00" + b"".join(bytes([ord("h"), i, ord("h"), i, 0x86, ord("q"), i + 1]) for i in range(40)) + b"0}."
reg("pickle", "d1_memo_amplification.pkl", bomb)
reg("pickle", "d2_nested_tuples.pkl", b"\x80\x02N" + b"\x85" * 20000 + b".")
reg("pickle", "d2_nested_dicts.pkl", b"\x80\x02" + b"}X\x01\x00\x00\x00k" * 5000 + b"N" + b"s" * 5000 + b".")
buf = io.BytesIO()
torch.save({"w": torch.zeros(4)}, buf)
with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
    names = z.namelist()
    pkl_name = [n for n in names if n.endswith("data.pkl")][0]
    pkl = z.read(pkl_name)
    # The storage offset argument of _rebuild_tensor_v2 (K\x00 right after the persistent id) -> -1.
    forged = pkl.replace(b"QK\x00", b"QJ\xff\xff\xff\xff", 1)
    assert forged != pkl
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as o:
        for n in names:
            o.writestr(n, forged if n == pkl_name else z.read(n))
    reg("torch_zip", "d3_negative_offset.pth", out.getvalue())
reg("smiles", "d6_5000_atoms.smi", b"C" * 5000)
reg("safetensors", "overlap.safetensors", (lambda h: len(h).to_bytes(8, "little") + h + b"\0" * 12)(
    b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'))
reg("llama_config", "d8_negative_theta.json", json.dumps({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "rope_theta": -1}).encode())
reg("biomedgpt_json", "d9_zero_protein_tokens.json", b'{"max_protein_tokens": 0}')
