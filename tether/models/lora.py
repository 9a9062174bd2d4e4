"""LoRA through peft: low-rank adapters on every linear layer, base weights frozen (Hu et al. 2021)."""


def apply_lora(model, r: int, alpha: int, task_type: str):
    """A peft model with adapters of rank `r` on all linear layers; for SEQ_CLS the scalar head is trained in full."""
    from peft import LoraConfig, get_peft_model
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type=task_type)
    return get_peft_model(model, config)
