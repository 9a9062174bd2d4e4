"""Data parallelism: two gloo processes on CPU train like one process with the same global batch."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from tether.runlog import read_metrics

WORDS = "paris yes no great question i hope this helps five a b c d e f g h".split()


def write_pairs(path, n=48, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = "what is the capital of france ?"
        chosen = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) + " ."
        rejected = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "id": str(i)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # accelerate's torchrun path; `--multi_gpu` is its name for it, and with --device cpu tether uses gloo
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


def rm_train(tiny_dirs, data, out, launcher=None, *extra):
    launcher = LAUNCHERS[launcher] if launcher else [sys.executable]
    args = ["-m", "tether", "rm", "train", "--init", str(tiny_dirs["policy"]), "--data", str(data), "--out", str(out),
            "--eval-fraction", "0", "--batch-size", "8", "--epochs", "2", "--lr", "1e-3", "--warmup-steps", "2",
            "--device", "cpu", "--threads", "1", *extra]
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [row["train/loss"] for row in read_metrics(out / "metrics.jsonl")]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_start_two_replicas_that_tether_joins(tmp_path, launcher):
    script = tmp_path / "who.py"
    script.write_text("import pathlib, sys\nfrom tether.distributed import init_replica, shutdown\n"
                      "r = init_replica('cpu')\n"
                      "pathlib.Path(sys.argv[1], f'rank{r.rank}').write_text(f'{r.rank} of {r.world_size} on {r.device}')\n"
                      "shutdown(r)\n")
    result = subprocess.run(LAUNCHERS[launcher] + [str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.read_text() for p in tmp_path.glob("rank*")) == ["0 of 2 on cpu", "1 of 2 on cpu"]


def test_a_replica_keeps_its_exit_code_and_output_but_skips_interpreter_finalisation(tmp_path):
    """Under torchrun (WORLD_SIZE > 1) `tether` ends with os._exit, since FSDP2 keeps gloo's worker threads
    alive into finalisation, where one can abort the process. The code and the flushed error line stay;
    atexit handlers (finalisation) run only in a plain process."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "b", "rejected": "b"}\n')
    marker = tmp_path / "finalised"
    script = (f"import atexit, pathlib, sys\natexit.register(pathlib.Path({str(marker)!r}).touch)\n"
              "from tether.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    for world_size, finalised in (("2", False), ("1", True)):
        marker.unlink(missing_ok=True)
        result = subprocess.run([sys.executable, "-c", script, "data", "check", str(bad)], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "WORLD_SIZE": world_size})
        assert result.returncode == 2
        assert result.stderr == f'tether data check: error: {bad}:1: "rejected": chosen identical to rejected\n'
        assert marker.exists() is finalised


def test_two_processes_give_the_one_process_loss_curve(tiny_dirs, tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    single = rm_train(tiny_dirs, data, tmp_path / "one")
    for launcher in LAUNCHERS:
        double = rm_train(tiny_dirs, data, tmp_path / launcher, launcher)
        assert len(single) == len(double) == 12
        assert double == pytest.approx(single, abs=1e-5), launcher
    assert sum(single[6:]) < sum(single[:6])  # it learns: the second epoch's loss is below the first's


def test_ppo_and_sft_run_under_torchrun_and_ppo_resumes_with_the_same_process_count(tiny_dirs, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tether"]
    ppo = ["ppo", "--policy", str(tiny_dirs["policy"]), "--reward-model", str(tiny_dirs["rm"]), "--prompts",
           str(tiny_dirs["prompts"]), "--out", str(tmp_path / "ppo"), "--batch-size", "8", "--minibatch-size", "4",
           "--micro-batch-size", "2", "--max-new-tokens", "6", "--eval-samples", "8", "--save-every", "2",
           "--device", "cpu", "--threads", "1"]
    ppo += ["--steps", "8"]
    killed = subprocess.Popen(launcher + ppo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint, deadline = tmp_path / "ppo" / "checkpoints" / "last.pt", time.time() + 300
    while time.time() < deadline and killed.poll() is None and not checkpoint.exists():
        time.sleep(0.01)
    for process in [*psutil.Process(killed.pid).children(recursive=True), psutil.Process(killed.pid)]:
        process.send_signal(signal.SIGKILL)  # both replicas and the launcher, after the first checkpoint
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and checkpoint.exists(), "the run ended before it could be killed"
    single = subprocess.run([sys.executable, "-m", "tether", *ppo, "--resume"], capture_output=True, text=True)
    assert single.returncode == 2 and "resume with as many" in single.stderr
    result = subprocess.run(launcher + ppo + ["--resume"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [row["step"] for row in read_metrics(tmp_path / "ppo" / "metrics.jsonl") if "objective/kl" in row]
    assert steps == list(range(1, 9))
    corpus = tmp_path / "sft.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": "what is two plus three ?", "completion": " five ."}) + "\n" for _ in range(16)))
    sft = subprocess.run(launcher + ["sft", "--model", str(tiny_dirs["policy"]), "--data", str(corpus), "--out", str(tmp_path / "sft"),
                                     "--batch-size", "8", "--epochs", "1", "--eval-fraction", "0", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert (tmp_path / "sft" / "model" / "model.safetensors").is_file()


def sft_train(tiny_dirs, data, out, launcher=None, *extra):
    launcher = LAUNCHERS[launcher] if launcher else [sys.executable]
    args = ["-m", "tether", "sft", "--model", str(tiny_dirs["policy"]), "--data", str(data), "--out", str(out),
            "--batch-size", "8", "--epochs", "2", "--eval-fraction", "0.25", "--log-every", "1", "--device", "cpu",
            "--threads", "1", *extra]
    result = subprocess.run(launcher + args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [row.get("train/loss", row.get("eval/loss")) for row in read_metrics(out / "metrics.jsonl")]


def test_fsdp_shards_sft_and_rm_train_and_saves_the_whole_model(tiny_dirs, tmp_path):
    """FSDP2 over 2 gloo processes: the 1-process loss curves, and a model directory plain transformers loads.

    SFT averages its weights over the last half of the steps (`--average-last`), on the shards under FSDP."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    pairs, corpus = tmp_path / "pairs.jsonl", tmp_path / "sft.jsonl"
    write_pairs(pairs)
    corpus.write_text("".join(json.dumps({"prompt": f"what is {a} plus three ?", "completion": f" {a} ."}) + "\n"
                              for a in WORDS * 2))
    for train, data, auto in ((rm_train, pairs, AutoModelForSequenceClassification), (sft_train, corpus, AutoModelForCausalLM)):
        extra = ("--average-last", "0.5") if train is sft_train else ()
        single = train(tiny_dirs, data, tmp_path / f"{train.__name__}_one", None, *extra)
        sharded = train(tiny_dirs, data, tmp_path / f"{train.__name__}_fsdp", "torchrun", "--fsdp", "true", *extra)
        assert sharded == pytest.approx(single, abs=1e-5), train.__name__
        one, fsdp = (load_file(tmp_path / f"{train.__name__}_{k}" / "model" / "model.safetensors") for k in ("one", "fsdp"))
        assert sorted(one) == sorted(fsdp)  # tied weights written once, as save_pretrained does
        for key in one:  # Adam turns float noise in near-zero gradients into steps of up to lr
            torch.testing.assert_close(fsdp[key], one[key], atol=2e-3, rtol=0, msg=key)
        auto.from_pretrained(tmp_path / f"{train.__name__}_fsdp" / "model")


UNSHARDED_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForCausalLM
from tether.distributed import init_replica, is_sharded, shard, unsharded
from tether.rollout import SamplingConfig, TorchSampler
from tether.rollout.torch_sampler import ModelDecoder, decoder_class



class Holder(torch.nn.Module):  # as ActorCritic holds the policy: the root, whose forward sampling never calls
    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, ids):
        return self.policy(input_ids=ids, labels=ids).loss


replica = init_replica("cpu")
plain = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
root = shard(Holder(AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()))
model = root.policy
# rank 1 decodes more steps than rank 0: a collective inside a forward would hang
cfg = SamplingConfig(max_new_tokens=4 + 6 * replica.rank, temperature=1.0, eos_token_id=1, pad_token_id=0)
prompts = [[7, 8, 9], [10, 11]]
sample = lambda m, fast: TorchSampler(fast=fast).generate(m, prompts, cfg, torch.Generator().manual_seed(replica.rank))
fast_decoder = lambda m: decoder_class(m) is not ModelDecoder
result = {"sharded_fast": fast_decoder(model)}
with unsharded(root):
    result["unsharded_fast"] = fast_decoder(model)
    result["plain_weights"] = not is_sharded(root)
    for fast in (False, True):  # the policy's own forward first: a submodule's, not the root's
        got, want = sample(model, fast), sample(plain, fast)
        result[f"same_tokens_{fast}"] = torch.equal(got.response_ids, want.response_ids)
        result[f"logprob_gap_{fast}"] = (got.logprobs - want.logprobs).abs().max().item()
result["resharded"] = is_sharded(root)
root(torch.tensor(prompts[0])[None]).backward()  # training forwards gather and free the blocks again
result["grads_sharded"] = all(p.grad is not None and type(p.grad).__name__ == "DTensor" for p in root.parameters())
open(sys.argv[2] + f"/rank{replica.rank}.json", "w").write(json.dumps(result))
"""


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_sharded_policy_samples_on_whole_weights_with_the_fast_decoder(tiny_dirs, tmp_path, arch):
    """`unsharded` gathers an FSDP2 model once: its weights are plain tensors, the fast decoder (FastGPT2Decoder,
    FastLlamaDecoder) and the policy's own forward (though the root is the module around it) sample what the whole
    model samples, replicas may take different numbers of decoding steps, and after it the model is sharded again
    and trains."""
    policy = tiny_dirs["policy"]
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        torch.manual_seed(0)
        policy = tmp_path / "llama"
        LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                     num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)).save_pretrained(policy)
    script = tmp_path / "unsharded.py"
    script.write_text(UNSHARDED_SCRIPT)
    result = subprocess.run(LAUNCHERS["torchrun"] + [str(script), str(policy), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["sharded_fast"] is False and got["unsharded_fast"] is True and got["plain_weights"] is True
        assert got["same_tokens_True"] and got["same_tokens_False"]
        assert got["logprob_gap_True"] < 1e-5 and got["logprob_gap_False"] < 1e-5
        assert got["resharded"] and got["grads_sharded"]


def ppo_args(tiny_dirs, out, *extra):
    return ["ppo", "--policy", str(tiny_dirs["policy"]), "--reward-model", str(tiny_dirs["rm"]), "--prompts",
            str(tiny_dirs["prompts"]), "--out", str(out), "--batch-size", "8", "--minibatch-size", "4",
            "--micro-batch-size", "2", "--max-new-tokens", "6", "--eval-samples", "8", "--steps", "4",
            "--save-every", "2", "--lr", "1e-3", "--device", "cpu", "--threads", "1", *extra]


def kill_after_first_checkpoint(command, out) -> None:
    """Start `command`, SIGKILL the launcher and its replicas once out/checkpoints/last.pt exists."""
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint, deadline = out / "checkpoints" / "last.pt", time.time() + 300
    while time.time() < deadline and killed.poll() is None and not checkpoint.exists():
        time.sleep(0.01)
    for process in [*psutil.Process(killed.pid).children(recursive=True), psutil.Process(killed.pid)]:
        process.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and checkpoint.exists(), "the run ended before it could be killed"


@pytest.mark.slow
def test_fsdp_ppo_gives_the_ddp_run_and_resumes_from_a_whole_checkpoint(tiny_dirs, tmp_path):
    """PPO with --fsdp on 2 gloo processes, killed after its first checkpoint and resumed, gives the metrics and the
    model of an uninterrupted DDP run on 2 processes, and a model directory plain transformers loads.

    The reference is 2 processes, not 1: each replica samples its own rollouts (seed + 7919·rank), so 2 processes
    train on other rollouts than 1 does; with the same rollouts, sharding must not change a number."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    launcher = LAUNCHERS["torchrun"] + ["-m", "tether"]
    ddp = subprocess.run(launcher + ppo_args(tiny_dirs, tmp_path / "ddp"), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    fsdp = launcher + ppo_args(tiny_dirs, tmp_path / "fsdp", "--fsdp", "true")
    kill_after_first_checkpoint(fsdp, tmp_path / "fsdp")
    checkpoint = torch.load(tmp_path / "fsdp" / "checkpoints" / "last.pt", weights_only=False)
    policy = load_file(tiny_dirs["policy"] / "model.safetensors")
    assert checkpoint["model"]["actor.transformer.wte.weight"].shape == policy["transformer.wte.weight"].shape  # whole
    resumed = subprocess.run(fsdp + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = {k: read_metrics(tmp_path / k / "metrics.jsonl") for k in ("ddp", "fsdp")}
    assert [r["step"] for r in rows["fsdp"]] == [r["step"] for r in rows["ddp"]] == [1, 2, 3, 4, 4]
    for want, got in zip(rows["ddp"], rows["fsdp"]):
        numbers = [k for k in want if not k.startswith(("time/", "memory/"))]
        assert sorted(numbers) == sorted(k for k in got if not k.startswith(("time/", "memory/")))
        assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], abs=1e-5), want["step"]
    one, sharded = (load_file(tmp_path / k / "model" / "model.safetensors") for k in ("ddp", "fsdp"))
    assert sorted(one) == sorted(sharded)
    for key in one:
        torch.testing.assert_close(sharded[key], one[key], atol=2e-3, rtol=0, msg=key)
    AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "model")
