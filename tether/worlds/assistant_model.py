"""The assistant world's tokenizer and model config: word level, a small GPT-2.

The vocabulary is every word and punctuation mark the world can write (its
prompts, all response phrases, the numbers 0..MAX_NUMBER as whole words), in
sorted order after the special tokens <pad>, <eos>, <unk>, so two builds give the
same ids. Text is split on whitespace and then at each punctuation mark; decoding
joins words with spaces and glues . , ! ? to the word before, so world text comes
back unchanged (and the gold parser ignores spacing anyway).

transformers is imported by the builders, not with the module: the registry
(`tether.worlds`) loads this world for commands that never build a model.
"""

from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tether.worlds import assistant_text as T

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
MODEL_MAX_LENGTH = 128

# Renders chat messages as the HH transcript `format_prompt` writes.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] }}"
    "{% else %}{{ raise_exception('the assistant world knows only user and assistant messages') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
)


def _pre_tokenizer():
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def world_vocabulary() -> list[str]:
    """Special tokens, then every word of the world in sorted order."""
    split = _pre_tokenizer()
    words = {w for text in T.all_text() for w, _ in split.pre_tokenize_str(text)}
    words |= {str(i) for i in range(T.MAX_NUMBER + 1)}
    return [*SPECIAL_TOKENS, *sorted(words)]


def build_tokenizer(save_dir=None) -> "PreTrainedTokenizerFast":
    """The world's word-level tokenizer (saved with `save_pretrained` to `save_dir` if given)."""
    from transformers import PreTrainedTokenizerFast
    vocab = {word: i for i, word in enumerate(world_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = _pre_tokenizer()
    # WordPiece's decoder with cleanup: spaces between words, none before . , ! ? (no word starts with "##").
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        unk_token="<unk>", model_max_length=MODEL_MAX_LENGTH,
                                        chat_template=CHAT_TEMPLATE)
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def build_model_config(tokenizer, n_layer: int = 2, n_embd: int = 128, n_head: int = 4,
                       n_positions: int = MODEL_MAX_LENGTH) -> "GPT2Config":
    """A small GPT-2 (~0.5M parameters at the defaults) with every dropout off, so PPO log-probs are exact.

    GELU is PyTorch's tanh approximation in one kernel: GPT-2's own formula, ~13% faster SFT steps (bench/bench_sft.py).
    """
    from transformers import GPT2Config
    return GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                      n_head=n_head, activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, summary_first_dropout=0.0,
                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)


def build_model(tokenizer) -> "GPT2LMHeadModel":
    """A freshly initialised GPT-2 of `build_model_config(tokenizer)` (weights drawn from torch's global RNG)."""
    from transformers import GPT2LMHeadModel
    return GPT2LMHeadModel(build_model_config(tokenizer))
