"""The surface of tether.algos: exported names, docstrings, and imports of torch only (DESIGN §9, STYLE)."""

import ast
from pathlib import Path

import tether.algos as algos

ALGOS_DIR = Path(algos.__file__).parent

CONTRACT = {
    "bradley_terry_loss", "bradley_terry_accuracy", "token_logprobs", "entropy_from_logits",
    "masked_mean", "masked_var", "masked_whiten", "explained_variance",
    "kl_k1", "kl_k2", "kl_k3", "kl_exact", "kl_of_next_state", "FixedKLController", "AdaptiveKLController", "best_of_n_kl",
    "last_token_index", "per_token_rewards", "gae", "ppo_policy_loss", "ppo_value_loss",
    "masked_aggregate", "rloo_advantages", "grpo_advantages",
    "logratio_margin", "dpo_implicit_reward", "dpo_loss", "ipo_loss", "dpo_hinge_loss",
}  # fmt: skip


def test_exports_exactly_the_contract():
    assert set(algos.__all__) == CONTRACT
    assert all(hasattr(algos, name) for name in CONTRACT)


def test_every_export_has_a_docstring():
    missing = [name for name in CONTRACT if not (getattr(algos, name).__doc__ or "").strip()]
    assert missing == []


def test_algos_imports_only_torch():
    allowed_roots = {"torch", "math"}
    for path in ALGOS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            for name in names:
                ok = name.split(".")[0] in allowed_roots or name.startswith("tether.algos")
                assert ok, f"{path.name} imports {name}"
