"""Numbers written as English words, rewritten as digits, so that the graders compare one form.

"six" -> "6", "twenty-one" -> "21", "one hundred and five" -> "105", "nineteen forty-five" -> "1945",
"sixteenth" -> "16th", "2.5 million" -> "2500000". "one" as a pronoun ("the one", "one of them") and
"second" as a unit ("1 second", "a second") stay words.
"""

import math
import re

SMALL = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
TENS = {word: 10 * value
        for value, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
CARDINALS = {**SMALL, **TENS, **SCALES}
# Ordinals whose cardinal is not the ordinal less "th" ("fourth") or "ieth" plus "y" ("twentieth").
IRREGULAR_ORDINALS = {"first": "one", "second": "two", "third": "three", "fifth": "five", "eighth": "eight",
                      "ninth": "nine", "twelfth": "twelve"}
ORDINALS = {**IRREGULAR_ORDINALS,
            **{word[:-1] + "ieth" if word.endswith("y") else word + "th": word
               for word in CARDINALS if word not in {"zero", *IRREGULAR_ORDINALS.values()}}}

WORD = "|".join(sorted([*CARDINALS, *ORDINALS], key=len, reverse=True))
# A run of number words joined by spaces, hyphens or "and", or digits before a scale word ("2.5 million").
RUN = re.compile(rf"\b(?:(?:{WORD})|\d+(?:\.\d+)?(?=\s+(?:{'|'.join(SCALES)})\b))(?:(?:\s+and\s+|\s+|-)(?:{WORD}))*\b",
                 re.IGNORECASE)
TOKEN = re.compile(rf"\d+(?:\.\d+)?|{WORD}|and", re.IGNORECASE)
# Words before "one" that make it a pronoun, and before "second" that make it the unit of time.
PRONOUN_BEFORE = {"the", "this", "that", "which", "each", "every", "any", "no", "some", "another", "a"}
UNIT_BEFORE = {"a", "per", "each", "every", "one", "split"}
WORD_BEFORE = re.compile(r"([^\W_]+)\W*$")


def suffix(number: int) -> str:
    return "th" if number % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")


def read_run(tokens: list[str]) -> list[str]:
    """The numbers a run of tokens says, as digits; a token that cannot go on the number before it
    starts a new one ("one two" is 1 and 2, "five and six" is 5, "and", 6)."""
    numbers: list[str] = []
    total = group = 0.0
    last = None  # kind of the token before: "small", "teen", "tens", "hundred", "scale", "digits"
    scale_done = math.inf

    def close(ordinal: bool = False):
        nonlocal total, group, last, scale_done
        value = total + group
        text = f"{value:g}" if value != int(value) else str(int(value))
        numbers.append(text + suffix(int(value)) if ordinal else text)
        total = group = 0.0
        last, scale_done = None, math.inf

    for i, token in enumerate(tokens):
        word = token.lower()
        if word == "and":
            nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
            if last in ("hundred", "scale") and (nxt in SMALL or nxt in TENS or ORDINALS.get(nxt, "") in SMALL):
                continue
            if last is not None:
                close()
            numbers.append(token)
            continue
        if word == "second" and last in ("small", "teen", "digits"):  # "one second" is the unit; "twenty-second" not
            close()
            numbers.append(token)
            continue
        ordinal = word in ORDINALS and word not in CARDINALS
        word = ORDINALS.get(word, word)
        if word[0].isdigit():
            if last is not None:
                close()
            group, last = float(word), "digits"
        elif word in SMALL:
            value = SMALL[word]
            kind = "small" if value < 10 else "teen"
            if kind == "teen" and last in ("teen", "tens") and total == 0 and 11 <= group <= 99:
                group *= 100  # a year: "nineteen twelve"
            elif value == 0 or not (last in (None, "hundred", "scale") or (last == "tens" and kind == "small")):
                if last is not None:
                    close()
            group += value
            last = kind
        elif word in TENS:
            if last in ("teen", "tens") and total == 0 and 11 <= group <= 99:  # "nineteen forty-five"
                group *= 100
            elif last not in (None, "hundred", "scale"):
                close()
            group += TENS[word]
            last = "tens"
        elif word == "hundred":
            if last in ("hundred", "scale") or group >= 100:
                close()
            group = (group or 1) * 100
            last = "hundred"
        else:
            scale = SCALES[word]
            if scale >= scale_done:
                close()
            total += (group or 1) * scale
            group, last, scale_done = 0.0, "scale", scale
        if ordinal:
            close(ordinal=True)
    if last is not None:
        close()
    return numbers


def kept_as_word(text: str, match: re.Match) -> bool:
    """A lone "one" that is a pronoun, or a lone "second" that is a unit of time."""
    word = match.group().lower()
    before = WORD_BEFORE.search(text, 0, match.start())
    before = before.group(1).lower() if before else ""
    after = text[match.end():].lstrip().lower()
    if word == "one":
        return before in PRONOUN_BEFORE or after.startswith(("of ", "another", "'s"))
    if word == "second":
        return before in UNIT_BEFORE or before[:1].isdigit() or before in CARDINALS
    return False


def numerals(text: str) -> str:
    """The text with every number written in words rewritten as digits."""
    def rewrite(match: re.Match) -> str:
        if kept_as_word(text, match):
            return match.group()
        return " ".join(read_run(TOKEN.findall(match.group())))

    return RUN.sub(rewrite, text)
