"""Real preference data as it comes (issue 17, item 1): Anthropic HH-shaped rows written by hand, with
multi-turn transcripts, an empty chosen and an empty rejected response, a row far over the length limit,
non-ASCII text and Windows line ends; empty responses, truncation rules and --skip-invalid on every command."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tether.cli import main
from tether.data import collate_pairs, read_pairs, tokenize_pairs
from tether.data.check import DataCheckConfig, run_data_check
from tether.errors import InputError
from tether.label.pairs import load_items
from tether.models import load_tokenizer
from tether.models.reward import trained_length_rule
from tether.pipelines.sft import SFTConfig, tokenize_sft
from tether.data import read_sft_examples

H, A = "\n\nHuman:", "\n\nAssistant:"
LONG_QUESTION = " ".join(["a b c d e f g h"] * 40)  # 320 words: over rm eval's old default 256 and the model's 64 positions
CRLF_PROMPT = "\r\n\r\nHuman: what is e f g ?\r\n\r\nAssistant:"


def hh_raw_rows() -> list[dict]:
    """Six HH rows as the data set has them (implicit prompt, raw transcripts)."""
    history = f"{H} what is two plus three ?{A} five .{H} great question ?{A} yes ."
    return [
        {"chosen": f"{history}{H} a b c ?{A} d e f .", "rejected": f"{history}{H} a b c ?{A} sorry i cannot help ."},
        {"chosen": f"{H} what is the capital of france ?{A}", "rejected": f"{H} what is the capital of france ?{A} no ."},
        {"chosen": f"{H} what is two plus three ?{A} five .", "rejected": f"{H} what is two plus three ?{A}"},
        {"chosen": f"{H} {LONG_QUESTION} ?{A} yes .", "rejected": f"{H} {LONG_QUESTION} ?{A} no no no ."},
        {"chosen": f"{H} Quelle est la capitale ? 首都{A} paris — très bien .", "rejected": f"{H} Quelle est la capitale ? 首都{A} 東京 ."},
        {"chosen": f"{CRLF_PROMPT} h .", "rejected": f"{CRLF_PROMPT} i hope this helps !"},
    ]


def write_hh(path, rows=None):
    """The rows as JSON Lines with Windows line ends (CRLF), as a file saved on Windows has them."""
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows or hh_raw_rows()).encode())
    return path


@pytest.fixture
def hh_file(tmp_path):
    return write_hh(tmp_path / "hh.jsonl")


# ---------------------------------------------------------------- reading


def test_hh_rows_read_as_they_come(hh_file):
    pairs = read_pairs(hh_file)
    assert [p.source_line for p in pairs] == [1, 2, 3, 4, 5, 6]
    multi, empty_chosen, empty_rejected, _, foreign, crlf = pairs
    assert multi.prompt.count(A) == 3 and multi.prompt.endswith(f"{H} a b c ?{A}") and multi.chosen == " d e f ."
    assert (empty_chosen.chosen, empty_chosen.rejected) == ("", " no .")
    assert (empty_rejected.chosen, empty_rejected.rejected) == (" five .", "")
    assert foreign.prompt.endswith("首都" + A) and foreign.chosen == " paris — très bien ."
    assert (crlf.prompt, crlf.chosen) == (CRLF_PROMPT, " h .")  # split at "\r\n\r\nAssistant:"


def test_conversational_reply_with_empty_content_is_data(tmp_path):
    user = {"role": "user", "content": "what is two plus three ?"}
    row = {"chosen": [user, {"role": "assistant", "content": ""}], "rejected": [user, {"role": "assistant", "content": "no"}]}
    (tmp_path / "c.jsonl").write_text(json.dumps(row) + "\n")
    pair, = read_pairs(tmp_path / "c.jsonl")
    assert pair.prompt == [user] and pair.chosen == [{"role": "assistant", "content": ""}]


@pytest.mark.parametrize("row, field, message", [
    ({"chosen": f"{H} q ?{A}", "rejected": f"{H} q ?{A}"}, "rejected", "chosen identical to rejected"),
    ({"prompt": " \r\n", "chosen": "", "rejected": "a"}, "prompt", "empty string"),
    ({"prompt": "p", "chosen": "", "rejected": ""}, "rejected", "chosen identical to rejected"),
])
def test_what_stays_an_error(tmp_path, row, field, message):
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match=f'p.jsonl:1: "{field}": {message}'):
        read_pairs(tmp_path / "p.jsonl")


def test_data_check_counts_empty_responses(hh_file, capsys):
    stats = run_data_check(DataCheckConfig(file=str(hh_file)))
    assert stats["valid"] == 6 and stats["empty"] == {"chosen": 1, "rejected": 1}
    assert "empty chosen: 1, empty rejected: 1" in capsys.readouterr().out


# ---------------------------------------------------------------- tokens


def test_empty_response_is_its_eos_and_scored_there(hh_policy, hh_file):
    tokenizer = load_tokenizer(hh_policy)
    eos = tokenizer.eos_token_id
    pairs = read_pairs(hh_file)[1:3]
    tokens = tokenize_pairs(pairs, tokenizer, max_length=64)
    prompt_ids = [tokenizer(p.prompt)["input_ids"] for p in pairs]
    assert tokens.chosen_ids[0] == prompt_ids[0] + [eos]  # empty chosen: the prompt, then EOS
    assert tokens.rejected_ids[1] == prompt_ids[1] + [eos]  # empty rejected
    batch = collate_pairs(tokens.chosen_ids, tokens.rejected_ids, tokenizer.pad_token_id)
    ids = batch["input_ids"]
    assert ids[0, batch["chosen_last"][0]] == eos and ids[1, batch["rejected_last"][1]] == eos
    assert batch["segments"][0, batch["chosen_last"][0]] == 1  # the EOS is the chosen side's own token


def test_sft_truncation_rules(hh_policy, tmp_path, capsys):
    tokenizer = load_tokenizer(hh_policy)
    eos = tokenizer.eos_token_id
    rows = [{"prompt": "what is two plus three ?", "completion": " five ."},
            {"prompt": "a b c ?", "completion": " " + LONG_QUESTION},
            {"prompt": "what is e f g ?", "completion": ""}]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = read_sft_examples(path)
    assert SFTConfig(data=str(path)).truncation == "right"
    right = tokenize_sft(examples, tokenizer, 12, path, "right")
    prompt = tokenizer("a b c ?")["input_ids"]
    assert right[1] == (prompt + tokenizer(" " + LONG_QUESTION, add_special_tokens=False)["input_ids"][:8], 4)
    assert right[2][0][-1] == eos and right[2][0][:-1] == tokenizer("what is e f g ?")["input_ids"]  # empty: EOS
    assert capsys.readouterr().err == (f"tether: 1 of 3 rows of {path} longer than max_length 12 tokens "
                                       "truncated (the response's end cut); line 2\n")
    assert len(tokenize_sft(examples, tokenizer, 12, path, "skip")) == 2
    assert "skipped; line 2" in capsys.readouterr().err
    with pytest.raises(InputError, match=f'{path}:2: "completion": 325 tokens'):
        tokenize_sft(examples, tokenizer, 12, path, "error")


# ---------------------------------------------------------------- commands


def rm_train(hh_policy, data, out, *extra):
    return main(["rm", "train", "--init", str(hh_policy), "--data", str(data), "--eval-data", str(data),
                 "--out", str(out), "--max-length", "40", "--epochs", "3", "--batch-size", "3", "--lr", "1e-2",
                 "--warmup-steps", "1", "--device", "cpu", *extra])


def test_rm_on_raw_hh_rows_reloads_in_plain_transformers(hh_policy, hh_file, tmp_path, capsys):
    """Trained as the rows come (empty sides, a row far over max_length cut from the left); rm eval
    uses the rule kept in model/tether.json; plain transformers scores each pair as rm eval does."""
    assert rm_train(hh_policy, hh_file, tmp_path / "rm") == 0
    err = capsys.readouterr().err
    assert f"tether: 1 of 6 pairs of {hh_file} longer than max_length 40 tokens truncated (the prompt's start cut); line 4" in err
    model_dir = tmp_path / "rm" / "model"
    rule = json.loads((model_dir / "tether.json").read_text())
    assert rule == {"max_length": 40, "truncation": "left"}
    assert main(["rm", "eval", "--model", str(model_dir), "--data", str(hh_file), "--out", str(tmp_path / "eval"),
                 "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["n_pairs"] == 6
    wrong = {json.dumps(row["prompt"]) for row in map(json.loads, (tmp_path / "eval" / "disagreements.jsonl").open())}

    # Plain transformers: the model and tokenizer, the sequence tether scores (prompt, response, EOS),
    # cut as tether.json says (left: the prompt's start), one side per forward, no padding.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    correct = []
    for pair in read_pairs(hh_file):
        prompt = tokenizer(pair.prompt)["input_ids"]
        sides = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for r in (pair.chosen, pair.rejected)]
        prompt = prompt[-(rule["max_length"] - max(map(len, sides))):]
        with torch.no_grad():
            r_chosen, r_rejected = (model(torch.tensor([prompt + side])).logits[0, 0].item() for side in sides)
        correct.append(r_chosen > r_rejected)
        assert (json.dumps(pair.prompt) in wrong) == (r_chosen <= r_rejected)
    assert metrics["accuracy"] == pytest.approx(sum(correct) / len(correct))

    # Told otherwise, rm eval applies the caller's rule: skip leaves the long pair out.
    assert main(["rm", "eval", "--model", str(model_dir), "--data", str(hh_file), "--out", str(tmp_path / "skip"),
                 "--truncation", "skip", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "skip" / "eval.json").read_text())["n_pairs"] == 5


def test_rm_eval_and_score_take_the_rule_the_model_was_trained_with(tiny_dirs, tmp_path):
    rm = tiny_dirs["rm"]
    config = AutoModelForSequenceClassification.from_pretrained(rm).config
    assert trained_length_rule(rm, config, None, None) == (64, "left")  # no tether.json: the position limit
    model_dir = tmp_path / "rm"
    shutil.copytree(rm, model_dir)
    (model_dir / "tether.json").write_text(json.dumps({"max_length": 40, "truncation": "skip"}))
    assert trained_length_rule(model_dir, config, None, None) == (40, "skip")
    assert trained_length_rule(model_dir, config, 50, "right") == (50, "right")  # told otherwise


def test_rm_train_truncation_error_names_the_row_and_writes_nothing(hh_policy, hh_file, tmp_path, capsys):
    out = tmp_path / "rm"
    assert rm_train(hh_policy, hh_file, out, "--truncation", "error") == 2
    err = capsys.readouterr().err
    assert f'{hh_file}:4: "rejected":' in err and "more than max_length 40" in err
    assert not out.exists()


def bad_prompts(path):
    """Prompts with one invalid row (line 2)."""
    path.write_text('{"prompt": "what is two plus three ?"}\n{"prompt": 7}\n{"prompt": "a b c ?"}\n')
    return path


SKIPPED = 'skipped 1: "prompt": expected a string or a list of messages, got a number (line 2)'


@pytest.mark.parametrize("command", ["sft", "rm train", "rm eval", "collect", "ppo", "score"])
def test_skip_invalid_on_every_command(command, tiny_dirs, hh_policy, tmp_path, capsys):
    """Each command stops at an invalid row (exit 2, nothing written) and, with --skip-invalid true,
    skips it with the report by reason that `tether data check` prints."""
    policy, rm, out = str(tiny_dirs["policy"]), str(tiny_dirs["rm"]), str(tmp_path / "out")
    prompts = str(bad_prompts(tmp_path / "prompts.jsonl"))
    pairs_rows = [{"prompt": "what is two plus three ?", "chosen": " five .", "rejected": ""},
                  {"prompt": "a b c ?", "chosen": 3, "rejected": " d ."},
                  {"prompt": "what is e f g ?", "chosen": " h .", "rejected": " a ."}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pairs_rows))
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "a b ?", "completion": " c ."}\n{"prompt": "a ?"}\n{"prompt": "b ?", "completion": ""}\n')
    tiny = ["--device", "cpu", "--out", out]
    args = {
        "sft": ["sft", "--model", policy, "--data", str(sft), "--eval-fraction", "0", "--batch-size", "2"],
        "rm train": ["rm", "train", "--init", policy, "--data", str(pairs), "--eval-fraction", "0", "--epochs", "1"],
        "rm eval": ["rm", "eval", "--model", rm, "--data", str(pairs)],
        "collect": ["collect", "--policy", policy, "--prompts", prompts, "--max-new-tokens", "3", "--labeler", "none"],
        "ppo": ["ppo", "--policy", policy, "--reward-model", rm, "--prompts", prompts, "--steps", "1", "--batch-size", "2",
                "--minibatch-size", "2", "--micro-batch-size", "2", "--eval-samples", "2", "--max-new-tokens", "3"],
        "score": ["score", "--policy", policy, "--ref-policy", policy, "--reward-model", rm, "--prompts", prompts,
                  "--max-new-tokens", "3"],
    }[command]
    assert main(args + tiny) == 2
    assert not (tmp_path / "out").exists()
    capsys.readouterr()
    assert main(args + tiny + ["--skip-invalid", "true"]) == 0
    err = capsys.readouterr().err
    assert "tether: warning: skipped 1 of 3 rows" in err and "(line 2)" in err and "skipped 1: " in err


def test_skip_invalid_reaches_the_sweep_and_label(tmp_path, capsys):
    from tether.label.server import LabelConfig
    from tether.pipelines.sweep import SweepConfig
    sweep = SweepConfig(out="o", ppo=dict(policy="p", reward_model="r", prompts="q", skip_invalid=True))
    assert sweep.ppo.skip_invalid is True  # the sweep reads its prompts with ppo.skip_invalid
    assert LabelConfig(pairs="p", out="o", skip_invalid=True).skip_invalid is True
    path = tmp_path / "to_label.jsonl"
    path.write_text('{"prompt": "p", "response_a": "", "response_b": "x"}\n{"prompt": "p", "response_a": "x"}\n')
    with pytest.raises(InputError, match='to_label.jsonl:2: "response_b": missing field'):
        load_items(path)
    assert [(item.a, item.b) for item in load_items(path, skip_invalid=True)] == [("", "x")]
    assert 'skipped 1: "response_b": missing field (line 2)' in capsys.readouterr().err


def test_score_fits_rows_to_the_reward_models_rule(hh_policy, capsys):
    from tether.data.collate import LengthRule
    from tether.pipelines.score import fit_rows
    tokenizer = load_tokenizer(hh_policy)
    rows = [("what is two plus three ?", "", 1), (LONG_QUESTION + " ?", " five .", 2)]
    kept, ids = fit_rows(rows, tokenizer, LengthRule(10, "left", "r.jsonl"))
    assert kept == [row[:2] for row in rows]
    assert ids[0] == (tokenizer(rows[0][0])["input_ids"], [tokenizer.eos_token_id])  # empty: scored at its EOS
    assert ids[1] == (tokenizer(rows[1][0])["input_ids"][-7:], tokenizer(" five .", add_special_tokens=False)["input_ids"]
                      + [tokenizer.eos_token_id])
    assert "1 of 2 rows of r.jsonl longer than max_length 10 tokens truncated (the prompt's start cut); line 2" in capsys.readouterr().err
    kept, _ = fit_rows(rows, tokenizer, LengthRule(10, "skip", "r.jsonl"))
    assert kept == [rows[0][:2]]
