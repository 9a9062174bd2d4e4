"""Does the text fit the tokenizer? The unknown-token rate and the token lengths of a file's texts.

A word-level tokenizer (the built-in world's) turns most English it has not seen
into its unknown token: a reward model then ranks `<unk> is the <unk> of <unk>`,
and nothing it learns means much. `tether data check --tokenizer DIR` reports the
rate; `sft` and `rm train` warn when it is above `HIGH_UNKNOWN_RATE`.
"""

import statistics
import sys

HIGH_UNKNOWN_RATE = 0.02
"""Share of unknown tokens above which a training command warns (1 token in 50: a few words a sentence)."""


def unknown_rate(id_lists, unk_token_id: int | None) -> float:
    """Share of tokens equal to `unk_token_id` over all `id_lists` (0 for a tokenizer with no unknown token)."""
    total = sum(len(ids) for ids in id_lists)
    if unk_token_id is None or total == 0:
        return 0.0
    return sum(ids.count(unk_token_id) for ids in id_lists) / total


def token_fit(texts_by_field: dict[str, list[str]], tokenizer) -> dict:
    """{"unknown_rate", "unknown_tokens", "tokens", "unknown_examples", "lengths": {field: (mean, median, max)}}.

    Texts are encoded without special tokens; `unknown_examples` are up to five words
    that gave an unknown token, in order of first appearance.
    """
    encoded = {name: [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
               for name, texts in texts_by_field.items()}
    all_ids = [ids for lists in encoded.values() for ids in lists]
    unk = tokenizer.unk_token_id
    n_unknown = sum(ids.count(unk) for ids in all_ids) if unk is not None else 0
    return {
        "unknown_rate": unknown_rate(all_ids, unk),
        "unknown_tokens": n_unknown,
        "unknown_examples": _unknown_words(texts_by_field, tokenizer, 5) if n_unknown else [],
        "tokens": sum(map(len, all_ids)),
        "lengths": {name: (statistics.fmean(map(len, lists)), statistics.median(map(len, lists)), max(map(len, lists)))
                    for name, lists in encoded.items() if lists},
    }


def _unknown_words(texts_by_field: dict[str, list[str]], tokenizer, limit: int) -> list[str]:
    """Up to `limit` whitespace-separated words that encode to at least one unknown token, first seen first."""
    found = []
    for text in (t for texts in texts_by_field.values() for t in texts):
        for word in text.split():
            if word not in found and tokenizer.unk_token_id in tokenizer(word, add_special_tokens=False)["input_ids"]:
                found.append(word)
                if len(found) == limit:
                    return found
    return found


def warn_unknown_tokens(path, id_lists, unk_token_id: int | None, command: str) -> float:
    """Print a warning on stderr when the share of unknown tokens in `id_lists` exceeds HIGH_UNKNOWN_RATE; the rate."""
    rate = unknown_rate(id_lists, unk_token_id)
    if rate > HIGH_UNKNOWN_RATE:
        print(f"tether {command}: warning: {rate:.1%} of the tokens of {path} are the tokenizer's unknown token: the "
              f"model cannot read this text (see `tether data check {path} --tokenizer DIR`; builtin:bytes reads any text)",
              file=sys.stderr)
    return rate
