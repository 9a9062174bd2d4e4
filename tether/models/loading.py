"""Model and tokenizer loading and atomic saving: any local Hugging Face directory.

`safetensors` only; `trust_remote_code` is off unless the caller asks. Saving is
atomic: `save_pretrained` into a temporary sibling folder, then rename.
"""

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from huggingface_hub.errors import StrictDataclassError

from tether.errors import InputError
from tether.io import TMP_SUFFIX, temp_name_prefix, umask


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(str(e), field="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA requested but no GPU is available", field="device")
    return device


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# What transformers raises on a config.json it cannot use: an unknown model_type, a wrong-typed value.
CONFIG_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, StrictDataclassError)


def _check_model_dir(path, field: str) -> Path:
    """`path` is a folder with a readable config.json of a known model type, or InputError naming the field.

    A built-in model's name (`builtin:bytes`, `builtin:smollm2-135m-instruct`) stands for its cached directory.
    """
    from tether.models.builtin import resolve_model_path
    path = resolve_model_path(path, field)
    config = path / "config.json"
    if not config.is_file():
        hint = (f": it holds a GGUF file; make one with `tether model import {path} --out DIR`"
                if path.is_dir() and any(path.glob("*.gguf")) else "")
        raise InputError(f"not a Hugging Face model directory (no config.json){hint}", path=path, field=field)
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"config.json is not readable JSON: {e}", path=path, field=field) from None
    return path


def model_config(path, field: str):
    """The directory's transformers config (an unknown model_type or a wrong-typed value is InputError)."""
    from transformers import AutoConfig
    path = _check_model_dir(path, field)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except CONFIG_ERRORS as e:
        raise InputError(f"config.json cannot be used: {_one_line(e)}", path=path, field=field) from None


def check_weights(path, field: str, role: str) -> Path:
    """The directory holds weights for `role` ("causal LM" or "reward model"), judged by config.architectures."""
    path = _check_model_dir(path, field)
    if not any((path / name).is_file() for name in WEIGHT_FILES) and not any(path.glob("*.gguf")):
        raise InputError(f"no weights ({' or '.join(WEIGHT_FILES)})", path=path, field=field)
    architectures = model_config(path, field).architectures or []
    causal = any(a.endswith(CAUSAL_LM_SUFFIXES) for a in architectures)
    if architectures and causal != (role == "causal LM"):
        raise InputError(f"holds a {', '.join(architectures)}, not a {role}", path=path, field=field)
    return path


def load_weights(loader, path, field: str, **kwargs):
    """`loader.from_pretrained(path, ...)` with unreadable weights (missing, truncated, wrong shapes) as InputError."""
    from safetensors import SafetensorError
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except (*CONFIG_ERRORS, RuntimeError, SafetensorError) as e:
        raise InputError(f"cannot load the weights: {_one_line(e)}", path=path, field=field) from None


def _one_line(e: Exception) -> str:
    """A library's error message as one line: its first sentence, at most 300 characters."""
    text = " ".join(str(e).split())
    text = text.split(". ")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def load_tokenizer(path, field: str = "model"):
    """AutoTokenizer from a local directory; a pad token is required (EOS is used when absent)."""
    from transformers import AutoTokenizer
    path = _check_model_dir(path, field)
    model_config(path, field)  # the tokenizer reads config.json too
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)})", path=path, field=field)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except CONFIG_ERRORS as e:
        raise InputError(f"cannot load the tokenizer: {_one_line(e)}", path=path, field=field) from None
    if len(tokenizer) == 0:
        raise InputError("the tokenizer has an empty vocabulary", path=path, field=field)
    if tokenizer.eos_token_id is None:
        raise InputError("tokenizer has no EOS token", path=path, field=field)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path, device="cpu", trust_remote_code: bool = False, field: str = "model",
                   dtype: torch.dtype | None = None):
    """AutoModelForCausalLM in eval mode with dropout off (PPO log-probs must be exact), its weights converted to
    `dtype` (None: as stored) before they move to `device`."""
    from transformers import AutoModelForCausalLM
    path = check_weights(path, field, "causal LM")
    kwargs = dict(trust_remote_code=trust_remote_code)
    gguf = sorted(path.glob("*.gguf"))
    if gguf:
        kwargs["gguf_file"] = gguf[0].name
    model = load_weights(AutoModelForCausalLM, path, field, **kwargs)
    return disable_dropout(model).to(device=device, dtype=dtype).eval()


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set p=0 on every Dropout module (Huang et al. 2024: dropout breaks PPO's ratio at epoch 1)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def enable_gradient_checkpointing(model) -> None:
    """Recompute each transformer block's activations in the backward pass instead of keeping them
    (transformers' activation checkpointing, non-reentrant torch.utils.checkpoint): activation
    memory falls from O(layers) to O(1) blocks for about one more forward per step; the gradients are
    the same (dropout is off, so the recomputed forward is the first one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x; the old one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def save_pretrained_atomic(out_dir, model, tokenizer=None, state_dict: dict | None = None,
                           extra_json: dict[str, dict] | None = None) -> None:
    """`save_pretrained` (safetensors) into a temporary folder, then swap it in for `out_dir`.

    The old folder is renamed aside, the new one renamed in, and only then the old one
    removed, so a kill at any moment leaves complete weights under `out_dir` or under a
    hidden `.tmp` sibling (`remove_stale_temp` deletes those on the next start).
    `state_dict` replaces the model's own (the gathered weights of a sharded model); `extra_json`
    ({file name: object}) adds JSON files beside config.json, in the same swap."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_name_prefix(out_dir), suffix=TMP_SUFFIX, dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, value in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_name_prefix(out_dir) + "old.", suffix=TMP_SUFFIX, dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
