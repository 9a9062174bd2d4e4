"""Load and save policies, reward models and value heads as Hugging Face directories; the PPO actor–critic."""

from tether.models.loading import (
    load_causal_lm,
    load_tokenizer,
    resolve_device,
    save_pretrained_atomic,
    set_seed,
)
from tether.models.reward import (
    PairScorer,
    load_reward_model,
    reward_model_from_policy,
    score_head,
    score_pairs,
    score_sequences,
    score_texts,
)
from tether.models.lora import apply_lora
from tether.models.value import PolicyWithValue
from tether.models.actor_critic import ActorCritic
