"""`tether score`: r, KL to the reference and r − β·KL for given responses, for any list of β.

Two KLs per response y to a prompt x, both summed over the response's tokens:
- `kl_exact` = Σ_t KL(π(·|x, y<t) ‖ π_ref(·|x, y<t)): the exact KL of each next-token
  distribution along y (`tether.algos.kl_exact`); never negative, since both models
  are at hand. r − β·KL uses it by default (`--kl exact`).
- `log_ratio` = log π(y|x) − log π_ref(y|x) = Σ_t k1_t: the sampled-response estimate
  PPO uses; unbiased for KL(π ‖ π_ref) over samples of π, but for one given
  response (a hand-written one, which π may find unlikely) it can be negative, and
  r − β·KL then grows with β (`--kl sample`).
With `--prompts`, responses are first sampled from the policy. The table is also
drawn: r − β·KL against β, one line per response (`tradeoff.png`).
"""

from dataclasses import dataclass

import torch

from tether.algos import kl_exact, kl_k1
from tether.analysis.plots import plot_score_tradeoff
from tether.config import check_fields, opt, require
from tether.data import encode_prompt, encode_response, pad_left, read_prompts
from tether.io import write_json_atomic
from tether.errors import InputError
from tether.models import load_causal_lm, load_tokenizer, resolve_device, set_seed
from tether.pipelines.common import prepare_run_dir, sample_responses
from tether.pipelines.scoring import RewardFunction
from tether.rollout import SamplingConfig, policy_forward, response_logits, response_logprobs


KL_KINDS = {"exact": "kl_exact", "sample": "log_ratio"}
"""--kl value → the row key r − β·KL subtracts."""


@dataclass
class ScoreConfig:
    """Score responses with a reward model and a KL penalty to a reference policy."""
    policy: str = opt("", "policy directory whose log-probs give the KL (the tuned model)")
    ref_policy: str = opt("", "reference policy directory (normally the SFT model)")
    reward_model: str = opt("", "reward-model directory")
    responses: str | None = opt(None, "JSONL of {prompt, response} rows to score")
    prompts: str | None = opt(None, "or: prompts JSONL; one response per prompt is sampled from --policy")
    betas: list[float] = opt([0.0, 0.01, 0.05, 0.1, 0.5, 1.0], "KL coefficients to report r - beta*KL for", ge=0)
    kl: str = opt("exact", "KL in r - beta*KL: exact (summed KL of the next-token distributions along the response, "
                           ">= 0) or sample (log pi(y|x) - log pi_ref(y|x) of the response: PPO's estimate, can be negative)")
    max_new_tokens: int = opt(48, "longest sampled response (with --prompts)", ge=1)
    batch_size: int = opt(64, "rows per forward", ge=1)
    out: str = opt("", "directory for scores.json")
    seed: int = opt(0, "random seed (sampling)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")

    def __post_init__(self):
        check_fields(self)
        for name in ("policy", "ref_policy", "reward_model", "out"):
            require(bool(getattr(self, name)), name, f"--{name.replace('_', '-')} is required")
        require((self.responses is None) != (self.prompts is None), "responses", "give exactly one of --responses or --prompts")
        require(self.kl in KL_KINDS, "kl", f"must be one of {', '.join(KL_KINDS)}, got {self.kl!r}")


def read_responses(path) -> list[tuple]:
    """(prompt, response) rows of a JSONL file, validated with the data layer's messages."""
    pairs = []
    for rec in read_prompts(path):
        response = rec.extra.get("response")
        if not isinstance(response, str) or not response.strip():
            raise InputError("missing or empty string", path=path, line=rec.source_line, field="response")
        pairs.append((rec.prompt, response))
    return pairs


@torch.no_grad()
def score_rows(policy, ref, reward_fn, tokenizer, rows, betas, batch_size, device, kl: str = "exact") -> list[dict]:
    """For each (prompt, response): reward, `log_ratio` = Σ_t (log π − log π_ref), `kl_exact` = Σ_t KL(π_t ‖ π_ref,t)
    over the response tokens, and r − β·KL per β with the KL that `kl` names (`KL_KINDS`)."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        prompt_ids, prompt_mask = pad_left([encode_prompt(tokenizer, p) for p, _ in chunk], tokenizer.pad_token_id)
        responses = [encode_response(tokenizer, r) for _, r in chunk]
        width = max(map(len, responses))
        resp_ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in responses])
        resp_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in responses]).to(device)
        seqs = torch.cat([prompt_ids, resp_ids], 1).to(device)
        attn = torch.cat([prompt_mask.to(device), resp_mask], 1)
        P = prompt_ids.shape[1]
        logits, ref_logits = policy_forward(policy, seqs, attn, P), policy_forward(ref, seqs, attn, P)
        log_ratio = (kl_k1(response_logprobs(logits, seqs, P, 1.0), response_logprobs(ref_logits, seqs, P, 1.0)) * resp_mask).sum(1)
        exact = (kl_exact(response_logits(logits, seqs, P, 1.0), response_logits(ref_logits, seqs, P, 1.0)) * resp_mask).sum(1)
        rewards = reward_fn(seqs, attn, [p for p, _ in chunk], [r for _, r in chunk])[0]
        for (prompt, response), r, k1, k in zip(chunk, rewards.tolist(), log_ratio.tolist(), exact.tolist()):
            row = {"prompt": prompt, "response": response, "reward": r, "log_ratio": k1, "kl_exact": k}
            out.append({**row, "objective": {f"{b:g}": r - b * row[KL_KINDS[kl]] for b in betas}})
    return out


def print_table(rows, betas, kl: str = "exact", file=None) -> None:
    """One line per row: reward, both KLs and r − β·KL per β (to `file`, default the current sys.stdout)."""
    head = (f"{'#':>4} {'reward':>8} {'KL':>8} {'log-ratio':>9} "
            + " ".join(f"{'β=' + format(b, 'g'):>9}" for b in betas) + "  response")
    print(head, file=file)
    for i, row in enumerate(rows):
        cells = " ".join(f"{row['objective'][format(b, 'g')]:>9.3f}" for b in betas)
        text = row["response"].replace("\n", " ")
        print(f"{i:>4} {row['reward']:>8.3f} {row['kl_exact']:>8.3f} {row['log_ratio']:>9.3f} {cells}  {text[:60]}", file=file)
    print(f"KL: Σ_t KL(π(·|x,y<t) ‖ π_ref(·|x,y<t)) over the response (≥ 0); log-ratio: log π(y|x) − log π_ref(y|x); "
          f"β columns: reward − β·{'KL' if kl == 'exact' else 'log-ratio'}", file=file)


def run_score(cfg: ScoreConfig) -> list[dict]:
    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    policy = load_causal_lm(cfg.policy, device, field="policy")
    ref = load_causal_lm(cfg.ref_policy, device, field="ref_policy")
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, device)
    if cfg.responses:
        rows = read_responses(cfg.responses)
    else:
        prompts = [r.prompt for r in read_prompts(cfg.prompts)]
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        texts, _ = sample_responses(policy, tokenizer, [encode_prompt(tokenizer, p) for p in prompts], sampling, generator, cfg.batch_size)
        rows = list(zip(prompts, texts))
    scored = score_rows(policy, ref, reward_fn, tokenizer, rows, cfg.betas, cfg.batch_size, device, cfg.kl)
    out = prepare_run_dir(cfg.out, cfg)
    means = {key: sum(r[key] for r in scored) / len(scored) for key in ("reward", "kl_exact", "log_ratio")}
    means["objective"] = {f"{b:g}": means["reward"] - b * means[KL_KINDS[cfg.kl]] for b in cfg.betas}
    write_json_atomic(out / "scores.json", {"betas": cfg.betas, "kl": KL_KINDS[cfg.kl], "mean": means, "rows": scored})
    plot_score_tradeoff(scored, cfg.betas, out / "tradeoff.png")
    print_table(scored, cfg.betas, cfg.kl)
    print(f"mean: reward {means['reward']:.3f}  KL {means['kl_exact']:.3f}  log-ratio {means['log_ratio']:.3f}  "
          f"written to {out / 'scores.json'} and {out / 'tradeoff.png'}")
    return scored
