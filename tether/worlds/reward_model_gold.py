"""A reward model as gold: the synthetic setup of Gao, Schulman & Hilton (2022) and Coste et al. (2023).

A (normally larger) "gold" reward model stands in for the human: it labels the pairs
the proxy reward model learns from and scores what the policy writes. Its utility of a
(prompt, response) is the gold model's score g = r_gold(x, y) (`tether.models.score_texts`),
and its rater prefers y1 with

    P(y1 ≻ y2) = σ((g1 − g2)/τ)

(Bradley & Terry 1952): τ = 1 is the probability the gold model was trained to give,
a smaller τ labels less noisily.

A reward model knows nothing of a world's response styles nor which prompts are benign,
so `styles` and `benign` are None: the world-only detectors (style shares, refusals on
benign prompts) are absent, not zero. Detectors that read any text (refusal rate over
all prompts, filler, repetition, length) still run.
"""

import math
import random
from pathlib import Path

import torch

from tether.models import load_reward_model, load_tokenizer, score_texts
from tether.models.loading import check_weights

DEFAULT_TAU = 1.0
"""τ of a reward-model gold unless told otherwise: its own Bradley–Terry probability σ(g1 − g2)."""


def preference_prob(g1: float, g2: float, tau: float) -> float:
    """P(y1 ≻ y2) = σ((g1 − g2)/τ), computed without overflow for any gap."""
    x = (g1 - g2) / tau
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class RewardModelGold:
    """The `Gold` of a reward-model directory; the model is loaded on first use (once), on `device`, with `dtype`
    weights (its scores are float32 whatever the weights are)."""

    styles = None  # no style classifier: style shares are absent
    benign = None  # no benign/harmful split: the benign refusal rate is absent

    def __init__(self, path, device="cpu", tau: float = DEFAULT_TAU, field: str = "gold", batch_size: int = 64,
                 dtype=torch.float32):
        self.path = check_weights(path, field, "reward model")
        self.device, self.tau, self.field, self.batch_size, self.dtype = device, tau, field, batch_size, dtype
        self._model = self._tokenizer = None

    @property
    def name(self) -> str:
        """How reports name this gold: "reward model DIRNAME"."""
        path = self.path.resolve()
        return f"reward model {path.parent.name + '/' if path.name == 'model' else ''}{path.name}"

    def utilities(self, prompts, responses) -> list[float]:
        """g = r_gold(prompt, response) per row, batched (`score_texts`: prompt + response + EOS)."""
        if self._model is None:
            self._tokenizer = load_tokenizer(self.path, field=self.field)
            self._model = load_reward_model(self.path, self.device, field=self.field, dtype=self.dtype)
        return score_texts(self._model, prompts, responses, self._tokenizer, self.batch_size, self.device)

    def preference_prob(self, prompt, y1: str, y2: str) -> float:
        """P(y1 ≻ y2) = σ((g1 − g2)/τ)."""
        g1, g2 = self.utilities([prompt, prompt], [y1, y2])
        return preference_prob(g1, g2, self.tau)


def label_scored_pair(g1: float, g2: float, tau: float, rng: random.Random) -> tuple[bool, float]:
    """(y1 preferred?, P(chosen ≻ rejected)): one draw from P(y1 ≻ y2) = σ((g1 − g2)/τ) with `rng`,
    as a world's labeler draws (`rng.random() < P`)."""
    p1 = preference_prob(g1, g2, tau)
    first = rng.random() < p1
    return first, p1 if first else 1.0 - p1


def is_model_dir(spec: str) -> bool:
    """Whether `--gold SPEC` names a directory (a reward model) rather than a world."""
    return Path(spec).is_dir()
