"""`tether score`: r, KL to the reference and r − β·KL for given responses, for any list of β.

Two KLs per response y to a prompt x, both summed over the response's tokens:
- `kl_exact` = Σ_t KL(π(·|x, y<t) ‖ π_ref(·|x, y<t)): the exact KL of each next-token
  distribution along y (`tether.algos.kl_exact`); never negative, since both models
  are at hand. r − β·KL uses it by default (`--kl exact`).
- `log_ratio` = log π(y|x) − log π_ref(y|x) = Σ_t k1_t: the sampled-response estimate
  PPO uses; unbiased for KL(π ‖ π_ref) over samples of π, but for one given
  response (a hand-written one, which π may find unlikely) it can be negative, and
  r − β·KL then grows with β (`--kl sample`).
With `--prompts`, responses are first sampled from the policy. With `--gold`, each row also
gets its gold reward (`gold`) from a world or a reward model. The table is also drawn: r − β·KL
against β, one line per response (`tradeoff.png`).

A row is scored as the reward model was trained: prompt + response fitted to the
max_length and truncation kept in its tether.json (`trained_length_rule`), and the
policies see the same tokens. An empty response is scored at its EOS.
"""

from dataclasses import dataclass

import torch

from tether.algos import kl_exact, kl_k1
from tether.analysis.plots import plot_score_tradeoff
from tether.config import check_fields, opt, require
from tether.data import encode_prompt, encode_response, pad_left, read_prompts
from tether.data.collate import TRUNCATIONS, LengthRule
from tether.data.prompts import parse_prompt_row
from tether.data.records import read_records, settle, string_field
from tether.io import write_json_atomic
from tether.errors import InputError
from tether.models import load_causal_lm, load_tokenizer, resolve_device, set_seed
from tether.models.reward import trained_length_rule
from tether.pipelines.common import (dtype_name, frozen_dtype, frozen_dtype_opt, peak_memory_gb, prepare_run_dir,
                                     sample_responses)
from tether.pipelines.scoring import RewardFunction
from tether.rollout import SamplingConfig, policy_forward, response_logits, response_logprobs
from tether.worlds import resolve_gold


KL_KINDS = {"exact": "kl_exact", "sample": "log_ratio"}
"""--kl value → the row key r − β·KL subtracts."""


@dataclass
class ScoreConfig:
    """Score responses with a reward model and a KL penalty to a reference policy."""
    policy: str = opt("", "policy directory whose log-probs give the KL (the tuned model)")
    ref_policy: str = opt("", "reference policy directory (normally the SFT model)")
    reward_model: str = opt("", "reward-model directory")
    gold: str | None = opt(None, "gold reward to report beside r: a built-in world's name (assistant) or a reward-model directory")
    responses: str | None = opt(None, "JSONL of {prompt, response} rows to score")
    prompts: str | None = opt(None, "or: prompts JSONL; one response per prompt is sampled from --policy")
    betas: list[float] = opt([0.0, 0.01, 0.05, 0.1, 0.5, 1.0], "KL coefficients to report r - beta*KL for", ge=0)
    kl: str = opt("exact", "KL in r - beta*KL: exact (summed KL of the next-token distributions along the response, "
                           ">= 0) or sample (log pi(y|x) - log pi_ref(y|x) of the response: PPO's estimate, can be negative)", choices=tuple(KL_KINDS))
    max_new_tokens: int = opt(48, "longest sampled response (with --prompts)", ge=1)
    batch_size: int = opt(64, "rows per forward", ge=1)
    max_length: int | None = opt(None, "longest prompt+response in tokens; None: the reward model's own (tether.json from rm train, else its position limit)", ge=2)
    truncation: str | None = opt(None, "longer rows: left, right, skip or error; None: the reward model's own (tether.json, else left)", choices=TRUNCATIONS)
    skip_invalid: bool = opt(False, "skip invalid rows of --responses or --prompts and report them by reason, instead of stopping at the first")
    out: str = opt("", "directory for scores.json")
    seed: int = opt(0, "random seed (sampling)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = frozen_dtype_opt("the policy, the reference policy, the reward model and a reward-model gold (none "
                                  "is trained)", "; log-probs, KLs and scores are float32 either way")

    def __post_init__(self):
        check_fields(self)
        for name in ("policy", "ref_policy", "reward_model", "out"):
            require(bool(getattr(self, name)), name, f"--{name.replace('_', '-')} is required")
        require((self.responses is None) != (self.prompts is None), "responses", "give exactly one of --responses or --prompts")
        resolve_gold(self.gold)  # InputError naming the known golds


def parse_response_row(row: dict, path, line: int) -> tuple:
    """(prompt, response, line) of a row {prompt | messages, response}; the response is a string, maybe empty."""
    _, record = parse_prompt_row(row, path, line)
    if "response" not in row:
        raise InputError("missing field", path=path, line=line, field="response")
    return record.prompt, string_field(row["response"], path, line, "response"), line


def read_responses(path, skip_invalid: bool = False) -> list[tuple]:
    """(prompt, response, line) rows of a JSONL file; invalid rows as in `tether.data.read_pairs`."""
    rows, problems = read_records(path, parse_response_row)
    return settle(rows, problems, path, skip_invalid)


def fit_rows(rows, tokenizer, rule: LengthRule) -> tuple[list[tuple], list[tuple[list[int], list[int]]]]:
    """(the rows kept, their (prompt ids, response ids)) under the reward model's length rule; the rows
    over max_length are counted in one line on stderr."""
    kept, ids = [], []
    for prompt, response, line in rows:
        fitted = rule.fit(encode_prompt(tokenizer, prompt), [encode_response(tokenizer, response)], line, ("response",))
        if fitted is not None:
            kept.append((prompt, response))
            ids.append((fitted[0], fitted[1][0]))
    rule.report("rows", len(rows))
    return kept, ids


@torch.no_grad()
def score_rows(policy, ref, reward_fn, tokenizer, rows, ids, betas, batch_size, device, kl: str = "exact") -> list[dict]:
    """For each (prompt, response) with its token ids (`fit_rows`): reward, `log_ratio` = Σ_t (log π − log π_ref),
    `kl_exact` = Σ_t KL(π_t ‖ π_ref,t) over the response tokens, and r − β·KL per β with the KL that `kl` names
    (`KL_KINDS`)."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        prompt_ids, prompt_mask = pad_left([p for p, _ in ids[i:i + batch_size]], tokenizer.pad_token_id)
        responses = [r for _, r in ids[i:i + batch_size]]
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
    """Score the rows (sampled first with --prompts); write OUT/scores.json (with the weight dtype and peak memory)
    and tradeoff.png, print the table."""
    device = resolve_device(cfg.device)
    dtype = frozen_dtype(cfg.dtype, device)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    policy = load_causal_lm(cfg.policy, device, field="policy", dtype=dtype)
    ref = load_causal_lm(cfg.ref_policy, device, field="ref_policy", dtype=dtype)
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, device, dtype=dtype)
    max_length, truncation = trained_length_rule(cfg.reward_model, reward_fn.model.config, cfg.max_length,
                                                 cfg.truncation, field="reward_model")
    if cfg.responses:
        rows = read_responses(cfg.responses, cfg.skip_invalid)
    else:
        records = read_prompts(cfg.prompts, skip_invalid=cfg.skip_invalid)
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        texts, _ = sample_responses(policy, tokenizer, [encode_prompt(tokenizer, r.prompt) for r in records], sampling,
                                    generator, cfg.batch_size)
        rows = [(r.prompt, text, r.source_line) for r, text in zip(records, texts)]
    rows, ids = fit_rows(rows, tokenizer, LengthRule(max_length, truncation, cfg.responses or cfg.prompts))
    scored = score_rows(policy, ref, reward_fn, tokenizer, rows, ids, cfg.betas, cfg.batch_size, device, cfg.kl)
    gold = resolve_gold(cfg.gold, device=device, dtype=dtype)
    if gold is not None:
        for row, g in zip(scored, gold.utilities([p for p, _ in rows], [r for _, r in rows])):
            row["gold"] = g
    out = prepare_run_dir(cfg.out, cfg)
    means = {key: sum(r[key] for r in scored) / len(scored) for key in ("reward", "kl_exact", "log_ratio")}
    if gold is not None:
        means["gold_reward"] = sum(r["gold"] for r in scored) / len(scored)  # as in sweep.json
    means["objective"] = {f"{b:g}": means["reward"] - b * means[KL_KINDS[cfg.kl]] for b in cfg.betas}
    write_json_atomic(out / "scores.json", {"betas": cfg.betas, "kl": KL_KINDS[cfg.kl], "dtype": dtype_name(dtype),
                                            "memory/peak_gb": peak_memory_gb(device), "mean": means, "rows": scored})
    plot_score_tradeoff(scored, cfg.betas, out / "tradeoff.png")
    print_table(scored, cfg.betas, cfg.kl)
    gold_text = f"  gold {means['gold_reward']:.3f}" if gold is not None else ""
    print(f"mean: reward {means['reward']:.3f}  KL {means['kl_exact']:.3f}  log-ratio {means['log_ratio']:.3f}{gold_text}  "
          f"written to {out / 'scores.json'} and {out / 'tradeoff.png'}")
    return scored
