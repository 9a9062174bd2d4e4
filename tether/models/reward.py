"""Reward models: a sequence-classification model with one label, read at the last real token.

A reward model is `AutoModelForSequenceClassification` with `num_labels=1`, so it
loads in TRL and plain transformers. tether pools by the attention mask, never
by `pad_token_id`: transformers' own pooling takes the rightmost token that is not
the pad id, which is one token too early whenever pad == EOS and the response ends
in EOS (the bug behind TRL #1893 / #3750). With a pad token distinct from EOS (the
built-in world) both poolings agree.
"""

import json
import weakref
from pathlib import Path

import torch

from tether.algos import last_token_index
from tether.data.collate import collate_pairs, encode_prompt, encode_response, pair_attention_mask, unpack_pairs
from tether.data.padding import pad_right, position_ids_from_mask
from tether.errors import InputError
from tether.models.loading import check_weights, disable_dropout, load_tokenizer, load_weights


def reward_model_from_policy(policy_dir, pad_token_id: int, device="cpu"):
    """Initialise a reward model from a causal-LM directory: same trunk, LM head replaced by a linear scalar head."""
    from transformers import AutoModelForSequenceClassification
    path = check_weights(policy_dir, "init", "causal LM")
    model = load_weights(AutoModelForSequenceClassification, path, "init", num_labels=1, pad_token_id=pad_token_id)
    return disable_dropout(model).to(device)


def load_reward_model(path, device="cpu", field: str = "model", dtype: torch.dtype | None = None):
    """A reward-model directory (sequence classification, one label), in eval mode with dropout off, its weights
    converted to `dtype` (None: as stored) before they move to `device`."""
    from transformers import AutoModelForSequenceClassification
    path = check_weights(path, field, "reward model")
    model = load_weights(AutoModelForSequenceClassification, path, field)
    if model.config.num_labels != 1:
        raise InputError(f"a reward model needs num_labels=1, found {model.config.num_labels}", path=path, field=field)
    return disable_dropout(model).to(device=device, dtype=dtype).eval()


TRAINING_SETTINGS = "tether.json"  # beside config.json: how `tether rm train` tokenised the pairs


def training_settings(max_length: int, truncation: str) -> dict:
    """The reward model directory's tether.json: the length rule it was trained with, which
    `tether rm eval` and `tether score` apply unless told otherwise (`trained_length_rule`)."""
    return {TRAINING_SETTINGS: {"max_length": max_length, "truncation": truncation}}


def trained_length_rule(path, config, max_length: int | None, truncation: str | None,
                        field: str = "model") -> tuple[int, str]:
    """(max_length, truncation): those given, else the directory's tether.json, else the model's
    position limit (`max_position_embeddings` / `n_positions`) and "left" (keep the response)."""
    saved = {}
    settings = Path(path) / TRAINING_SETTINGS
    if settings.is_file():
        try:
            saved = json.loads(settings.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{TRAINING_SETTINGS} is not readable JSON: {e}", path=path, field=field) from None
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    max_length = max_length or saved.get("max_length") or limit
    if not isinstance(max_length, int):
        raise InputError(f"no max_length given, none in {TRAINING_SETTINGS} and no position limit in config.json",
                         path=path, field="max_length")
    return max_length, truncation or saved.get("truncation") or "left"


def score_head(model) -> torch.nn.Module:
    """The linear scalar head of a sequence-classification model (`score` in GPT-2/Llama/Qwen, else `classifier`)."""
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None:
        raise InputError(f"{type(model).__name__} has no `score` or `classifier` head", field="model")
    return head


def token_scores(model, input_ids, attention_mask) -> torch.Tensor:
    """Scalar head applied at every position: (B, T) -> (B, T). Used for rewards and per-token critic values."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
    return score_head(model)(hidden).squeeze(-1)


def score_sequences(model, input_ids, attention_mask) -> torch.Tensor:
    """r(x, y): the head's output at the last token with attention_mask == 1 (left or right padding). (B, T) -> (B,)"""
    scores = token_scores(model, input_ids, attention_mask)
    return scores.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)


def score_pairs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen (B,), r_rejected (B,)) of a `tether.data.collate_pairs` batch: one row per pair.

    Each row holds the pair's shared prefix once, then both sides' own tokens; `pair_attention_mask`
    and the position ids make each side see what it would see alone, so the scores are
    `score_sequences` of the whole sequences up to float rounding, for 0.75 of the tokens on the
    built-in world (far fewer on long shared conversations). The score is the head at each side's
    last token, read at a known column: never a pad token, whatever the pad id is. A model that
    does not honour the custom mask (`packs_pairs`) scores the whole sequences instead.
    """
    if not packs_pairs(model):
        chosen, rejected = unpack_pairs(batch)
        ids, mask = (t.to(batch["input_ids"].device) for t in pad_right(chosen + rejected, 0))
        scores = score_sequences(model, ids, mask)
        return scores[:len(chosen)], scores[len(chosen):]
    return _packed_scores(model, batch)


def _packed_scores(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    mask = pair_attention_mask(batch["segments"])
    if model.config._attn_implementation == "eager":  # eager attention adds its mask; the others take booleans
        mask = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(~mask, torch.finfo(model.dtype).min)
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=mask,
                              position_ids=batch["position_ids"]).last_hidden_state
    scores = score_head(model)(hidden).squeeze(-1)  # (B, T)
    rows = torch.arange(len(scores), device=scores.device)
    return scores[rows, batch["chosen_last"]], scores[rows, batch["rejected_last"]]


_PACKS_PAIRS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def packs_pairs(model) -> bool:
    """Whether the model honours `score_pairs`' 4D attention mask and position ids, checked once per
    model on a probe pair against whole-sequence scores, in float32. A model that ignored them (e.g.
    flash-attention-2 kernels, which take padding masks only) would otherwise score wrongly, silently."""
    if model not in _PACKS_PAIRS:
        vocab = model.config.vocab_size
        chosen, rejected = [[1 % vocab, 2 % vocab, 3 % vocab, 4 % vocab]], [[1 % vocab, 2 % vocab, 5 % vocab]]
        device = next(model.parameters()).device
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            packed = torch.cat(_packed_scores(model, {k: v.to(device) for k, v in collate_pairs(chosen, rejected, 0).items()}))
            whole = score_sequences(model, *(t.to(device) for t in pad_right(chosen + rejected, 0)))
        _PACKS_PAIRS[model] = bool(torch.allclose(packed.float(), whole.float(), atol=1e-4, rtol=1e-3))
    return _PACKS_PAIRS[model]


class PairScorer(torch.nn.Module):
    """`score_pairs` as a module's forward, so DistributedDataParallel can wrap it: batch -> (B,), (B,)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        return score_pairs(self.model, batch)


@torch.no_grad()
def score_texts(model_or_dir, prompts, responses, tokenizer=None, batch_size: int = 64, device="cpu") -> list[float]:
    """Score (prompt, response) texts or message lists: prompt tokens + response tokens + EOS, right-padded."""
    if isinstance(model_or_dir, (str, bytes)) or hasattr(model_or_dir, "joinpath"):
        tokenizer = tokenizer or load_tokenizer(model_or_dir)
        model_or_dir = load_reward_model(model_or_dir, device)
    seqs = [encode_prompt(tokenizer, p) + encode_response(tokenizer, r) for p, r in zip(prompts, responses)]
    out = []
    for i in range(0, len(seqs), batch_size):
        ids, mask = pad_right(seqs[i:i + batch_size], tokenizer.pad_token_id)
        out += score_sequences(model_or_dir, ids.to(device), mask.to(device)).float().tolist()
    return out
