"""`tether label stats`: agreement statistics of label files, printed as JSON (`tether.label.stats` computes them)."""

import json
from dataclasses import dataclass
from pathlib import Path

from tether.config import opt, require
from tether.data.labels import read_label_rows
from tether.errors import InputError
from tether.label.pairs import load_items
from tether.label.stats import label_stats
from tether.worlds import resolve_gold


@dataclass
class LabelStatsConfig:
    """Agreement statistics of label files (self, inter-labeler, position bias; gold and reward model on request)."""

    out: str | None = opt(None, "the label file analysed (a `tether label --out`)")
    labels: list[str] = opt([], "more label files (other labelers' --out) pooled with --out")
    gold: str | None = opt(None, "also compare with a gold labeler: a built-in world's ('assistant') or a reward-model directory's")
    reward_model: str | None = opt(None, "also compare with this reward-model directory")
    pairs: str | None = opt(None, "the pairs file that was labelled: its number of showings is reported too")

    def __post_init__(self):
        require(bool(self.out), "out", "required: the label file")
        resolve_gold(self.gold)  # InputError naming the known golds


def _rm_score(model_dir: str):
    if not Path(model_dir).is_dir():
        raise InputError("no such directory", path=model_dir, field="reward_model")
    from tether.models.reward import score_texts
    return lambda prompts, responses: score_texts(model_dir, prompts, responses)


def run_label_stats(cfg: LabelStatsConfig) -> dict:
    """Print the statistics of the label files as JSON and return them."""
    rows = [row for path in (cfg.out, *cfg.labels) for row in read_label_rows(path)]
    stats = label_stats(rows, gold_prob=resolve_gold(cfg.gold).preference_prob if cfg.gold else None,
                        rm_score=_rm_score(cfg.reward_model) if cfg.reward_model else None)
    if cfg.pairs:
        stats["pairs"] = len(load_items(cfg.pairs))
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return stats
