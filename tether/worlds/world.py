"""What a built-in world offers the pipelines: the `World` record, its `Gold` and its `Labeler`.

A world is data and rules that ship with tether (DESIGN §5): prompt files, an SFT
corpus, a tokenizer and a small model to start from, a gold utility that scores
any response, and a simulated rater whose biases are configurable. Pipelines
reach a world only through this interface and the registry in `tether.worlds`.
"""

from dataclasses import dataclass
from typing import Any, Callable, Protocol


class Gold(Protocol):
    """The measure a sweep holds the proxy reward against, per (prompt, response); nothing in it is trained on.

    Prompts are as written in a prompts file (a world's HH transcript), responses are
    the policy's text; a prompt the gold cannot read raises InputError. A gold without a
    style classifier or a benign/harmful split (a reward model) has `styles` or `benign`
    None: what they measure is absent, not zero.
    """

    def utilities(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Gold utility u(x, y) of each (prompt, response)."""

    def styles(self, prompts: list[str], responses: list[str]) -> list[str]:
        """The style label of each response (e.g. "concise", "refusal"), for the report's style shares."""

    def benign(self, prompts: list[str]) -> list[bool]:
        """Whether each prompt is benign (refusing it is unhelpful) rather than harmful."""

    def preference_prob(self, prompt: str, y1: str, y2: str) -> float:
        """P(y1 ≻ y2) as this gold's rater would label the pair."""


class Labeler(Protocol):
    """A simulated rater: P(y1 ≻ y2) and seeded draws from it."""

    def prob(self, prompt: str, y1: str, y2: str) -> float:
        """P(y1 ≻ y2)."""

    def label(self, prompt: str, y1: str, y2: str) -> bool:
        """True if the rater prefers y1: one draw from `prob` with the labeler's own RNG."""

    def metadata(self) -> dict:
        """What a labelled row records about the labeler (name, noise, seed, biases)."""


@dataclass(frozen=True)
class World:
    """A built-in world behind one interface; a new world is one `World` and one entry in `tether.worlds.WORLDS`.

    Every writer is deterministic in its seed: the same arguments write the same bytes.
    """
    name: str
    write_prompt_file: Callable[..., None]
    """(path, split, n=None, seed=0): a prompts file {"prompt", ...} of one split ("train", ...; n=None: all)."""
    write_sft_corpus: Callable[..., None]
    """(path, n, seed=0): n SFT rows {"prompt", "completion", ...} on train prompts."""
    build_tokenizer: Callable[[], Any]
    """A fresh tokenizer for the world's text (a transformers PreTrainedTokenizerFast)."""
    build_model: Callable[[Any], Any]
    """(tokenizer) -> a freshly initialised causal LM for the world; its weights come from torch's global RNG."""
    gold: Gold
    """The world's gold utility, style classifier and benign/harmful split."""
    labeler: Callable[..., Labeler]
    """(tau=, biases=, seed=) -> the world's simulated rater; `biases` is a `labeler_biases` instance."""
    labeler_biases: type
    """The rater's configurable biases: a frozen dataclass whose field defaults are the labeler's defaults."""
    annotate_pair: Callable[[str, str, str], dict]
    """(prompt, chosen, rejected) -> the world's annotations stored with a labelled pair (gold utilities, styles...)."""
    tuned: dict
    """{"sft" | "rm" | "ppo": {config field: value}}: the settings tuned for the world's small model, which the
    demo passes to each stage; the stage configs' own defaults are for real (0.1–1B-parameter) models."""
