"""`tether data check FILE [--tokenizer DIR]`: the data layer's check, with the tokenizer loaded from a model directory."""

from tether.data.check import DataCheckConfig, run_data_check as check_file
from tether.models import load_tokenizer

__all__ = ["DataCheckConfig", "run_data_check"]


def run_data_check(cfg: DataCheckConfig) -> dict:
    tokenizer = load_tokenizer(cfg.tokenizer, field="tokenizer") if cfg.tokenizer else None
    return check_file(cfg, tokenizer)
