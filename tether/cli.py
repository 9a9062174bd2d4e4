"""`tether COMMAND [--config FILE.yaml] [--key value ...]`: parse, build the config, call the pipeline.

No logic lives here. Exit codes: 0 success, 2 bad usage or bad input (one line
naming file, line and field), 1 any other failure.
"""

import argparse
import importlib
import os
import sys

from tether.config import add_config_args, build_config
from tether.errors import InputError, TetherError
from tether.io import removed_on

# command -> (module, config class, function, one-line help); imported only when used.
COMMANDS = {
    "sft": ("tether.pipelines.sft", "SFTConfig", "run_sft", "supervised fine-tuning of a causal LM"),
    "collect": ("tether.pipelines.collect", "CollectConfig", "run_collect", "sample response pairs from a policy and label them"),
    "label": ("tether.label.server", "LabelConfig", "run_label", "label pairs in a local web page"),
    "label stats": ("tether.label.stats_command", "LabelStatsConfig", "run_label_stats", "agreement statistics of label files, as JSON"),
    "rm train": ("tether.pipelines.reward", "RMTrainConfig", "run_rm_train", "train a Bradley-Terry reward model"),
    "rm eval": ("tether.pipelines.reward", "RMEvalConfig", "run_rm_eval", "evaluate a reward model on labelled pairs"),
    "ppo": ("tether.pipelines.ppo", "PPOConfig", "run_ppo", "PPO against a reward model with a KL penalty"),
    "dpo": ("tether.pipelines.dpo", "DPOConfig", "run_dpo", "DPO (or IPO, hinge) of a policy on preference pairs"),
    "score": ("tether.pipelines.score", "ScoreConfig", "run_score", "reward, KL and r - beta*KL for given responses"),
    "sweep": ("tether.pipelines.sweep", "SweepConfig", "run_sweep", "PPO, RLOO, GRPO and DPO per beta, best-of-n: the reward-KL frontier"),
    "demo": ("tether.pipelines.demo", "DemoConfig", "run_demo", "the whole pipeline on the built-in world, ending in a report"),
    "lab": ("tether.pipelines.lab", "LabConfig", "run_lab", "the demo's pipeline on your own models, a reward model as gold"),
    "data check": ("tether.pipelines.data_check", "DataCheckConfig", "run_data_check", "validate a preference, prompt, SFT or label file"),
    "model import": ("tether.pipelines.model_files", "ModelImportConfig", "run_model_import", "turn a GGUF file into a Hugging Face model directory"),
    "model fetch": ("tether.pipelines.model_files", "ModelFetchConfig", "run_model_fetch", "download a known pretrained model once: builtin:NAME"),
}


def _top_usage() -> str:
    lines = ["usage: tether COMMAND [--config FILE.yaml] [--key value ...]", "", "commands:"]
    lines += [f"  {name:<12} {entry[3]}" for name, entry in COMMANDS.items()]
    lines += ["", "Run `tether COMMAND --help` for every option and its default."]
    return "\n".join(lines)


def _split_command(argv):
    for n in (2, 1):
        name = " ".join(argv[:n])
        if len(argv) >= n and name in COMMANDS:
            return name, argv[n:]
    return None, argv


def main(argv=None) -> int:
    code = _run(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun / accelerate replica
        from tether.distributed import exit_replica
        exit_replica(code)
    return code


def _run(argv) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name, rest = _split_command(argv)
    if name is None:
        if argv and argv[0] in ("-h", "--help"):
            print(_top_usage())
            return 0
        print(_top_usage(), file=sys.stderr)
        print(f"\ntether: error: unknown command {' '.join(argv[:2]) or '(none)'!r}", file=sys.stderr)
        return 2
    module_name, cls_name, fn_name, help_text = COMMANDS[name]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local directories only: never reach for a hub
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # one progress bar per stage, ours
    module = importlib.import_module(module_name)
    cls, fn = getattr(module, cls_name), getattr(module, fn_name)
    parser = argparse.ArgumentParser(prog=f"tether {name}", description=help_text + ". " + (cls.__doc__ or "").strip())
    parser.add_argument("--config", help="YAML file of config keys; command-line options override it")
    positional = getattr(cls, "positional", None)  # e.g. `tether data check FILE`
    if positional:
        parser.add_argument(positional, nargs="?", default=argparse.SUPPRESS,
                            help=f"same as --{positional.replace('_', '-')}")
    add_config_args(parser, cls)
    args = vars(parser.parse_args(rest))  # exits 2 on bad usage
    yaml_path = args.pop("config", None)
    try:
        cfg = build_config(cls, args, yaml_path)
        with removed_on((InputError,), getattr(cfg, "out", None)):  # bad input leaves nothing behind
            fn(cfg)
    except TetherError as e:
        print(f"tether {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"tether {name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
