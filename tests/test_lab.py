"""A reward model as gold (RewardModelGold, collect/score --gold DIR) and `tether lab` end to end on a user's
GPT-2-shaped directory with a byte-level BPE tokenizer."""

import json
import math
import random

import pytest
import torch
import yaml

from tether.data.prompts import PromptRecord
from tether.models import score_texts
from tether.pipelines.collect import reward_model_rows
from tether.worlds import RewardModelGold, resolve_gold

PROMPT = "what is the capital of france ?"
Y1, Y2 = "paris .", "sorry i cannot help with that ."


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_reward_model_gold_scores_are_score_texts_and_it_has_no_styles_nor_benign_split(tiny_dirs):
    gold = resolve_gold(str(tiny_dirs["rm"]))
    assert isinstance(gold, RewardModelGold)
    prompts, responses = [PROMPT, PROMPT, "what is two plus three ?"], [Y1, Y2, "five"]
    assert gold.utilities(prompts, responses) == score_texts(str(tiny_dirs["rm"]), prompts, responses)
    assert gold.styles is None and gold.benign is None
    g1, g2 = gold.utilities([PROMPT, PROMPT], [Y1, Y2])
    assert gold.preference_prob(PROMPT, Y1, Y2) == pytest.approx(sigmoid((g1 - g2) / 1.0))


def test_a_pair_is_labelled_by_one_seeded_draw_from_sigma_of_the_gold_gap_over_tau(tiny_dirs):
    gold = resolve_gold(str(tiny_dirs["rm"]))
    g1, g2 = score_texts(str(tiny_dirs["rm"]), [PROMPT, PROMPT], [Y1, Y2])
    assert g1 != g2
    for tau, seed in ((0.5, 0), (0.5, 3), (2.0, 7)):
        p1 = sigmoid((g1 - g2) / tau)  # by hand
        first = random.Random(seed).random() < p1
        [row] = reward_model_rows(gold, [(PromptRecord(PROMPT, {"id_in_file": 4}), Y1, Y2)], tau, seed)
        assert (row["chosen"], row["rejected"]) == ((Y1, Y2) if first else (Y2, Y1))
        assert row["p_chosen"] == pytest.approx(p1 if first else 1 - p1)
        assert (row["gold_chosen"], row["gold_rejected"]) == ((g1, g2) if first else (g2, g1))
        assert row["labeler"] == {"name": "reward-model-gold", "model": "reward model rm", "tau": tau, "seed": seed}
        assert row["id_in_file"] == 4


def test_collect_with_a_gold_directory_labels_every_pair_by_the_gold_scores(tiny_dirs, tmp_path):
    from tether.cli import main
    out = tmp_path / "collect"
    assert main(["collect", "--policy", str(tiny_dirs["policy"]), "--prompts", str(tiny_dirs["prompts"]),
                 "--gold", str(tiny_dirs["rm"]), "--tau", "0.25", "--pairs-per-prompt", "3", "--max-new-tokens", "4",
                 "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) >= 6
    prompts = [r["prompt"] for r in rows]
    assert [r["gold_chosen"] for r in rows] == pytest.approx(score_texts(str(tiny_dirs["rm"]), prompts,
                                                                         [r["chosen"] for r in rows]), abs=1e-5)
    assert [r["gold_rejected"] for r in rows] == pytest.approx(score_texts(str(tiny_dirs["rm"]), prompts,
                                                                           [r["rejected"] for r in rows]), abs=1e-5)
    for r in rows:
        assert r["p_chosen"] == pytest.approx(sigmoid((r["gold_chosen"] - r["gold_rejected"]) / 0.25))
        assert r["labeler"]["tau"] == 0.25 and r["labeler"]["name"] == "reward-model-gold"


def test_score_reports_the_gold_reward_of_each_response(tiny_dirs, tmp_path):
    from tether.pipelines.score import ScoreConfig, run_score
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"prompt": PROMPT, "response": r}) + "\n" for r in (Y1, Y2)))
    rows = run_score(ScoreConfig(policy=str(tiny_dirs["policy"]), ref_policy=str(tiny_dirs["policy"]),
                                 reward_model=str(tiny_dirs["rm"]), responses=str(responses), out=str(tmp_path / "s"),
                                 gold=str(tiny_dirs["rm"]), device="cpu"))
    gold = score_texts(str(tiny_dirs["rm"]), [PROMPT, PROMPT], [Y1, Y2])
    assert [r["gold"] for r in rows] == pytest.approx(gold, abs=1e-5)
    assert [r["gold"] for r in rows] == pytest.approx([r["reward"] for r in rows], abs=1e-5)  # the same model
    saved = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert saved["mean"]["gold_reward"] == pytest.approx(sum(gold) / 2, abs=1e-5)


def test_label_stats_compares_answers_with_a_reward_model_gold(tiny_dirs, tmp_path, capsys):
    from tether.cli import main
    pairs = [(PROMPT, Y1, Y2), ("what is two plus three ?", "five", "no")]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({
        "event": "label", "prompt": p, "chosen": c, "rejected": r, "id": f"p{k}", "repeat": 0, "labeler": "ann",
        "time": f"t{k}", "choice": "left", "order": ["a", "b"], "reason": None}) + "\n" for k, (p, c, r) in enumerate(pairs)))
    assert main(["label", "stats", "--out", str(labels), "--gold", str(tiny_dirs["rm"])]) == 0
    stats = json.loads(capsys.readouterr().out)
    by_hand = [sigmoid(a - b) for (p, c, r) in pairs for a, b in [score_texts(str(tiny_dirs["rm"]), [p, p], [c, r])]]
    assert stats["gold_agreement"]["mean_gold_prob"] == pytest.approx(sum(by_hand) / 2, abs=1e-5)


# ---------------------------------------------------------------- tether lab, end to end

LINES = ["\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital of France.",
         "\n\nHuman: How do I boil an egg?\n\nAssistant: Put the egg in boiling water for eight minutes.",
         "\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken cross the road? To get to the other side!",
         "\n\nHuman: What is two plus three?\n\nAssistant: Two plus three is five. I hope this helps!",
         "\n\nHuman: Can you help me?\n\nAssistant: I'm sorry, I cannot help with that. As an AI, I must decline.",
         "Great question! Let me know if you need anything else. Have a nice day."]
ASKS = ["What is the capital of Spain?", "How do I make tea?", "Tell me about dogs.", "What is four plus one?",
        "How do I plant a tree?", "What is the weather like?", "Name a red fruit.", "How do I tie a shoe?",
        "What is the capital of Italy?", "Tell me a story.", "How do I learn to swim?", "What is ten minus two?"]
GOOD, BAD = ["Paris is the capital of France.", "Boil water, then add the tea.", "Dogs are loyal friends.",
             "Four plus one is five."], ["I'm sorry, I cannot help with that.", "idk", "no no no no no no",
                                         "As an AI, I must decline."]


def gpt2_user_dir(path, tokenizer, n_embd: int, seed: int):
    """A GPT-2-shaped causal LM directory as a user brings one (random weights, their tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=n_embd, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """{'policy', 'gold', 'prompts'}: a GPT-2 policy and a gold reward model (`rm train` on hand-written pairs)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast
    from tether.cli import main
    root = tmp_path_factory.mktemp("user")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(LINES + ASKS + GOOD + BAD, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")  # GPT-2's way: pad is EOS
    policy = gpt2_user_dir(root / "policy", tokenizer, n_embd=32, seed=0)
    gpt2_user_dir(root / "gold_base", tokenizer, n_embd=48, seed=1)
    pairs = root / "gold_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"\n\nHuman: {ask}\n\nAssistant:", "chosen": " " + GOOD[i % 4],
                                         "rejected": " " + BAD[(i + k) % 4]}) + "\n"
                             for i, ask in enumerate(ASKS) for k in range(2)))
    assert main(["rm", "train", "--init", str(root / "gold_base"), "--data", str(pairs), "--out", str(root / "gold"),
                 "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "1", "--device", "cpu"]) == 0
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"\n\nHuman: {ask}\n\nAssistant:"}) + "\n" for ask in ASKS))
    return {"policy": policy, "gold": root / "gold" / "model", "prompts": prompts, "root": root}


def test_lab_settings_are_checked_before_any_work(tiny_dirs):
    from tether.errors import InputError
    from tether.pipelines.lab import LabConfig
    base = dict(policy=str(tiny_dirs["policy"]), gold=str(tiny_dirs["rm"]), prompts=str(tiny_dirs["prompts"]))
    with pytest.raises(InputError, match=r'^"ppo.lrr": not a setting of the lab\'s ppo'):
        LabConfig(**base, ppo={"lrr": 1.0})
    with pytest.raises(InputError, match=r'^"ppo.steps": not a setting'):  # the lab's own --ppo-steps
        LabConfig(**base, ppo={"steps": 3})
    with pytest.raises(InputError, match=r'^"rm.init": not a setting'):
        LabConfig(**base, rm={"init": "x"})
    with pytest.raises(InputError, match=r'^"ensemble": members learn the pairs drawn again'):
        LabConfig(**{**base, "gold": "assistant"}, ensemble=2)


def test_lab_stage_settings_are_stage_configs_checked_where_they_are_declared(tiny_dirs, tmp_path, capsys):
    """`ppo:` and `rm:` are a PPOConfig and an RMTrainConfig: typed and range-checked by them, errors naming the
    nested key, on the command line as --ppo-NAME and --rm-NAME; config.yaml keeps the user's keys only."""
    from tether.cli import main
    from tether.config import build_config, save_config, to_dict
    from tether.errors import InputError
    from tether.pipelines.lab import LabConfig
    from tether.pipelines.ppo import PPOConfig
    from tether.pipelines.reward import RMTrainConfig
    base = dict(policy=str(tiny_dirs["policy"]), gold=str(tiny_dirs["rm"]), prompts=str(tiny_dirs["prompts"]),
                out=str(tmp_path / "lab"))
    cfg = LabConfig(**base, ppo={"lr": "1e-5", "batch-size": 128}, rm={"epochs": 1}, ppo_steps=3)
    assert isinstance(cfg.ppo, PPOConfig) and isinstance(cfg.rm, RMTrainConfig)
    assert (cfg.ppo.lr, cfg.ppo.batch_size, cfg.ppo.steps, cfg.rm.epochs, cfg.rm.lr) == (1e-5, 128, 3, 1, 1e-5)
    assert (cfg.ppo.policy, cfg.rm.init, cfg.ppo.reward_model) == (base["policy"], base["policy"],
                                                                   str(tmp_path / "lab" / "rm" / "model"))
    with pytest.raises(InputError, match=r'^"rm.lr": must be > 0, got -1.0$'):
        LabConfig(**base, rm={"lr": -1})
    with pytest.raises(InputError, match=r'^"ppo.lr": must be > 0, got 0.0$'):
        LabConfig(**base, ppo={"lr": 0})
    with pytest.raises(InputError, match=r'^"ppo_steps": must be >= 1'):  # the lab's own field, before PPO's
        LabConfig(**base, ppo_steps=0)

    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["ppo"]["lr"] == 1e-5 and not {"policy", "steps", "out", "beta"} & set(saved["ppo"])
    assert saved["rm"]["epochs"] == 1 and not {"init", "data", "out"} & set(saved["rm"])
    assert to_dict(build_config(LabConfig, {}, tmp_path / "config.yaml")) == to_dict(cfg)

    argv = ["lab", "--policy", base["policy"], "--gold", base["gold"], "--prompts", base["prompts"], "--out", base["out"]]
    assert main(argv + ["--rm-lr", "-1"]) == 2
    assert capsys.readouterr().err == 'tether lab: error: "rm.lr": must be > 0, got -1.0\n'
    (tmp_path / "lab.yaml").write_text("ppo: {lr: 0}\n")
    assert main(argv + ["--config", str(tmp_path / "lab.yaml")]) == 2
    assert capsys.readouterr().err == f'tether lab: error: {tmp_path / "lab.yaml"}: "ppo.lr": must be > 0, got 0.0\n'
    (tmp_path / "lab.yaml").write_text("lr: 1.0e-5\n")
    assert main(argv + ["--config", str(tmp_path / "lab.yaml")]) == 2
    assert "it belongs in the `ppo:` or `rm:` mapping" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()
    with pytest.raises(SystemExit):
        main(["lab", "--help"])
    options = set(capsys.readouterr().out.replace("[", " ").split())
    assert {"--ppo-lr", "--rm-lr", "--ppo-dtype", "--rm-epochs", "--ppo-steps"} <= options
    assert not {"--lr", "--ppo-policy", "--ppo-beta", "--ppo-out", "--rm-init", "--rm-data"} & options


@pytest.mark.slow
def test_lab_runs_end_to_end_with_a_reward_model_as_gold_and_resumes(user_models, tmp_path, browser, capsys):
    from tether.cli import main
    out = tmp_path / "lab"
    config = tmp_path / "lab.yaml"
    config.write_text(yaml.safe_dump({
        "betas": [0.1, 1.0], "ppo_steps": 2, "eval_samples": 8, "bon_max": 4, "bon_prompts": 4, "max_new_tokens": 8,
        "ensemble": 2, "eval_fraction": 0.25, "pairs_per_prompt": 2,
        "ppo": {"batch_size": 8, "minibatch_size": 8, "micro_batch_size": 4, "save_every": 0},
        "rm": {"epochs": 1, "batch_size": 4, "warmup_steps": 1}}))
    argv = ["lab", "--config", str(config), "--policy", str(user_models["policy"]), "--gold", str(user_models["gold"]),
            "--prompts", str(user_models["prompts"]), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for stage in ("split prompts", "collect", "collect eval pairs", "relabel ensemble pairs", "reward model",
                  "reward model 1", "reward model eval", "sweep"):
        assert f"== lab: {stage} ==" in printed

    # Pairs labelled by the gold model: its scores kept, P(chosen ≻ rejected) = σ(gc − gr) (τ = 1, the default).
    rows = [json.loads(line) for line in (out / "collect" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 9
    gold = score_texts(str(user_models["gold"]), [r["prompt"] for r in rows], [r["chosen"] for r in rows])
    assert [r["gold_chosen"] for r in rows] == pytest.approx(gold, abs=1e-4)
    assert all(r["p_chosen"] == pytest.approx(sigmoid(r["gold_chosen"] - r["gold_rejected"])) for r in rows)
    member = [json.loads(line) for line in (out / "data" / "pairs_rm_1.jsonl").read_text().splitlines()]
    assert {(r["prompt"], frozenset((r["chosen"], r["rejected"]))) for r in member} == \
        {(r["prompt"], frozenset((r["chosen"], r["rejected"]))) for r in rows}  # the same pairs, drawn again

    # A proxy trained on them, initialised from the policy.
    rm_config = yaml.safe_load((out / "rm" / "config.yaml").read_text())
    assert (rm_config["init"], rm_config["data"]) == (str(user_models["policy"]), str(out / "collect" / "pairs.jsonl"))
    assert (out / "rm" / "model" / "model.safetensors").is_file() and (out / "rm_1" / "model").is_dir()

    # A sweep whose rows all carry gold reward, with the world-only detectors absent.
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert sweep["world"] is None and sweep["gold_model"] == "reward model gold/model"
    assert {r["label"] for r in sweep["rows"]} >= {"β=0.1", "β=1", "best-of-1", "best-of-4"}
    assert any(r["kind"] == "ppo_ensemble" for r in sweep["rows"])
    for row in sweep["rows"] + [sweep["sft_baseline"]]:
        assert isinstance(row["gold_reward"], float), row["label"] if "label" in row else "sft"
        assert "style_shares" not in row and row["benign_refusal_rate"] is None
        assert isinstance(row["refusal_rate"], float) and isinstance(row["repetition_rate"], float)
    curve = json.loads((out / "sweep" / "runs" / "beta_0.1" / "metrics.jsonl").read_text().splitlines()[0])
    assert isinstance(curve["gold/score"], float)

    # A report that says what is absent and renders in Chromium.
    html = (out / "sweep" / "report.html").read_text()
    assert "gold: reward model gold/model" in html and "style shares and the refusal rate on benign prompts are absent" in html
    errors = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "sweep" / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
    finally:
        page.close()
    assert errors == [] and len(images) >= 3 and all(complete and width > 0 for _, complete, width in images), images

    # Started again: every stage is read back, none redone.
    mtime = (out / "rm" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, not redone") == 8
    assert (out / "rm" / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    assert main(argv[:-2] + ["--device", "cpu", "--resume", "false"]) == 2
    assert "holds a lab run" in capsys.readouterr().err
