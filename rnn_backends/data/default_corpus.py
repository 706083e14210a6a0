"""The embedded default corpus: English-like prose generated from a small grammar.

Everything here was written for this project; no third-party text is used. The generator is a
fixed 64-bit linear congruential generator (not ``random`` or NumPy), so the text is the same on
every Python and NumPy version. Sentences follow a handful of templates over a few hundred words,
which gives a char-level model plenty to learn: frequent words, agreement between templates, and
punctuation that preprocessing turns into spaces.
"""

from __future__ import annotations

from functools import lru_cache

_SUBJECTS = (
    "the clockmaker",
    "the keeper of the lighthouse",
    "an old sailor",
    "the young engineer",
    "my neighbour",
    "the traveller",
    "the miller",
    "a quiet student",
    "the ferryman",
    "the baker on the hill",
    "the doctor",
    "her brother",
    "the village teacher",
    "the stranger",
    "the gardener",
    "a tired messenger",
    "the captain",
    "our host",
    "the astronomer",
    "the weaver",
)
_VERBS = (
    "repaired",
    "watched",
    "carried",
    "measured",
    "painted",
    "followed",
    "remembered",
    "opened",
    "counted",
    "described",
    "built",
    "found",
    "lost",
    "mended",
    "studied",
    "sold",
    "borrowed",
    "polished",
    "wound",
    "drew",
)
_OBJECTS = (
    "the brass clock",
    "a wooden boat",
    "the long road",
    "the silver lamp",
    "a letter",
    "the broken wheel",
    "the evening tide",
    "an iron key",
    "the great map",
    "a basket of apples",
    "the narrow bridge",
    "the winter garden",
    "a small machine",
    "the red door",
    "the stone tower",
    "a paper kite",
    "the heavy anchor",
    "the glass bottle",
    "the old compass",
    "a bundle of rope",
)
_PLACES = (
    "near the harbour",
    "behind the mill",
    "on the hill",
    "in the workshop",
    "by the river",
    "under the bridge",
    "at the market",
    "beside the church",
    "in the cold cellar",
    "along the shore",
    "at the edge of the forest",
    "inside the tower",
    "on the frozen lake",
    "in the crowded square",
    "beyond the orchard",
)
_TIMES = (
    "every morning",
    "before dawn",
    "after the storm",
    "in the spring",
    "late at night",
    "on sunday",
    "during the long winter",
    "at noon",
    "when the bells rang",
    "once a year",
    "at the turn of the tide",
    "while the town slept",
)
_ADJECTIVES = (
    "patient",
    "careful",
    "curious",
    "silent",
    "cheerful",
    "stubborn",
    "gentle",
    "clever",
    "weary",
    "honest",
    "restless",
    "proud",
)
_FEELINGS = (
    "glad",
    "afraid",
    "surprised",
    "certain",
    "puzzled",
    "hopeful",
    "sorry",
    "amused",
)
_REASONS = (
    "the weather was turning",
    "nobody else knew the way",
    "the lamp had gone out",
    "the river was rising",
    "the clock had stopped at seven",
    "a ship was expected",
    "the bread was still warm",
    "the map was wrong",
    "the key did not fit",
    "the road was closed",
    "the bells were silent",
    "the wind had changed",
)
_SAYINGS = (
    "time is a river that runs in one direction",
    "a good machine is a patient friend",
    "the sea keeps every secret it is given",
    "no clock is ever quite right",
    "the shortest road is rarely the best one",
    "a lamp is worth nothing without oil",
    "what is measured carefully is understood",
    "every wheel turns because another pushes it",
)


class _Lcg:
    """Knuth's MMIX constants; ``below(n)`` uses the high bits, which are the well-mixed ones."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def below(self, n: int) -> int:
        self.state = (6364136223846793005 * self.state + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (self.state >> 33) % n

    def pick(self, options: tuple[str, ...]) -> str:
        return options[self.below(len(options))]


def _sentence(rng: _Lcg) -> str:
    kind = rng.below(8)
    s, v, o = rng.pick(_SUBJECTS), rng.pick(_VERBS), rng.pick(_OBJECTS)
    if kind == 0:
        return f"{s.capitalize()} {v} {o} {rng.pick(_PLACES)}."
    if kind == 1:
        return f"{rng.pick(_TIMES).capitalize()}, {s} {v} {o}."
    if kind == 2:
        adjective = rng.pick(_ADJECTIVES)
        return f"{s.capitalize()} was {adjective}, and {v} {o} because {rng.pick(_REASONS)}."
    if kind == 3:
        return f'"{rng.pick(_SAYINGS).capitalize()}," said {s}.'
    if kind == 4:
        return f"{s.capitalize()} was {rng.pick(_FEELINGS)} that {rng.pick(_REASONS)}."
    if kind == 5:
        other = rng.pick(_SUBJECTS)
        return f"{s.capitalize()} and {other} {v} {o} {rng.pick(_TIMES)}."
    if kind == 6:
        return f"Where is {o}? asked {s}, and nobody answered."
    v2, o2 = rng.pick(_VERBS), rng.pick(_OBJECTS)
    return f"{s.capitalize()} {v} {o}, then {v2} {o2} {rng.pick(_PLACES)}."


def generate_text(num_chars: int = 40_000, seed: int = 1898) -> str:
    """Paragraphs of generated prose, at least ``num_chars`` characters long (raw, before
    preprocessing)."""
    rng = _Lcg(seed)
    paragraphs: list[str] = []
    total = 0
    while total < num_chars:
        sentences = [_sentence(rng) for _ in range(3 + rng.below(5))]
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


@lru_cache(maxsize=1)
def default_text() -> str:
    """The embedded default corpus (raw text); generated once per process."""
    return generate_text()
