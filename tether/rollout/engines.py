"""The rollout engines a config can name: a new engine joins `ENGINES` by one entry.

Trainers and evaluation take an engine (`RolloutEngine`) as an argument; the CLI's
`--rollout-engine NAME` picks it here, so no caller hard-codes a sampler (DESIGN §7).
"""

from tether.errors import InputError
from tether.rollout.hf_sampler import HFGenerateSampler
from tether.rollout.interface import RolloutEngine
from tether.rollout.torch_sampler import TorchSampler

ENGINES = {"torch": TorchSampler, "hf": HFGenerateSampler}
DEFAULT_ENGINE = "torch"


def make_engine(name: str) -> RolloutEngine:
    """A fresh engine of the registered `name`; InputError naming the known ones otherwise."""
    if name not in ENGINES:
        raise InputError(f"unknown rollout engine {name!r} (known: {', '.join(ENGINES)})", field="rollout_engine")
    return ENGINES[name]()
