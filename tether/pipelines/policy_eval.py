"""Evaluate a policy on held-out prompts: proxy and gold reward, KL to the reference, detectors, samples.

Shared by PPO's periodic evaluation, the sweep's SFT baseline and best-of-n.
"""

from dataclasses import dataclass

import numpy as np
import torch

from tether.algos import best_of_n_kl, entropy_from_logits, kl_exact
from tether.analysis import detector_summary
from tether.analysis.frontier import kl_regularised_optimum
from tether.data import encode_prompt
from tether.pipelines.common import decode_responses
from tether.rollout import over_length_chunks, policy_forward, response_logits

# Evaluation and the best-of-n grid sample from generators of their own, seed + offset: every evaluation of a
# run shares random numbers (comparable across steps) and none share them with training (seed + rank stride).
EVAL_SEED_OFFSET = 10_007
GRID_SEED_OFFSET = 20_011


def paired_prompts(records, n_samples: int) -> list:
    """n_samples/2 prompts taken in order (cycling), listed twice: sample i and i + n/2 answer the same prompt."""
    half = [records[i % len(records)] for i in range(n_samples // 2)]
    return half + half


def gold_agreement(scores, utilities) -> float | None:
    """Share of same-prompt pairs (i, i + n/2) with different gold utility that the reward model orders like gold."""
    half = len(scores) // 2
    s, u = np.asarray(scores), np.asarray(utilities)
    du, ds = u[:half] - u[half:2 * half], s[:half] - s[half:2 * half]
    informative = du != 0
    return float((np.sign(du[informative]) == np.sign(ds[informative])).mean()) if informative.any() else None


def world_stats(gold, prompts, texts, scores) -> dict:
    """Gold utility, on-policy reward-model/gold agreement and, when the gold classifies styles, style shares."""
    utilities = gold.utilities(prompts, texts)
    stats = {"gold_reward": float(np.mean(utilities)), "utilities": utilities,
             "rm_gold_agreement": gold_agreement(scores, utilities)}
    if gold.styles is not None:
        styles = gold.styles(prompts, texts)
        stats |= {"style_shares": {s: styles.count(s) / len(styles) for s in sorted(set(styles))}, "styles": styles}
    return stats


@torch.no_grad()
def evaluate_policy(policy, ref_logits_fn, reward_fn, tokenizer, records, n_samples, sampling, gold=None, *,
                    engine, seed: int = 0, batch_size: int = 64, chunk_size: int = 32, n_keep: int = 64) -> dict:
    """Sample `n_samples` responses with `engine` (a fixed seed, so evaluations share random numbers) and measure them.

    `ref_logits_fn(sequences, attention_mask, response_start)` gives the reference's logits
    (`policy_forward`'s layout).

    Sampling runs `batch_size` prompts at a time; the teacher-forced passes (KL, entropy,
    reward) run on length-sorted chunks of `chunk_size` (`over_length_chunks`).
    """
    policy.eval()
    device = next(policy.parameters()).device
    chosen = paired_prompts(records, n_samples)
    prompts = [r.prompt for r in chosen]
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    generator = torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET)
    texts, scores, kls, entropies, eos = [], [], [], [], []
    for i in range(0, len(ids), batch_size):
        rollout = engine.generate(policy, ids[i:i + batch_size], sampling, generator)
        batch_prompts, batch_texts = prompts[i:i + batch_size], decode_responses(tokenizer, rollout)

        def measure(s, a, p, rows):
            dist = response_logits(policy_forward(policy, s, a, p), s, p, sampling.temperature)
            ref_dist = response_logits(ref_logits_fn(s, a, p), s, p, sampling.temperature)
            mask = a[:, p:].float()
            return {"kl": (kl_exact(dist, ref_dist) * mask).sum(1),  # Rao–Blackwellised k1: same mean, less noise
                    "entropy": (entropy_from_logits(dist) * mask).sum(1),
                    "score": reward_fn(s, a, [batch_prompts[r] for r in rows], [batch_texts[r] for r in rows])[0]}

        measured = over_length_chunks(measure, rollout.sequences, rollout.attention_mask, rollout.prompt_ids.shape[1],
                                      chunk_size)
        kls += measured["kl"].tolist()
        entropies += measured["entropy"].tolist()
        scores += measured["score"].tolist()
        eos += rollout.ended_with_eos.tolist()
        texts += batch_texts
    result = {"proxy_reward": float(np.mean(scores)), "kl": float(np.mean(kls)), "entropy": float(np.mean(entropies)),
              "eos_rate": float(np.mean(eos)), "n_samples": len(texts)}
    result |= evaluate_texts(prompts, texts, scores, gold)
    result["samples"] = sample_rows(prompts, texts, scores, result.pop("utilities", None), result.pop("styles", None), n_keep)
    return result


def evaluate_texts(prompts, texts, scores, gold) -> dict:
    """Detectors on the texts, plus gold utility, style shares and agreement when a gold is given
    (the benign refusal rate and style shares only where the gold has `benign` and `styles`)."""
    benign = gold.benign(prompts) if gold is not None and gold.benign is not None else None
    result = detector_summary(prompts, texts, benign=benign)
    if gold is not None:
        result |= world_stats(gold, prompts, texts, scores)
    return result


def sample_rows(prompts, texts, scores, utilities, styles, n_keep: int) -> list[dict]:
    rows = []
    for k in range(min(n_keep, len(texts))):
        row = {"prompt": prompts[k], "response": texts[k], "proxy": scores[k]}
        if utilities is not None:
            row["gold"] = utilities[k]
        if styles is not None:
            row["style"] = styles[k]
        rows.append(row)
    return rows


@dataclass
class SampleGrid:
    """n_max responses of the policy to each of n_prompts prompts, in prompt order, with their proxy scores."""
    prompts: list[str]
    texts: list[str]
    scores: np.ndarray  # (n_prompts, n_max)


@torch.no_grad()
def sample_grid(policy, reward_fn, tokenizer, records, n_max: int, n_prompts: int, sampling, *, engine,
                seed: int = 0, batch_size: int = 256, chunk_size: int = 32) -> SampleGrid:
    """Sample n_max responses for each of the first n_prompts prompts (cycling) with `engine` and score them
    (in length-sorted chunks of `chunk_size`, `over_length_chunks`)."""
    policy.eval()
    device = next(policy.parameters()).device
    chosen = [records[i % len(records)] for i in range(n_prompts)]
    prompts = [r.prompt for r in chosen for _ in range(n_max)]
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    generator = torch.Generator(device=device).manual_seed(seed + GRID_SEED_OFFSET)
    texts, scores = [], []
    for i in range(0, len(ids), batch_size):
        rollout = engine.generate(policy, ids[i:i + batch_size], sampling, generator)
        batch_prompts, batch_texts = prompts[i:i + batch_size], decode_responses(tokenizer, rollout)
        score = lambda s, a, p, rows: {"score": reward_fn(s, a, [batch_prompts[r] for r in rows],
                                                          [batch_texts[r] for r in rows])[0]}
        scores += over_length_chunks(score, rollout.sequences, rollout.attention_mask, rollout.prompt_ids.shape[1],
                                     chunk_size)["score"].tolist()
        texts += batch_texts
    return SampleGrid(prompts, texts, np.asarray(scores).reshape(n_prompts, n_max))


def best_of_n(grid: SampleGrid, ns: list[int], gold=None) -> list[dict]:
    """Best-of-n against the reward model for each n in `ns`: the grid's rows cut into groups of n.

    KL(best-of-n ‖ π) = log n − (n − 1)/n (Stiennon et al. 2020, appendix G.3).
    """
    n_prompts, n_max = grid.scores.shape
    rows = []
    for n in ns:
        groups = grid.scores.reshape(n_prompts, n_max // n, n)
        picks = [p * n_max + g * n + int(groups[p, g].argmax()) for p in range(n_prompts) for g in range(n_max // n)]
        pick_prompts, pick_texts = [grid.prompts[k] for k in picks], [grid.texts[k] for k in picks]
        pick_scores = [float(grid.scores.flat[k]) for k in picks]
        row = {"kind": "bon", "n": n, "label": f"best-of-{n}", "kl": float(best_of_n_kl(n)),
               "proxy_reward": float(np.mean(pick_scores)), "n_samples": len(picks)}
        row |= evaluate_texts(pick_prompts, pick_texts, pick_scores, gold)
        row.pop("rm_gold_agreement", None)  # defined for same-prompt pairs of one policy, not for picks
        row["samples"] = sample_rows(pick_prompts, pick_texts, pick_scores, row.pop("utilities", None), row.pop("styles", None), 16)
        rows.append(row)
    return rows


def kl_regularised_optima(grid: SampleGrid, betas: list[float], gold=None) -> list[dict]:
    """`kl_regularised_optimum` of the grid for each β: where an exact optimiser of r − β·KL would land."""
    utilities = np.asarray(gold.utilities(grid.prompts, grid.texts)).reshape(grid.scores.shape) if gold else None
    return [kl_regularised_optimum(grid.scores, beta, utilities) for beta in betas]
