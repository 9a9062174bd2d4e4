"""Built-in environments that ship with tether, so a demo needs no download, reached through one registry.

`assistant`: a synthetic chat task (arithmetic, capitals, how-to, edgy and
harmful asks) with response styles, a gold utility that parses any response,
and a noisy, biased gold labeler standing in for a human (DESIGN §5).

Pipelines never import a world's modules: they ask `get_world(name)` for its
`World` (prompts, SFT corpus, tokenizer and model, gold, labeler), `resolve_gold`
for what `--gold` names (a world's gold, or a reward-model directory's:
`RewardModelGold`), and `builtin_model_world` for a `builtin:NAME` model.
A new world joins by one entry in `WORLDS`.
"""

import torch

from tether.errors import InputError
from tether.models.builtin import BUILTIN_PREFIX, is_model_name
from tether.worlds import assistant
from tether.worlds.reward_model_gold import RewardModelGold, is_model_dir
from tether.worlds.world import Gold, Labeler, World

WORLDS: dict[str, World] = {"assistant": assistant.WORLD}
BUILTIN_MODEL_PREFIX = BUILTIN_PREFIX
BUILTIN_POLICY = BUILTIN_MODEL_PREFIX + "assistant"

__all__ = ["BUILTIN_MODEL_PREFIX", "BUILTIN_POLICY", "Gold", "Labeler", "RewardModelGold", "WORLDS", "World",
           "builtin_model_world", "get_world", "resolve_gold"]


def get_world(name: str, field: str = "world") -> World:
    """The registered world called `name`; InputError naming `field` and the known worlds otherwise."""
    if name not in WORLDS:
        raise InputError(f"unknown world {name!r} (known: {', '.join(WORLDS)})", field=field)
    return WORLDS[name]


def resolve_gold(spec: str | None, field: str = "gold", device="cpu", dtype=torch.float32) -> Gold | None:
    """The gold that `--gold SPEC` names: None for None, a world's gold for a world's name, a
    `RewardModelGold` (scoring on `device` with `dtype` weights, loaded on first use) for a reward-model
    directory; else InputError.

    The one door for every command's `--gold` (and its only validation).
    """
    if spec is None:
        return None
    if spec in WORLDS:
        return WORLDS[spec].gold
    if is_model_dir(spec):
        return RewardModelGold(spec, device, field=field, dtype=dtype)
    raise InputError(f"{spec!r} is neither a built-in world ({', '.join(WORLDS)}) nor a reward-model directory",
                     field=field)


def builtin_model_world(model: str, field: str = "model") -> World | None:
    """The world whose fresh model `model` names ("builtin:NAME"), or None when it names something else
    (a directory, or a built-in model of the models floor such as `builtin:bytes`)."""
    if not model.startswith(BUILTIN_MODEL_PREFIX) or is_model_name(model):
        return None
    return get_world(model.removeprefix(BUILTIN_MODEL_PREFIX), field)
