"""What PPO, best-of-n, `tether score` and the sweep share: the reward function.

`RewardFunction` scores (prompt, response) token sequences with one reward model or
an ensemble (mean − λ·std, Coste et al. 2023). When the reward model's tokenizer
differs from the policy's, responses are decoded and re-tokenised.
"""

import torch

from tether.data import encode_prompt, encode_response, pad_right
from tether.models import load_reward_model, load_tokenizer, score_sequences


class RewardFunction:
    """r(x, y) from one or more reward models: mean − λ·std over the ensemble."""

    def __init__(self, model_dirs: list[str], policy_tokenizer, device, uncertainty_coef: float = 0.0,
                 dtype: torch.dtype = torch.float32):
        """`dtype`: the reward models' weights (their scores are returned as float32 whatever it is)."""
        self.models = [load_reward_model(d, device, field="reward_model", dtype=dtype) for d in model_dirs]
        self.tokenizers = [load_tokenizer(d, field="reward_model") for d in model_dirs]
        self.same_vocab = [t.get_vocab() == policy_tokenizer.get_vocab() for t in self.tokenizers]
        for model, tok in zip(self.models, self.tokenizers):
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tok.pad_token_id
        self.policy_tokenizer, self.device, self.uncertainty_coef = policy_tokenizer, device, uncertainty_coef

    @property
    def model(self):
        """The first reward model (`model_dirs[0]`), loaded once: PPO's critic and value head start from it."""
        return self.models[0]

    @torch.no_grad()
    def __call__(self, sequences, attention_mask, prompts=None, responses=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (B,), ensemble std (B,), 0 for a single model)."""
        all_scores = []
        for model, tok, same in zip(self.models, self.tokenizers, self.same_vocab):
            if same:
                ids, mask = sequences, attention_mask
            else:
                seqs = [encode_prompt(tok, p) + encode_response(tok, r) for p, r in zip(prompts, responses)]
                ids, mask = (t.to(self.device) for t in pad_right(seqs, tok.pad_token_id))
            all_scores.append(score_sequences(model, ids, mask).float())
        stacked = torch.stack(all_scores)
        std = stacked.std(0) if len(all_scores) > 1 else torch.zeros_like(stacked[0])
        return stacked.mean(0) - self.uncertainty_coef * std, std
