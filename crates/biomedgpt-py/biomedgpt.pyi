"""BioMedGPT in-process: questions about molecules and proteins, encoder embeddings as numpy
arrays, the molecular graph, the paper's text metrics. The same computations as the
`biomedgpt` CLI (answers and embeddings equal its own)."""

from typing import Any, Iterator, Literal, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

class AnswerStream(Iterator[str]):
    """Text pieces of an answer as they are generated; they add up to the whole answer. Beam
    search yields its answer in one piece at the end. Dropping the stream, or Ctrl-C while
    waiting on it, stops the generation at the next token."""

    def __iter__(self) -> "AnswerStream": ...
    def __next__(self) -> str: ...

class BioMedGPT:
    """A BioMedGPT model directory (the released 10B layout, a converted or fine-tuned one, the
    demo model). Weights stay memory-mapped; model work releases the GIL."""

    @staticmethod
    def load(path: str, device: str = "cpu", dtype: str = "auto", prefix_cache_mb: int = 512) -> "BioMedGPT":
        """Loads a model directory. `dtype`: "auto" (the stored dtype; GGUF blocks stay in their
        blocks), "f32", "f16" or "bf16", as the CLI's --dtype. `device`: "cpu", or "wgpu[:N]" /
        "cuda[:N]" in a package built with that feature (MATURIN_PEP517_ARGS="--features cuda"
        pip install ./crates/biomedgpt-py). `prefix_cache_mb`: memory for the keys and values of
        earlier prompts, reused when a prompt starts the same way (the system prompt, a chat's
        earlier turns); 0 turns it off; answers are the same either way. Raises
        FileNotFoundError for a missing path, ValueError for an unknown dtype or a device this
        build or machine lacks."""

    def ask(
        self,
        question: str,
        smiles: Optional[Union[str, Sequence[str]]] = None,
        protein: Optional[Union[str, Sequence[str]]] = None,
        *,
        max_new_tokens: Optional[int] = None,
        num_beams: Optional[int] = None,
        repetition_penalty: Optional[float] = None,
        length_penalty: Optional[float] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        ignore_eos: bool = False,
        stream: bool = False,
    ) -> Union[str, AnswerStream]:
        """Answers `question` about the molecules (SMILES) and proteins (amino-acid sequences),
        as `biomedgpt ask` does with the same arguments: greedy by default (255 new tokens at
        most), beam search with `num_beams` > 1, sampling with `temperature`, `top_k` or `top_p`
        (seeded). BioMedGPT-R1 takes the arguments left out from its config.yaml (2 beams,
        repetition penalty 1.5, max_length counting the prompt) and returns its whole text,
        thinking included: see `split_reasoning`. With `stream=True`, an iterator of text pieces.
        Ctrl-C raises KeyboardInterrupt between tokens; an invalid SMILES or sequence raises
        ValueError."""

    def chat(self, messages: Sequence[dict[str, Any]], **fields: Any) -> Union[str, list[str], AnswerStream]:
        """Answers a conversation in OpenAI's chat message shape, as `biomedgpt serve`'s
        /v1/chat/completions does (the same engine): each message is {"role": "system" | "user"
        | "assistant", "content": str | list of parts}, a part {"type": "text", "text"},
        {"type": "molecule", "molecule": {"smiles"}} or {"type": "protein", "protein":
        {"sequence"}}. `fields` are that endpoint's (max_tokens, temperature, top_p, top_k, seed,
        n, stop, frequency_penalty, presence_penalty, repetition_penalty, num_beams,
        length_penalty, ignore_eos, stream). Returns the answer, a list of n answers, or with
        stream=True an iterator of text pieces (the server's deltas; n = 1); ValueError names the
        field at fault; Ctrl-C raises KeyboardInterrupt."""

    def embed_molecules(
        self, smiles: Union[str, Sequence[str]], pool: Literal["mean", "none"] = "mean"
    ) -> Union[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
        """GraphMVP GIN features: `pool="mean"`, one float32 array [n, 300] (the mean over atoms,
        as `embed molecule --pool mean`); `pool="none"`, a list of [atoms, 300] arrays."""

    def embed_proteins(
        self, sequences: Union[str, Sequence[str]], pool: Literal["mean", "none"] = "mean"
    ) -> Union[npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
        """ESM-2 features: `pool="mean"`, one float32 array [n, hidden] (the mean over residues,
        <cls>/<eos> left out, as `embed protein --pool mean`); `pool="none"`, a list of
        [residues + 2, hidden] arrays (the last hidden state BioMedGPT splices in)."""

class LanguageModel:
    """A text language model: a LLaMA-family HF directory, a .gguf file, or GPT-2 (BioMedLM),
    opened as the CLI's `generate` opens it."""

    @staticmethod
    def load(path: str, device: str = "cpu", dtype: str = "auto") -> "LanguageModel":
        """Loads an HF model directory or a GGUF file; `dtype` and `device` as in BioMedGPT.load."""

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: int = 0,
        stream: bool = False,
    ) -> Union[str, AnswerStream]:
        """The continuation of `prompt` (BOS in front for a LLaMA), as `biomedgpt generate`
        decodes it: greedy by default, beams or seeded sampling; with `stream=True`, an iterator
        of its pieces. Ctrl-C raises KeyboardInterrupt; a prompt and length past the context
        raise ValueError."""

    def logits(self, text: str) -> npt.NDArray[np.float32]:
        """Float32 logits of every position of `text`, [T, vocab], as `biomedgpt inspect logits`."""

def featurize(smiles: str) -> dict[str, npt.NDArray[np.int64]]:
    """The graph the GIN reads (RDKit, as `biomedgpt inspect featurize`): "atoms" [atoms, 2]
    (type, chirality), "edge_index" [2, edges], "edge_attr" [edges, 2] (bond type, direction)."""

def score(
    predictions: Sequence[str],
    references: Sequence[str],
    bleu: Literal["corpus", "sentence"] = "corpus",
    vocab: Optional[str] = None,
    wordnet: Optional[str] = None,
) -> dict[str, float]:
    """BLEU-2/4, ROUGE-1/2/L and METEOR (keys bleu2, bleu4, rouge1, rouge2, rougeL, meteor, and
    n), the MolT5 protocol as `biomedgpt score` computes it. WordNet: Debian's wordnet-base by
    default (FileNotFoundError without it)."""

def split_reasoning(text: str) -> tuple[str, Optional[str]]:
    """A reasoning model's answer (BioMedGPT-R1) split as DeepSeek's API splits it: (thinking,
    answer), the text before and after the first `</think>`, trimmed; answer is None when the
    model never finished thinking (raise max_new_tokens)."""
