"""Model and tokenizer loading and atomic saving: any local Hugging Face directory.

`safetensors` only; `trust_remote_code` is off unless the caller asks. Saving is
atomic: `save_pretrained` into a temporary sibling folder, then rename.
"""

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from tether.errors import InputError


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


def _check_model_dir(path, field: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError("not a Hugging Face model directory (no config.json)", path=path, field=field)
    return path


def load_tokenizer(path, field: str = "model"):
    """AutoTokenizer from a local directory; a pad token is required (EOS is used when absent)."""
    from transformers import AutoTokenizer
    path = _check_model_dir(path, field)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise InputError("tokenizer has no EOS token", path=path, field=field)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path, device="cpu", trust_remote_code: bool = False, field: str = "model"):
    """AutoModelForCausalLM in eval mode with dropout off (PPO log-probs must be exact)."""
    from transformers import AutoModelForCausalLM
    path = _check_model_dir(path, field)
    kwargs = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    gguf = sorted(path.glob("*.gguf"))
    if gguf:
        kwargs["gguf_file"] = gguf[0].name
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return disable_dropout(model).to(device).eval()


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set p=0 on every Dropout module (Huang et al. 2024: dropout breaks PPO's ratio at epoch 1)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def save_pretrained_atomic(out_dir, model, tokenizer=None, state_dict: dict | None = None) -> None:
    """`save_pretrained` (safetensors) into a temporary folder, then rename it to `out_dir`.

    `state_dict` replaces the model's own (the gathered weights of a sharded model)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
