"""Direct preference losses: DPO (sigmoid, with cDPO's label smoothing), IPO and the hinge (SLiC) loss.

Inputs are sequence log-probabilities, (B,) each: log π(y|x) summed over the response
tokens only (never the prompt, never the padding after EOS), for the chosen (y_w) and
rejected (y_l) response under the policy π and the frozen reference π_ref. Every loss
reads the policy's log-ratio margin

    h = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))

and returns the mean over the batch, a scalar.
"""

import torch
import torch.nn.functional as F

from tether.algos.shapes import require_same_shape


def logratio_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps) -> torch.Tensor:
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)); four (B,) → (B,)."""
    require_same_shape(chosen_logps=chosen_logps, rejected_logps=rejected_logps,
                       ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    return (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)


def dpo_implicit_reward(logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """r̂(x, y) = β (log π(y|x) − log π_ref(y|x))  (Rafailov et al. 2023, eq. 5, without the β log Z(x) that cancels
    in every comparison). (B,), (B,) → (B,); TRL logs it as `rewards/chosen` and `rewards/rejected`."""
    require_same_shape(logps=logps, ref_logps=ref_logps)
    return beta * (logps - ref_logps)


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """L = mean −(1 − ε) log σ(β h) − ε log σ(−β h)  (Rafailov et al. 2023, eq. 7; ε > 0: conservative DPO,
    Mitchell 2023, for labels flipped with probability ε). four (B,) → scalar; logsigmoid keeps β h = ±1000 finite."""
    logits = beta * logratio_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (-(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)).mean()


def ipo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float) -> torch.Tensor:
    """L = mean (h − 1/(2β))²  (Azar et al. 2023, "A General Theoretical Paradigm…", eq. 17, β their τ):
    a squared loss that pulls the margin to 1/(2β) instead of pushing it to infinity. four (B,) → scalar."""
    h = logratio_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return ((h - 1 / (2 * beta)) ** 2).mean()


def dpo_hinge_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float) -> torch.Tensor:
    """L = mean max(0, 1 − β h)  (SLiC, Zhao et al. 2023, eq. 5 with the reference's log-ratio, as TRL's "hinge"):
    0 once the margin passes 1/β. four (B,) → scalar."""
    h = logratio_margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.relu(1 - beta * h).mean()
