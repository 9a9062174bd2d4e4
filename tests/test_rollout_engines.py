"""The rollout-engine registry: a config names an engine, `make_engine` builds it, an unknown name is an input error."""

import pytest

from tether.errors import InputError
from tether.rollout import DEFAULT_ENGINE, ENGINES, HFGenerateSampler, TorchSampler, make_engine


def test_registry_names_the_engines():
    assert ENGINES == {"torch": TorchSampler, "hf": HFGenerateSampler}
    assert DEFAULT_ENGINE == "torch"
    assert isinstance(make_engine("torch"), TorchSampler)
    assert isinstance(make_engine("hf"), HFGenerateSampler)


def test_unknown_engine_is_an_input_error_naming_the_known_ones():
    with pytest.raises(InputError, match=r"rollout_engine.*unknown rollout engine 'vllm' \(known: torch, hf\)"):
        make_engine("vllm")


def test_a_new_engine_joins_by_one_entry(monkeypatch):
    class Engine:
        def generate(self, model, prompt_ids, cfg, generator=None):
            raise NotImplementedError

    monkeypatch.setitem(ENGINES, "mine", Engine)
    assert isinstance(make_engine("mine"), Engine)
