"""Shared fixtures: a tiny word-level tokenizer and tiny GPT-2 policy / reward-model directories."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

WORDS = ("what is the capital of france paris two plus three five yes no great question i hope this helps "
         "sorry cannot help with that a b c d e f g h").split()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on shared, busy cores run up to 20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def private_model_cache(tmp_path_factory):
    """Built-in models (`builtin:bytes`) are made in a cache of the test session's own, not the user's."""
    before = os.environ.get("TETHER_CACHE")
    os.environ["TETHER_CACHE"] = str(tmp_path_factory.mktemp("tether_cache"))
    yield
    if before is None:
        del os.environ["TETHER_CACHE"]
    else:
        os.environ["TETHER_CACHE"] = before


def make_tokenizer(pad_is_eos: bool = False):
    """A word-level PreTrainedTokenizerFast: <pad>, <eos>, <unk> plus WORDS and a few punctuation marks."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", "?", ".", "!", ":", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>",
                                   pad_token="<eos>" if pad_is_eos else "<pad>")
    return fast


def make_policy(tokenizer, seed: int = 0, n_embd: int = 32):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=n_embd, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{'policy': dir, 'rm': dir, 'prompts': file}: a random tiny policy, a reward model initialised from it, prompts."""
    from tether.models import reward_model_from_policy
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = make_tokenizer()
    policy = make_policy(tokenizer)
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    torch.manual_seed(1)
    rm = reward_model_from_policy(root / "policy", tokenizer.pad_token_id)
    rm.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    prompts = root / "prompts.jsonl"
    texts = ["what is the capital of france ?", "what is two plus three ?", "great question : a b c ?", "what is e f g ?"]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return {"policy": root / "policy", "rm": root / "rm", "prompts": prompts}


@pytest.fixture(scope="session")
def hh_policy(tmp_path_factory):
    """A user-supplied local model: tiny GPT-2 whose word-level tokenizer also knows "Human" and "Assistant"."""
    path = tmp_path_factory.mktemp("hh") / "policy"
    tokenizer = make_tokenizer()
    tokenizer.add_tokens(["Human", "Assistant"])
    make_policy(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright. Without it a local run skips; CI (which installs it) fails."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
