"""LoRA for the reward model: adapters train, merge on save, and the result is a plain transformers directory."""

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from test_distributed import write_pairs
from tether.pipelines.reward import RMTrainConfig, run_rm_train


def test_lora_reward_model_trains_and_saves_merged(tiny_dirs, tmp_path):
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    run_rm_train(RMTrainConfig(init=str(tiny_dirs["policy"]), data=str(data), out=str(tmp_path / "rm"), eval_fraction=0.0,
                               batch_size=8, epochs=1, lr=1e-2, lora_r=4, device="cpu"))
    rm = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "model")
    assert not [k for k in rm.state_dict() if "lora" in k]
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["policy"])
    attn = "transformer.h.0.attn.c_attn.weight"
    assert not torch.allclose(rm.state_dict()[attn], base.state_dict()[attn]), "merged adapters changed nothing"
    torch.testing.assert_close(rm.state_dict()["transformer.wte.weight"], base.state_dict()["transformer.wte.weight"])
