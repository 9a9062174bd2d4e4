"""Read, validate and write preference pairs, prompts and SFT examples; tokenise, pad and collate.

The tokenisation names (`encode_prompt`, `tokenize_pairs`, `collate_pairs`, ...) live
in `tether.data.collate` (padding in `tether.data.padding`) and are imported on first use, so that reading and
checking files (`tether data check`) does not pay for importing torch.
"""

from tether.data.prefs import (FORMATS, PreferencePair, pair_to_row, read_pairs, read_pairs_report,
                               split_implicit_prompt, split_shared_messages, write_pairs)
from tether.data.labels import read_preferences
from tether.data.prompts import (PromptRecord, SFTExample, read_prompts, read_prompts_report, read_sft_examples,
                                 read_sft_examples_report)

_COLLATE = ("encode_prompt", "encode_response", "TokenizedPairs", "tokenize_pairs", "collate_pairs",
            "pair_attention_mask", "unpack_pairs")
_PADDING = ("pad_left", "pad_right", "position_ids_from_mask")

__all__ = ["FORMATS", "PreferencePair", "PromptRecord", "SFTExample", "pair_to_row", "read_pairs",
           "read_pairs_report", "read_preferences", "read_prompts", "read_prompts_report", "read_sft_examples",
           "read_sft_examples_report", "split_implicit_prompt", "split_shared_messages", "write_pairs", *_COLLATE, *_PADDING]


def __getattr__(name):
    if name in _COLLATE:
        from tether.data import collate
        return getattr(collate, name)
    if name in _PADDING:
        from tether.data import padding
        return getattr(padding, name)
    raise AttributeError(f"module 'tether.data' has no attribute {name!r}")
