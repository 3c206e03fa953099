"""Does a word window name someone under 18? The half of ``sexual/minors`` the model cannot learn.

OpenAI defines ``sexual/minors`` as sexual content that includes an individual under 18. Whether
a text is sexual is the model's judgement; whether it names a minor is a fact about its words
that the training data teaches poorly (the project authors no sexual content involving minors,
and the public sets hold about 120 requests), so the trained ``sexual/minors`` score finds the
sexual content and then misses the minor. :class:`~seawall.model.classifier.TextClassifier`
therefore lifts a window's ``sexual/minors`` score to its ``sexual`` score when
:func:`names_minor` finds a minor in that window.

The detector is lexical and meant to be precise: explicit ages under 18 ("a 15 year old",
"15yo", "aged 12", "she's 14", "7th grader"), words that mean a child ("child", "kids",
"toddler", "preteen", "underage", "teen", "schoolgirl", "little girl"…) and the same in
Spanish, German, French, Portuguese and Italian, less the words that are also common English
("Kind", "Kinder"). It reads the featurizer's lower-cased words ("15-year-old" arrives as
``15 year old``; "she's" as ``she s``). Durations ("for 12 years", "hace 12 años", "il y a 13
ans") and times ("it's 12") are not ages. It never lowers a score and changes no other label,
so a false match costs nothing unless the model already judged the window sexual.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Words that by themselves mean a person under 18 (English and the five glossed languages).
CHILD_WORDS = frozenset(
    {
        # English
        "child", "children", "kid", "kids", "kiddie", "kiddies", "underage", "preteen", "preteens",
        "tween", "tweens", "toddler", "toddlers", "infant", "infants", "newborn", "teen", "teens",
        "teenager", "teenagers", "teenage", "schoolgirl", "schoolgirls", "schoolboy", "schoolboys",
        "jailbait", "loli", "lolicon", "shota", "shotacon", "minors", "grader", "graders",
        "schooler", "schoolers", "pedo", "pedos", "paedo", "paedos", "pedophile", "paedophile",
        "pedophiles", "paedophiles", "pedophilia", "paedophilia",
        # Spanish, Portuguese
        "niño", "niña", "niños", "niñas", "menores", "adolescente", "adolescentes",
        "criança", "crianças", "menino", "menina", "meninos", "meninas",
        # German
        "kindern", "minderjährig", "minderjährige", "minderjährigen", "schulmädchen",
        "jugendliche", "jugendlichen",
        # French
        "enfant", "enfants", "gamin", "gamine", "gamins", "gamines", "fillette", "fillettes",
        "mineur", "mineure", "mineurs", "mineures", "écolière", "écolières",
        # Italian
        "bambino", "bambina", "bambini", "bambine", "minorenne", "minorenni", "ragazzina", "ragazzine",
    }
)  # fmt: skip

#: "little girl", "young boys": a child only with the adjective.
CHILD_PAIRS = frozenset(
    (adjective, noun) for adjective in ("little", "young") for noun in ("girl", "girls", "boy", "boys")
)

_SPELLED = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
]  # fmt: skip
_AGE_WORDS = {word: value for value, word in enumerate(_SPELLED)}
_COMPACT_AGE = re.compile(r"(\d{1,2})(?:yo|yr|yrs|yrold)")
_ORDINAL_GRADE = re.compile(r"(\d{1,2})(?:st|nd|rd|th)")

#: Words after "N year(s)" that make it an age ("12 years old"), not a duration ("12 years ago").
_YEAR_UNITS = frozenset({"year", "years", "yr", "yrs"})
#: A person and a verb before a bare number make it an age: "she's 14", "I am 15", "he was 12"
#: (not "it's 12", a time). "im 15" needs no subject.
_AGE_VERBS = frozenset({"am", "m", "is", "s", "was", "turned", "turning"})
_AGE_SUBJECTS = frozenset(
    {"i", "she", "he", "who", "girl", "boy", "daughter", "son", "sister", "brother", "niece", "nephew"}
)
#: Words after such a number that make it a quantity, not an age ("was 12 minutes late").
_NOT_AGE_AFTER = frozenset(
    {
        "minutes", "minute", "mins", "hours", "hour", "hrs", "days", "day", "weeks", "week", "months",
        "month", "times", "percent", "dollars", "bucks", "euros", "pounds", "lbs", "kg", "kilos",
        "feet", "foot", "ft", "inches", "inch", "cm", "miles", "mile", "km", "points", "goals",
        "games", "people", "of", "out", "degrees", "am", "pm", "o", "oclock", "on", "to", "x",
        "th", "st", "nd", "rd", "seconds", "secs", "meters", "metres", "grams", "g", "mg", "ml",
    }
)  # fmt: skip
#: Words before "N años/anos/ans/anni" that make it a duration ("hace 12 años", "il y a 13 ans").
_DURATION_BEFORE = frozenset(
    {"hace", "durante", "por", "há", "faz", "y", "pendant", "depuis", "da", "per", "fa", "dopo"}
)
_FOREIGN_YEARS = frozenset({"años", "anos", "ans", "anni"})


def _age(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return _AGE_WORDS.get(word)


def _is_minor_age(age: int | None) -> bool:
    return age is not None and 0 < age < 18


def _names_minor_at(words: Sequence[str], i: int) -> bool:
    word = words[i]
    after = words[i + 1] if i + 1 < len(words) else None
    before = words[i - 1] if i > 0 else None
    if word in CHILD_WORDS:
        return True
    if after is not None and (word, after) in CHILD_PAIRS:
        return True
    if not word[:1].isdigit() and word not in _AGE_WORDS:
        return False  # most words: neither a number nor a spelled age (no regex for them)
    compact = _COMPACT_AGE.fullmatch(word)
    if compact:  # "15yo"
        return _is_minor_age(int(compact.group(1)))
    grade = _ORDINAL_GRADE.fullmatch(word)
    if grade and after in ("grade", "grader", "graders"):  # "7th grade", "8th grader"
        return 0 < int(grade.group(1)) <= 12
    age = _age(word)
    if not _is_minor_age(age):
        return False
    if after in _YEAR_UNITS:  # "12 year old", "12 years old"; not "for 12 years"
        return i + 2 < len(words) and words[i + 2] == "old"
    if after == "yo" or (after == "y" and i + 2 < len(words) and words[i + 2] == "o"):  # "12 yo", "12 y.o."
        return True
    if before in ("aged", "age", "ages"):  # "aged 12", "at age 12"
        return True
    if after in _FOREIGN_YEARS:  # "de 12 años", "13 ans"; not "hace 12 años", "il y a 13 ans"
        return before not in _DURATION_BEFORE and not (before == "a" and i > 1 and words[i - 2] == "y")
    if after in ("jahre", "jährige", "jähriger", "jährigen", "jähriges"):  # "12 Jahre alt", "12-jährige"
        return after != "jahre" or (i + 2 < len(words) and words[i + 2] == "alt")
    if not word.isdigit() or after in _NOT_AGE_AFTER:  # "was 12 minutes late"
        return False
    subject = words[i - 2] if i > 1 else None
    return before == "im" or (before in _AGE_VERBS and (subject in _AGE_SUBJECTS or subject == "just"))


def names_minor(words: Sequence[str]) -> bool:
    """Whether the window's words name a person under 18 (see the module's docstring)."""
    return any(_names_minor_at(words, i) for i in range(len(words)))
