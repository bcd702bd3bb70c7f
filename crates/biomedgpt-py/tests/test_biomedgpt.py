"""The Python package against the CLI on the demo model (models/demo): the same answers, the
same embeddings, streaming equal to the whole answer, errors as Python exceptions, the GIL
released during model work. Run with pytest after `pip install ./crates/biomedgpt-py`; the CLI
binary is target/release/biomedgpt (BIOMEDGPT_BIN to override)."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import biomedgpt

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "models" / "demo"
BIN = Path(os.environ.get("BIOMEDGPT_BIN", ROOT / "target" / "release" / "biomedgpt"))
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PROTEIN = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHM"


@pytest.fixture(scope="module")
def model():
    return biomedgpt.BioMedGPT.load(str(DEMO))


def cli(*args):
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, check=True)
    return out.stdout


def cli_answer(question, *inputs, extra=()):
    return json.loads(cli("ask", "--model", str(DEMO), *inputs, "--question", question, "--json", *extra))["answer"]


def test_answers_equal_the_cli(model):
    for question, inputs, kwargs, extra in [
        ("Please describe this molecule.", ["--smiles", ASPIRIN], {"smiles": ASPIRIN}, ()),
        ("What does this protein do?", ["--protein", PROTEIN], {"protein": PROTEIN}, ()),
        ("Compare them.", ["--smiles", "CCO", "--smiles", "CCN"], {"smiles": ["CCO", "CCN"]}, ()),
        ("Is it toxic?", ["--smiles", "CCO"], {"smiles": "CCO", "num_beams": 3, "max_new_tokens": 20},
         ("--num-beams", "3", "--max-new-tokens", "20")),
        ("Is it toxic?", ["--smiles", "CCO"], {"smiles": "CCO", "temperature": 0.8, "seed": 7, "max_new_tokens": 20},
         ("--temperature", "0.8", "--seed", "7", "--max-new-tokens", "20")),
    ]:
        assert model.ask(question, **kwargs) == cli_answer(question, *inputs, extra=extra), (question, kwargs)


def test_streamed_pieces_add_up_to_the_answer(model):
    whole = model.ask("Please describe this molecule.", smiles=ASPIRIN, max_new_tokens=40)
    pieces = list(model.ask("Please describe this molecule.", smiles=ASPIRIN, max_new_tokens=40, stream=True))
    assert len(pieces) > 1
    assert "".join(pieces) == whole
    beams = list(model.ask("Describe it.", smiles="CCO", num_beams=2, max_new_tokens=12, stream=True))
    assert "".join(beams) == model.ask("Describe it.", smiles="CCO", num_beams=2, max_new_tokens=12)


def test_embeddings_equal_embed_output(model):
    with tempfile.TemporaryDirectory() as tmp:
        smi = Path(tmp) / "m.smi"
        smi.write_text("CCO\nc1ccccc1O\n" + ASPIRIN + "\n")
        out = Path(tmp) / "m.npy"
        cli("embed", "molecule", "--model", str(DEMO), "--input", str(smi), "--out", str(out))
        got = model.embed_molecules(["CCO", "c1ccccc1O", ASPIRIN])
        assert got.dtype == np.float32 and got.shape == np.load(out).shape
        np.testing.assert_allclose(got, np.load(out), rtol=1e-6, atol=1e-6)
        atoms = model.embed_molecules(ASPIRIN, pool="none")
        assert len(atoms) == 1 and atoms[0].shape[0] == 13
        np.testing.assert_allclose(atoms[0].mean(axis=0), got[2], rtol=1e-5, atol=1e-6)

        out = Path(tmp) / "p.npy"
        cli("embed", "protein", "--model", str(DEMO), "--sequence", PROTEIN, "--pool", "mean", "--out", str(out))
        np.testing.assert_allclose(model.embed_proteins([PROTEIN]), np.load(out), rtol=1e-5, atol=1e-5)
        per_token = model.embed_proteins(PROTEIN, pool="none")[0]
        assert per_token.shape[0] == len(PROTEIN) + 2


def test_featurize_equals_inspect_featurize():
    graph = biomedgpt.featurize("F/C=C/F")
    cli_graph = json.loads(cli("inspect", "featurize", "--smiles", "F/C=C/F"))
    assert graph["atoms"].dtype == np.int64
    assert graph["atoms"].tolist() == cli_graph["atoms"]
    assert graph["edge_index"].tolist() == cli_graph["edge_index"]
    assert graph["edge_attr"].tolist() == cli_graph["edge_attr"]


def test_score_equals_the_cli():
    predictions = ["The molecule is an aromatic ether.", "It binds zinc."]
    references = ["The molecule is an ether.", "Binds two zinc ions."]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        path.write_text("\n".join(json.dumps({"prediction": p, "reference": r}) for p, r in zip(predictions, references)))
        want = json.loads(cli("score", "--predictions", str(path)))
    got = biomedgpt.score(predictions, references)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12), key


def test_bad_input_raises_python_errors(model):
    with pytest.raises(ValueError, match="invalid SMILES `C1CC`"):
        model.ask("What is it?", smiles="C1CC")
    with pytest.raises(ValueError, match="question is empty"):
        model.ask("  ", smiles="CCO")
    with pytest.raises(ValueError, match="smiles\\[1\\]"):
        model.embed_molecules(["CCO", "not a molecule"])
    with pytest.raises(ValueError, match="J"):
        model.embed_proteins(["MKTJ"])
    with pytest.raises(ValueError, match="pool"):
        model.embed_molecules(["CCO"], pool="max")
    with pytest.raises(ValueError, match="num_beams"):
        model.ask("What is it?", smiles="CCO", num_beams=0)
    with pytest.raises(ValueError, match="dtype|f33"):
        biomedgpt.BioMedGPT.load(str(DEMO), dtype="f33")
    # This build has no GPU backend: the error says how to build one (the CLI's words).
    with pytest.raises(ValueError, match="without the CUDA backend.*MATURIN_PEP517_ARGS"):
        biomedgpt.BioMedGPT.load(str(DEMO), device="cuda:0")
    with pytest.raises(ValueError, match="unknown device `tpu`"):
        biomedgpt.LanguageModel.load(str(DEMO / "llm"), device="tpu")
    with pytest.raises(FileNotFoundError):
        biomedgpt.BioMedGPT.load("/no/such/model")
    with pytest.raises(ValueError):
        biomedgpt.featurize("C" * 5000)


def test_the_gil_is_released_during_generation(model):
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    started = time.monotonic()
    model.ask("Please describe this molecule.", smiles=ASPIRIN, max_new_tokens=64)
    took = time.monotonic() - started
    done.set()
    counter.join()
    during = [t for t in ticks if started <= t <= started + took]
    # The other thread kept running: at least a tick per 10 ms of generation.
    assert len(during) >= took / 0.01, (len(during), took)


def test_loading_twice_in_one_process():
    a = biomedgpt.BioMedGPT.load(str(DEMO))
    b = biomedgpt.BioMedGPT.load(str(DEMO))
    assert a.ask("What is it?", smiles="CCO", max_new_tokens=8) == b.ask("What is it?", smiles="CCO", max_new_tokens=8)


def test_ctrl_c_interrupts_a_generation():
    script = f"""
import biomedgpt, os, signal, threading, time
# A process started in the background by a non-interactive shell inherits SIGINT ignored, and
# Python then leaves it so (CI): put Python's own Ctrl-C handler back.
signal.signal(signal.SIGINT, signal.default_int_handler)
m = biomedgpt.BioMedGPT.load({str(DEMO)!r})
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
started = time.monotonic()
try:
    # Eight beams for 800 tokens: many seconds on the demo model.
    m.ask("Describe it.", smiles="CCO", num_beams=8, max_new_tokens=800, ignore_eos=True)
    print("finished after", round(time.monotonic() - started, 1))
except KeyboardInterrupt:
    print("interrupted after", round(time.monotonic() - started, 1))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "interrupted after" in out.stdout, out.stdout + out.stderr
    assert float(out.stdout.split()[-1]) < 10, out.stdout


def test_chat_equals_ask_and_the_server(model):
    # One user message of [molecule, text] is `ask --smiles S --question Q`.
    content = [{"type": "molecule", "molecule": {"smiles": ASPIRIN}}, {"type": "text", "text": "Please describe this molecule."}]
    assert model.chat([{"role": "user", "content": content}]) == model.ask("Please describe this molecule.", smiles=ASPIRIN)

    # A multi-turn conversation with seeded sampling and two choices: what `biomedgpt serve` answers.
    messages = [
        {"role": "system", "content": "You are a careful chemist."},
        {"role": "user", "content": content},
        {"role": "assistant", "content": "It is aspirin."},
        {"role": "user", "content": [{"type": "protein", "protein": {"sequence": PROTEIN}}, {"type": "text", "text": "And this?"}]},
    ]
    fields = {"temperature": 0.9, "seed": 11, "n": 2, "max_tokens": 24}
    got = model.chat(messages, **fields)
    assert isinstance(got, list) and len(got) == 2
    server = subprocess.Popen([str(BIN), "serve", "--model", str(DEMO), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        address = line.split()[2]
        import urllib.request
        body = json.dumps({"messages": messages, **fields}).encode()
        request = urllib.request.Request(address + "/v1/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.load(response)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert got == [c["message"]["content"] for c in answer["choices"]]

    # Streamed: the server's deltas, adding up to the whole answer; dropping the iterator early
    # cancels the job and the model answers the next call.
    one = {"temperature": 0.9, "seed": 11, "max_tokens": 24}
    pieces = list(model.chat(messages, stream=True, **one))
    assert len(pieces) > 1 and "".join(pieces) == model.chat(messages, **one)
    stream = model.chat(messages, stream=True, **one)
    next(stream)
    del stream
    assert model.chat(messages, **one) == "".join(pieces)
    with pytest.raises(ValueError, match="n = 1"):
        model.chat(messages, stream=True, n=2)

    with pytest.raises(ValueError, match="max_tokens"):
        model.chat(messages, max_tokens="many")
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        model.chat([{"role": "robot", "content": "hi"}])


def test_the_prefix_cache_changes_no_answer(model):
    # `model` keeps its prompts' keys and values (prefix_cache_mb=512 by default); a model
    # without the cache answers the same, greedy and sampled, however the calls share prompts.
    plain = biomedgpt.BioMedGPT.load(str(DEMO), prefix_cache_mb=0)
    calls = [
        ("Please describe this molecule.", {"smiles": ASPIRIN}),
        ("Is it an acid?", {"smiles": ASPIRIN, "temperature": 0.9, "seed": 5, "max_new_tokens": 20}),
        ("Please describe this molecule.", {"smiles": ASPIRIN}),
        ("What does this protein do?", {"protein": PROTEIN, "max_new_tokens": 20}),
    ]
    for question, kwargs in calls:
        assert model.ask(question, **kwargs) == plain.ask(question, **kwargs), (question, kwargs)
    with pytest.raises((TypeError, OverflowError)):
        biomedgpt.BioMedGPT.load(str(DEMO), prefix_cache_mb=-1)


@pytest.mark.parametrize("model_path", [
    ROOT / "tests" / "fixtures" / "llama" / "real_vocab_f16",     # HF LLaMA, f16
    ROOT / "tests" / "fixtures" / "gguf" / "gqa_tied_q4_k_m.gguf",  # GGUF, blocks kept
    ROOT / "tests" / "fixtures" / "gpt2" / "tiny_safetensors",     # GPT-2
])
def test_language_model_equals_generate_and_inspect_logits(model_path):
    lm = biomedgpt.LanguageModel.load(str(model_path))
    prompt = "Aspirin inhibits"
    # (20 new tokens: the GPT-2 fixture's context is 64 positions.)
    for kwargs, extra in [({"max_new_tokens": 20}, ("--max-new-tokens", "20")), ({"num_beams": 2, "max_new_tokens": 12}, ("--num-beams", "2", "--max-new-tokens", "12")),
                          ({"temperature": 0.7, "seed": 3, "max_new_tokens": 12}, ("--temperature", "0.7", "--seed", "3", "--max-new-tokens", "12"))]:
        want = json.loads(cli("generate", "--model", str(model_path), "--prompt", prompt, "--json", *extra))["text"]
        assert lm.generate(prompt, **kwargs) == want, kwargs
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.npy"
        cli("inspect", "logits", "--model", str(model_path), "--prompt", prompt, "--out", str(out))
        got = lm.logits(prompt)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.load(out))
    for kwargs in [{"max_new_tokens": 20}, {"max_new_tokens": 12, "num_beams": 2}]:
        assert "".join(lm.generate(prompt, stream=True, **kwargs)) == lm.generate(prompt, **kwargs), kwargs
    with pytest.raises(ValueError, match="empty"):
        lm.generate(" ")
    with pytest.raises(ValueError, match="context"):
        lm.generate(prompt, max_new_tokens=100000)


R1 = ROOT / "tests" / "fixtures" / "biomedgpt_r1" / "tiny"


def test_r1_answers_equal_the_cli_and_split_as_it_does():
    m = biomedgpt.BioMedGPT.load(str(R1))
    out = json.loads(cli("ask", "--model", str(R1), "--smiles", "CCO", "--question", "What is it?", "--json"))
    text = m.ask("What is it?", smiles="CCO")  # config.yaml's 2 beams, penalty 1.5, max_length
    assert text == out["answer"]
    assert biomedgpt.split_reasoning(text) == (out["reasoning"], out["final"])
    assert biomedgpt.split_reasoning("still") == ("still", None)
    whole = m.ask("What is it?", smiles="CCO", num_beams=1, max_new_tokens=30)
    assert "".join(m.ask("What is it?", smiles="CCO", num_beams=1, max_new_tokens=30, stream=True)) == whole
