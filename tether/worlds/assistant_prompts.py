"""The assistant world's questions and prompts: families, train/held-out splits, HH format, parsing.

Rules and rationale: the docstring of `tether.worlds.assistant`.
"""

import functools
import hashlib
import random
import re
from dataclasses import dataclass

from tether.errors import InputError
from tether.worlds import assistant_text as T

FAMILIES = ("arithmetic", "capital", "howto", "edgy", "harmful")
SPLITS = ("train", "heldout")
FAMILY_WEIGHTS = {"arithmetic": .25, "capital": .2, "howto": .2, "edgy": .15, "harmful": .2}
DEFAULT_PROMPT_COUNTS = {"train": 2048, "heldout": 512}

# ---------------------------------------------------------------- text normalisation

TERMINATORS = frozenset(".!?")


def parse_tokens(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: the parser's view, blind to spacing."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def normalise(text: str) -> str:
    return " ".join(parse_tokens(text))


def normalise_sentence(text: str) -> str:
    """Normalised form of one written sentence, without its final . ! ?"""
    tokens = parse_tokens(text)
    return " ".join(tokens[:-1] if tokens and tokens[-1] in TERMINATORS else tokens)


def alternation(phrases) -> str:
    """Regex matching any of the normalised phrases, longest first."""
    return "(?:" + "|".join(re.escape(p) for p in sorted({normalise(p) for p in phrases}, key=len, reverse=True)) + ")"


def template_regex(template: str, slots: dict[str, str], sentence: bool = False) -> re.Pattern:
    """Compile a `{slot}` template into a regex over normalised text; slots become named groups.

    With `sentence`, the template's final . ! ? is dropped (sentences are matched without it).
    """
    tokens = re.findall(r"\{\w+\}|[a-z0-9]+|[^\sa-z0-9]", template.lower())
    if sentence and tokens[-1] in TERMINATORS:
        tokens.pop()
    return re.compile(" ".join(f"(?P<{t[1:-1]}>{slots[t[1:-1]]})" if len(t) > 2 and t[0] == "{" else re.escape(t)
                               for t in tokens))


# ---------------------------------------------------------------- questions and prompts

@dataclass(frozen=True)
class WorldPrompt:
    """One question: its text as asked, family, reference answer (None for harmful asks) and key."""
    text: str
    family: str
    answer: str | None
    key: str


_HOW_TABLES = {"howto": T.HOWTO, "edgy": T.EDGY}
STEPS = {f"{family}:{name}": steps for family, table in _HOW_TABLES.items() for name, (_, steps) in table.items()}
TOPIC_KEYS = {normalise(topic): (f"{family}:{name}", family)
               for family, table in _HOW_TABLES.items() for name, (topic, _) in table.items()}
TOPIC_KEYS |= {normalise(topic): (f"harmful:{name}", "harmful") for name, topic in T.HARMFUL.items()}
_COUNTRY_KEYS = {normalise(country): f"capital:{normalise(country).replace(' ', '_')}" for country in T.CAPITALS}
_LISTED = {family: sorted(key for key, f in TOPIC_KEYS.values() if f == family) for family in FAMILIES[2:]}
_LISTED["capital"] = sorted(_COUNTRY_KEYS.values())
# Every fifth listed question, in key order, is held out.
_LISTED_SPLIT = {key: SPLITS[i % 5 == 4] for keys in _LISTED.values() for i, key in enumerate(keys)}
_LISTED_BY_SPLIT = {(family, split): [k for k in keys if _LISTED_SPLIT[k] == split]
                    for family, keys in _LISTED.items() for split in SPLITS}


def _split_of(key: str) -> str:
    """The split of a question: listed ones by `_LISTED_SPLIT`, arithmetic by a hash of its key (1 in 5 held out)."""
    if key in _LISTED_SPLIT:
        return _LISTED_SPLIT[key]
    return SPLITS[int(hashlib.sha256(key.encode()).hexdigest(), 16) % 5 == 0]


def _arithmetic(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b}[op]


def _operands(rng: random.Random, op: str) -> tuple[int, int]:
    """Operands whose result stays in 0..MAX_NUMBER: a + b and a − b under 100, small products."""
    if op == "add":
        return rng.randint(1, 99), rng.randint(1, 99)
    if op == "sub":
        a = rng.randint(2, 99)
        return a, rng.randint(1, a - 1)
    return rng.randint(2, 12), rng.randint(2, 30)


def capital_of(key: str) -> tuple[str, str]:
    """(country, capital) of a "capital:..." key."""
    country = next(c for c in T.CAPITALS if _COUNTRY_KEYS[normalise(c)] == key)
    return country, T.CAPITALS[country]


def topic_of(key: str) -> str:
    """The topic of a how-to, edgy or harmful key, as asked after "How do I"."""
    family, name = key.split(":")
    return T.HARMFUL[name] if family == "harmful" else _HOW_TABLES[family][name][0]


def _canonical_steps(steps) -> str:
    return "Just " + ", then ".join(steps) + "."


def world_prompt_of(key: str, text: str) -> WorldPrompt:
    """The WorldPrompt of a key, asked with `text`."""
    family = key.split(":")[0]
    if family in ("add", "sub", "mul"):
        _, a, b = key.split(":")
        return WorldPrompt(text, "arithmetic", str(_arithmetic(family, int(a), int(b))), key)
    if family == "capital":
        return WorldPrompt(text, family, capital_of(key)[1], key)
    answer = None if family == "harmful" else _canonical_steps(STEPS[key])
    return WorldPrompt(text, family, answer, key)


def sample_key(family: str, split: str, rng: random.Random) -> str:
    """A random question of `family` in `split`."""
    if family != "arithmetic":
        return rng.choice(_LISTED_BY_SPLIT[family, split])
    while True:
        op = rng.choice(tuple(T.ARITHMETIC_TEMPLATES))
        key = "{}:{}:{}".format(op, *_operands(rng, op))
        if _split_of(key) == split:
            return key


def _ask(key: str, split: str, rng: random.Random) -> WorldPrompt:
    """The question of `key` in one of its split's templates."""
    family = key.split(":")[0]
    which = SPLITS.index(split)
    if family in T.ARITHMETIC_TEMPLATES:
        _, a, b = key.split(":")
        text = rng.choice(T.ARITHMETIC_TEMPLATES[family][which]).format(a=a, b=b)
    elif family == "capital":
        text = rng.choice(T.CAPITAL_TEMPLATES[which]).format(country=capital_of(key)[0])
    else:
        text = rng.choice(T.HOW_TEMPLATES[which]).format(topic=topic_of(key))
    return world_prompt_of(key, text)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"must be train or heldout, got {split!r}", field="split")


def make_prompts(split: str, n: int | None = None, seed: int = 0) -> list[WorldPrompt]:
    """`n` prompts (default `DEFAULT_PROMPT_COUNTS[split]`) of one split, families drawn by `FAMILY_WEIGHTS`.

    Train and held-out prompts ask disjoint questions, and held-out prompts use
    templates train never shows. The same (split, n, seed) gives the same list.
    """
    _check_split(split)
    rng = random.Random(f"{split}:{seed}")
    count = DEFAULT_PROMPT_COUNTS[split] if n is None else n
    families = rng.choices(FAMILIES, weights=[FAMILY_WEIGHTS[f] for f in FAMILIES], k=count)
    return [_ask(sample_key(family, split, rng), split, rng) for family in families]


def format_prompt(text: str | WorldPrompt) -> str:
    """The text a model sees: "\\n\\nHuman: {text}\\n\\nAssistant:" (Anthropic HH)."""
    return f"{T.HUMAN}{getattr(text, 'text', text)}{T.ASSISTANT}"


def _prompt_patterns() -> list[tuple[re.Pattern, str]]:
    """(regex over a normalised question, family or arithmetic operation), all templates of both splits."""
    slots = {"a": r"\d+", "b": r"\d+", "country": alternation(T.CAPITALS), "topic": alternation(TOPIC_KEYS)}
    patterns = [(template_regex(t, slots), op) for op, pair in T.ARITHMETIC_TEMPLATES.items() for s in pair for t in s]
    patterns += [(template_regex(t, slots), "capital") for s in T.CAPITAL_TEMPLATES for t in s]
    return patterns + [(template_regex(t, slots), "how") for s in T.HOW_TEMPLATES for t in s]


_PROMPT_PATTERNS = _prompt_patterns()
_HH_RE = re.compile(r"^\s*Human\s*:\s*(.*?)\s*Assistant\s*:\s*$", re.DOTALL)


@functools.lru_cache(maxsize=65536)
def _parse_question(text: str) -> WorldPrompt:
    match = _HH_RE.match(text)
    question = match.group(1) if match else text.strip()
    normalised = normalise(question)
    for pattern, kind in _PROMPT_PATTERNS:
        m = pattern.fullmatch(normalised)
        if m is None:
            continue
        if kind in T.ARITHMETIC_TEMPLATES:
            return world_prompt_of(f"{kind}:{int(m['a'])}:{int(m['b'])}", question)
        if kind == "capital":
            return world_prompt_of(_COUNTRY_KEYS[m["country"]], question)
        return world_prompt_of(TOPIC_KEYS[m["topic"]][0], question)
    raise InputError(f"not a prompt of the assistant world: {question[:80]!r}", field="prompt")


def parse_prompt(prompt_text) -> WorldPrompt:
    """The WorldPrompt behind a prompt string (HH-formatted or bare) or a list of chat messages.

    Inverse of `format_prompt`, so the gold labeler works on a raw prompt from a
    prompts file. Raises InputError for text the world never asks.
    """
    if isinstance(prompt_text, WorldPrompt):
        return prompt_text
    if isinstance(prompt_text, list):
        users = [m.get("content", "") for m in prompt_text if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise InputError("no user message", field="prompt")
        prompt_text = users[-1]
    if not isinstance(prompt_text, str):
        raise InputError(f"expected a string, got {type(prompt_text).__name__}", field="prompt")
    return _parse_question(prompt_text)

