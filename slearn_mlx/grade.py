"""Grade a model's answer against the reference, objectively.

Rule graders first, because they are exact, free and cannot be talked into a verdict:
normalised exact match and the reference as the response's own pick for short answers (not
denied, not a side remark, not part of a longer name), numbers in digits or words with units
(temperatures by offset) within a relative tolerance, the option picked for multiple choice (by
letter in either case or by its text, after the options the response eliminates), and token
overlap (ROUGE-L with shared key terms) for long answers. A kind of record can be given a grader of
its own by name, a package's among them (GRADERS). `auto_grade` sends a kind of record to a judge
(judge.py) only when asked to, because on the default model it was measured worse than the rules
(benchmarks/grading.py). Every response is data: a rule or gate decides first what a response
cannot earn, whatever it says. Nothing here needs MLX or a model.
"""

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .data import DEFAULT_LETTERS, Record
from .numerals import numerals
from .plugins import Registry

ARTICLES = {"a", "an", "the"}
WORD = re.compile(r"[^\W_]+")


@dataclass
class Grade:
    correct: bool
    grader: str
    score: float  # 1.0/0.0 for exact rules; the overlap for long answers; the judge's probability of "correct"
    # Hedged, refused or "I don't know": not attempted (SimpleQA's third outcome), so never correct;
    # for a method that trains on what the model does not know, an unsure answer is not knowledge.
    unsure: bool = False


# Grades a batch of responses to their records (auto_grade with the run's judge, backends.grader).
Grader = Callable[[list[Record], list[str]], list[Grade]]


@functools.lru_cache(maxsize=4096)  # a record's question and references are read once per rule that needs them
def plain(text: str) -> str:
    """Accents stripped, numbers written in words as digits ("twelve" -> "12"), case kept."""
    text = unicodedata.normalize("NFKD", text)
    return numerals("".join(c for c in text if not unicodedata.combining(c)))


def fold(text: str) -> str:
    """Lowercase, accents stripped, numbers as digits."""
    return plain(text).lower()


def word_spans(text: str) -> tuple[str, list[re.Match]]:
    """The folded text and its words in it, articles left out; punctuation is what lies between."""
    folded = fold(text)
    return folded, [m for m in WORD.finditer(folded) if m.group() not in ARTICLES]


def normalize(text: str) -> str:
    """Lowercase, strip accents and punctuation, numbers as digits, drop articles, collapse whitespace."""
    return " ".join(m.group() for m in word_spans(text)[1])


def references(record: Record) -> list[str]:
    return [r for r in dict.fromkeys(normalize(a) for a in [record.answer, *record.aliases]) if r]


def says(text: str, phrase: str) -> bool:
    """`phrase` occurs as whole words in `text` (both normalised)."""
    return f" {phrase} " in f" {text} "


def exact_match(response: str, record: Record) -> bool:
    return normalize(response) in references(record)


# Said to be unsure, in any kind of answer: not knowing, not being able to say, refusing.
IGNORANCE = re.compile(
    r"\bI(?:'m| am| really| honestly|\s)*(?:do\s*n[o']?t|cannot|can't|can ?not|have no)\s+"
    r"(?:know|say|tell|answer|recall|remember|idea|clue|help|assist|provide|determine|have (?:the|enough|any|access))\b"
    r"|\bI(?:'m| am)\s+(?:not (?:sure|certain|aware)|unsure|uncertain|unable)\b"
    r"|\b(?:not sure|no idea|hard to say|impossible to say|I'm sorry,? but|I am sorry,? but|as an AI)\b",
    re.IGNORECASE)
# A guess that says it is one. Only in short and multiple-choice answers: a long definition may well
# say that something "may" or "possibly" happens.
GUESS = re.compile(r"\b(?:perhaps|maybe|possibly|probably|I guess|my guess|I'd guess|might be|could be)\b", re.IGNORECASE)
QUOTED = re.compile(r'"[^"]*"|“[^”]*”')


def is_unsure(response: str, record: Record) -> bool:
    """The response says it does not know, will not answer, or only guesses ("Perhaps X? I can't say").

    Quoted words, words of the question ("lyrics that say 'I don't know how'") and an option's own
    text are someone else's, not the model's doubt.
    """
    text = QUOTED.sub(" ", response.replace("’", "'"))
    for option in (options_of(record) or {}).values():
        text = text.replace(option, " ")
    patterns = [IGNORANCE] if record.kind == "long" else [IGNORANCE, GUESS]
    asked = record.question.lower()
    return any(m.group().lower() not in asked for pattern in patterns for m in pattern.finditer(text))


# A hedge lists candidates: "Paris, London, Berlin" or "Paris or London". Items of at most
# this many words count as candidates; longer ones are prose ("..., which is in France").
CANDIDATE_WORDS = 4
LIST_SEPARATOR = re.compile(r"[,;/|\n]|\s(?:or|and/or)\s", re.IGNORECASE)
OR = re.compile(r"\bor\b", re.IGNORECASE)
CONJUNCTIONS = {"and", "or"}


def list_items(response: str) -> set[str]:
    """The normalised pieces between separators, without the "and" or "or" that joins them: ", and"
    at the end of an answer cut at its token budget is no item."""
    items = set()
    for part in LIST_SEPARATOR.split(response):
        words = normalize(part).split()
        while words and words[0] in CONJUNCTIONS:
            words.pop(0)
        while words and words[-1] in CONJUNCTIONS:
            words.pop()
        items.add(" ".join(words))
    return items - {""}


def lists_candidates(response: str, record: Record) -> bool:
    """The response names several short candidate answers instead of committing to one.

    Three or more items, or two joined by "or", and most of its items: prose runs long clauses
    between its commas ("located in Central Africa, specifically in East Africa, which is
    bordered by ..."). Items that only repeat words of the question ("CPU" for "What does CPU
    stand for?") are restatements, not candidates.
    """
    asked = set(normalize(record.question).split())
    items = list_items(response)
    candidates = [i for i in items if len(i.split()) <= CANDIDATE_WORDS and not set(i.split()) <= asked]
    return len(candidates) >= (2 if OR.search(response) else 3) and 2 * len(candidates) > len(items)


def mentions(words: list[str], phrase: list[str]) -> list[int]:
    """Where the words of `phrase` occur in order in `words`."""
    return [i for i in range(len(words) - len(phrase) + 1) if words[i : i + len(phrase)] == phrase]


# Words that carry no answer of their own: articles, pronouns, prepositions, conjunctions, auxiliaries,
# the verbs that frame an answer ("I'd say", "it's called") and the words of agreement. What is left
# are content words: a name, a noun, a number.
FUNCTION_WORDS = frozenset("""
a an the this that these those it its he him his she her they them their we us our i me my you your one
is are was were be been being am do does did has have had will would shall should can could may might must
of in on at to from by with for about as into onto over under than then so such also too very just only even
and or but nor if because while whereas although though since until unless whether which who whom whose
what when where why how there here not no never s t d ll re ve m some any each every all both either neither
other another more most much many say says said think thought believe call called named known answer
yes sure well ok okay oh ah hmm right correct indeed certainly absolutely definitely course actually really
""".split())
# A negation right before a mention denies it: "not X", "isn't X", "certainly not X", "never in X".
NEGATIONS = {"not", "never", "nor", "neither", "cannot"}
# ...but these after "not" make it something else: "not only X", "not until 1969".
NOT_NEGATING = {"only", "just", "merely", "simply", "solely", "until", "till", "also"}
# After a mention, an auxiliary and a negation deny it ("X is not the capital", "X didn't write it"),
# as do these ("X is wrong").
AUXILIARIES = {"is", "was", "are", "were", "do", "does", "did", "has", "had", "have", "would", "could", "can", "will",
               "isn", "wasn", "aren", "weren", "don", "doesn", "didn", "hasn", "hadn", "haven", "wouldn", "couldn",
               "won"}
WRONG = {"wrong", "incorrect", "false", "mistaken"}
# What a denial after a mention may deny besides the question's own words: "X is not the answer".
ANSWER_WORDS = {"answer", "right", "correct", "true", "one", "case", "it"}
# Words that report what others hold: a clause with one, answered by "but ..." or "however", is
# a concession, not the response's claim ("Many credit X, but it was Y").
REPORTING = {"think", "thinks", "thought", "believe", "believes", "believed", "say", "says", "said", "claim", "claims",
             "claimed", "credit", "credits", "credited", "assume", "assumes", "assumed", "attribute", "attributes",
             "attributed", "suppose", "supposed", "mistake", "mistaken", "misconception", "myth", "confuse", "confused"}
CONTRASTS = {"but", "however", "yet", "although", "though", "whereas"}
# Clauses end at punctuation, a line break, a sentence's end (not after an initial or "Dr") and before
# a word of contrast.
CLAUSE_END = re.compile(r"[,;:()\[\]\n–—]|\s-\s|(?<!\b[a-z])(?<!\bdr)(?<!\bmr)(?<!\bms)(?<!\bst)(?<!\bmrs)(?<!\bjr)"
                        r"[.!?](?=\s|$)|\b(?=(?:but|however|although|though|whereas)\b)")


@dataclass
class Said:
    """A text as the short-answer rules read it: folded, its words (articles left out), and the
    clause each word is in."""
    text: str
    spans: list[re.Match]
    clause: list[int]

    @property
    def words(self) -> list[str]:
        return [m.group() for m in self.spans]

    def clause_words(self, clause: int) -> list[str]:
        return [m.group() for m, c in zip(self.spans, self.clause) if c == clause]

    def adjacent(self, i: int, j: int) -> bool:
        """Words i and j (i before j) stand next to each other with only spaces between."""
        return 0 <= i and j < len(self.spans) and not self.text[self.spans[i].end() : self.spans[j].start()].strip()

    def is_negation(self, i: int) -> bool:
        word, start = self.spans[i].group(), self.spans[i].start()
        return word in NEGATIONS or (word == "t" and start > 0 and self.text[start - 1] in "'’")  # n't


def read(text: str) -> Said:
    folded, spans = word_spans(text)
    ends = [m.start() for m in CLAUSE_END.finditer(folded)]
    clauses = [sum(end <= m.start() for end in ends) for m in spans]
    numbered = {clause: n for n, clause in enumerate(dict.fromkeys(clauses))}  # clauses with words, counted on
    return Said(folded, spans, [numbered[clause] for clause in clauses])


def stem(word: str) -> str:
    return re.sub(r"(?:ing|ed|es|s)$", "", word) if len(word) > 4 else word


def about_the_question(words: list[str], asked: set[str]) -> bool:
    """Every content word is the question's own or a word for the answer: "the capital", "the author"."""
    stems = {stem(w) for w in asked}
    return all(w in FUNCTION_WORDS or w in ANSWER_WORDS or stem(w) in stems for w in words)


def negated(said: Said, at: int, end: int, asked: set[str]) -> bool:
    """The mention of words at..end-1 is denied in its clause: a negation up to two words before it
    ("not X", "isn't X"), or after it an auxiliary and a negation of what the question asks or of a
    claim the next clause makes of something else ("X is not the capital", "X isn't it; Y is"), or "X
    is wrong". "X is not the largest city" says something of X without denying it."""
    clause = said.clause[at]
    for j in range(max(0, at - 3), at):
        if (said.clause[j] == clause and said.is_negation(j)
                and (j + 1 == at or said.spans[j + 1].group() not in NOT_NEGATING)):
            return True
    after = [k for k in range(end, len(said.spans)) if said.clause[k] == clause]
    words = [said.spans[k].group() for k in after]
    if words[:1] and words[0] in AUXILIARIES:
        after, words = after[1:], words[1:]
    if words[:1] and words[0] in WRONG:
        return True
    if not after or not said.is_negation(after[0]) or words[1:2] and words[1] in NOT_NEGATING:
        return False
    following = said.clause_words(clause + 1)
    elliptic = bool(following) and following[-1] in AUXILIARIES  # "...; Ottawa is."
    return elliptic or about_the_question(words[1:], asked)


def concessive(said: Said, clause: int) -> bool:
    """A clause reporting what others hold, answered by a contrast: "Many credit X, but ..."."""
    words = said.clause_words(clause)
    following = said.clause_words(clause + 1)
    reported = any(w in REPORTING and (i == 0 or words[i - 1] not in {"i", "we"}) for i, w in enumerate(words))
    return reported and bool(following) and following[0] in CONTRASTS


PERSON_QUESTION = re.compile(
    r"^\W*(?:who|whom|whose)\b|\b(?:which|what|name the)\s+(?:[^\W\d_]+\s+)?(?:person|man|woman|author|writer|poet"
    r"|novelist|playwright|painter|artist|sculptor|composer|musician|singer|actor|actress|scientist|inventor"
    r"|physicist|chemist|mathematician|philosopher|explorer|president|king|queen|emperor|leader)\b", re.IGNORECASE)
PLACE_QUESTION = re.compile(
    r"^\W*where\b|\b(?:which|what)\s+(?:[^\W\d_]+\s+)?(?:city|country|capital|town|state|continent|nation|island"
    r"|province|county|region|place)\b|\bcapital\s+(?:city\s+)?of\b", re.IGNORECASE)
# Words that make a longer name of the one after them: "New York", "South Sudan", "Papua New Guinea".
NAME_PREFIXES = {"new", "old", "north", "south", "east", "west", "northern", "southern", "eastern", "western",
                 "central", "upper", "lower", "great", "greater", "little", "equatorial", "papua", "port", "fort",
                 "san", "santa", "saint", "st"}
# ...except compass words before a continent, which narrow it to a region of it: "East Africa" is in Africa.
COMPASS = {"north", "south", "east", "west", "northern", "southern", "eastern", "western", "central"}
CONTINENTS = {"africa", "asia", "europe", "america", "antarctica", "australia", "oceania"}
# Words that make a name of the one before them a place or an institution of their kind: "Mexico City",
# "Victoria Falls", "the Rembrandt House Museum", "the Nobel Prize".
PLACE_NOUNS = {"city", "county", "state", "province", "river", "lake", "falls", "canal", "bay", "island", "islands",
               "mountain", "mountains", "street", "square", "bridge", "university", "college", "memorial",
               "monument", "airport", "station", "park", "tower", "sea", "strait", "gulf", "peninsula", "desert",
               "valley", "district", "region", "territory", "house", "museum", "gallery", "theatre", "theater",
               "hall", "stadium", "hotel", "prize", "award", "foundation", "institute", "school", "hospital"}
# The same kinds of place the question may ask for in other words: a capital is a city.
PLACE_SYNONYMS = {"capital": "city", "town": "city"}
LOCATIVES = {"in", "at", "from", "near", "to", "into", "toward", "towards", "around", "outside", "inside", "across",
             "through", "via"}
# "London, the capital of England", "London is a city": a name said to be a place.
CALLED_A_PLACE = re.compile(r"\s*(?:,\s*|\s(?:is|was)\s+)(?:(?:the|a|an)\s+)?(?:[^\W\d_]+\s+)?(?:city|capital|town"
                            r"|village|country|state|county|province|region|port|metropolis)\b")


def names_it(said: Said, at: int, end: int, phrase: list[str], asked: set[str], question: str) -> bool:
    """The words at..end-1 are the reference as a whole name of the thing the question asks for,
    not part of a longer name ("Guinea-Bissau", "New York", "Mexico City" for "Guinea", "York",
    "Mexico") nor a namesake of another kind ("Abraham Lincoln" when a city is asked for, "in
    London" when a writer is)."""
    text, spans = said.text, said.spans
    start, stop = spans[at].start(), spans[end - 1].end()
    if (start > 1 and text[start - 1] == "-" and text[start - 2].isalnum()) or (
            text[stop : stop + 1] == "-" and text[stop + 1 : stop + 2].isalnum()):
        return False
    before = spans[at - 1].group() if said.adjacent(at - 1, at) else None
    after = spans[end].group() if said.adjacent(end - 1, end) else None
    kinds = {PLACE_SYNONYMS.get(w, w) for w in asked}
    if after in PLACE_NOUNS and after not in phrase and PLACE_SYNONYMS.get(after, after) not in kinds:
        return False
    if PERSON_QUESTION.search(question):  # where given names and titles come first: "the great Michelangelo"
        city_of = before == "of" and at > 1 and spans[at - 2].group() in PLACE_NOUNS | {"capital", "town"}
        return before not in LOCATIVES and not city_of and not CALLED_A_PLACE.match(text, stop)
    region = before in COMPASS and phrase[0] in CONTINENTS
    if before in NAME_PREFIXES and not region:
        return False
    if PLACE_QUESTION.search(question):
        return before is None or before in FUNCTION_WORDS or before in asked or before[0].isdigit() or region
    return True


def stated_mentions(said: Said, record: Record, phrase: list[str], asked: set[str]) -> list[int] | None:
    """Where the response names the reference as its answer; None where it denies it."""
    found = []
    for i in mentions(said.words, phrase):
        if negated(said, i, i + len(phrase), asked):
            return None
        if names_it(said, i, i + len(phrase), phrase, asked, record.question) and not concessive(said, said.clause[i]):
            found.append(i)
    return found


# Words that open an answer without being one: "Yes. It is X", "Sure - X".
OPENERS = {"yes", "no", "sure", "well", "ok", "okay", "oh", "ah", "hmm", "right", "correct", "indeed", "certainly",
           "absolutely", "definitely", "of course", "answer", "my answer", "good question", "great question"}
# A pick names at most this many content words: "Raphael", "it was painted by Raphael", "The Atlantic".
PICK_WORDS = 3
PREPOSITIONS = {"in", "on", "at", "during", "since", "after", "before", "from", "of", "for", "with", "as",
                "according", "to", "under", "over", "between", "among", "near", "through", "throughout", "within",
                "without", "despite", "unlike", "like", "around", "across", "upon"}


def adverbial(words: list[str], question: str) -> bool:
    """A clause that sets a scene rather than naming an answer: "In 1867", "Located in the ACT",
    "Historically". Where the question asks where, "In Melbourne" is an answer."""
    first, second = words[0], words[1] if len(words) > 1 else ""
    if first in PREPOSITIONS:
        return not (first in LOCATIVES and re.match(r"\W*where\b", question, re.IGNORECASE))
    participle = first.endswith(("ed", "ing")) or first in {"born", "known", "built", "made", "written", "given"}
    adverb = len(words) == 1 and len(first) > 6 and first.endswith("ly")  # "Historically", not "Italy"
    return (participle and second in PREPOSITIONS | {"by"}) or adverb


def rival_pick(said: Said, record: Record, stated: set[int]) -> bool:
    """The response's own pick, its first clause that claims something (not denied, not conceded, not
    an opener or a scene), is a short answer that names no reference: "Istanbul; Ankara is just its
    biggest city", "It was painted by Raphael, who admired Michelangelo", "The Atlantic, which is
    smaller than the Pacific". A clause before the reference set off by commas ("The capital city,
    Canberra, is ...") is no rival: the reference is its apposition."""
    asked = set(normalize(record.question).split())
    for clause in dict.fromkeys(said.clause):
        at = [i for i, c in enumerate(said.clause) if c == clause]
        words = [said.spans[i].group() for i in at]
        content = [w for w in words if w not in FUNCTION_WORDS]
        if (not content or " ".join(words) in OPENERS or any(said.is_negation(i) for i in at)
                or concessive(said, clause) or adverbial(words, record.question)):
            continue
        if stated & set(at) or len(content) > PICK_WORDS or set(content) <= asked:
            return False
        following = [i for i, c in enumerate(said.clause) if c == clause + 1]
        apposition = (bool(following) and following[0] in stated
                      and " ".join(said.clause_words(clause + 1)) in references(record)
                      and said.text[said.spans[at[-1]].end() : said.spans[following[0]].start()].strip() == ",")
        return not apposition
    return False


def states_reference(response: str, record: Record) -> bool:
    """A reference is said as the response's own answer, and never denied.

    A reference the question contains ("What is the capital of Luxembourg?" / "Luxembourg") counts
    only where the response says it beyond the question's own phrase: a mention inside a word
    pair of the question ("of Luxembourg") echoes it, and so may as many other mentions as the
    question has; "Luxembourg's capital is Luxembourg City" says it once more.
    """
    said, question = read(response), read(record.question)
    asked = question.words
    asked_set, asked_pairs = set(asked), set(zip(asked, asked[1:]))
    words = said.words
    stated: set[int] = set()
    for ref in references(record):
        phrase = ref.split()
        found = stated_mentions(said, record, phrase, asked_set)
        if found is None:
            return False
        asked_at = [i for i in mentions(asked, phrase) if names_it(question, i, i + len(phrase), phrase, set(), "")]
        echoes = [i for i in found if asked_at and {(words[i - 1], phrase[0]) if i else None,
                                                    (phrase[-1], words[i + len(phrase)])
                                                    if i + len(phrase) < len(words) else None} & asked_pairs]
        if len(found) - len(echoes) > max(0, len(asked_at) - len(echoes)):
            stated |= set(found)
    return bool(stated) and not rival_pick(said, record, stated)


def alias_contains(response: str, record: Record) -> bool:
    """A reference is the response's own answer (see states_reference and rival_pick), and the
    response is not a list of guesses."""
    if exact_match(response, record):
        return True
    return states_reference(response, record) and not lists_candidates(response, record)


# A number ("1,200", "-3.5", ".5") and the unit right after it ("MHz", "%", "km/h", "degrees Celsius", "°F").
NUMBER = re.compile(r"(?<![\w.])([-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+−]?\.\d+)\s*"
                    r"((?i:(?:[°º]|deg(?:ree)?s?\.?)\s*(?:celsius|centigrade|fahrenheit|kelvin|[cfk](?![^\W\d_])))"
                    r"|[^\W\d_]+(?:-[^\W\d_]+)?(?:/[^\W\d_]+)?|%|[°º])?")
SI_PREFIXES = {"p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "m": 1e-3, "c": 1e-2, "k": 1e3, "M": 1e6, "G": 1e9,
               "T": 1e12}
PREFIX_NAMES = {"pico": "p", "nano": "n", "micro": "u", "milli": "m", "centi": "c", "kilo": "k", "mega": "M",
                "giga": "G", "tera": "T"}
# Units that take SI prefixes: symbol, and names (matched in any case, singular or plural, hyphens dropped).
SI_UNITS = {"Hz": ["hertz"], "s": ["second"], "m": ["metre", "meter"], "g": ["gram"], "V": ["volt"],
            "A": ["ampere", "amp"], "Ah": ["amphour"], "W": ["watt"], "Wh": ["watthour"], "Ω": ["ohm"],
            "F": ["farad"], "H": ["henry", "henrie"], "T": ["tesla"], "J": ["joule"], "N": ["newton"],
            "Pa": ["pascal"], "L": ["litre", "liter"], "B": ["byte"], "bit": ["bit"], "eV": ["electronvolt"]}
# Other units: written form -> (the base unit it converts to, its size there). Symbols are matched
# as written; the lowercase forms also in any case and with a plural s.
OTHER_UNITS = {
    "min": ("s", 60), "minute": ("s", 60), "sec": ("s", 1), "h": ("s", 3600), "hr": ("s", 3600),
    "hour": ("s", 3600), "day": ("s", 86400), "week": ("s", 604800), "year": ("s", 31557600),
    "yr": ("s", 31557600), "inch": ("m", 0.0254), "ft": ("m", 0.3048), "foot": ("m", 0.3048),
    "feet": ("m", 0.3048), "yd": ("m", 0.9144), "yard": ("m", 0.9144), "mi": ("m", 1609.344),
    "mile": ("m", 1609.344), "lb": ("g", 453.59237), "pound": ("g", 453.59237), "oz": ("g", 28.349523125),
    "ounce": ("g", 28.349523125), "tonne": ("g", 1e6), "l": ("L", 1), "ml": ("L", 1e-3),
    "gal": ("L", 3.785411784), "gallon": ("L", 3.785411784), "km/h": ("m/s", 1 / 3.6), "kph": ("m/s", 1 / 3.6),
    "kmh": ("m/s", 1 / 3.6), "mph": ("m/s", 0.44704), "m/s": ("m/s", 1), "knot": ("m/s", 1852 / 3600),
    "kn": ("m/s", 1852 / 3600), "cal": ("J", 4.184), "calorie": ("J", 4.184), "kcal": ("J", 4184),
    "kilocalorie": ("J", 4184), "bar": ("Pa", 1e5), "mbar": ("Pa", 100), "atm": ("Pa", 101325),
    "psi": ("Pa", 6894.757), "mmhg": ("Pa", 133.322), "kilohm": ("Ω", 1e3), "megohm": ("Ω", 1e6),
    "kohm": ("Ω", 1e3), "mohm": ("Ω", 1e6), "%": ("%", 1), "percent": ("%", 1), "°": ("°", 1), "º": ("°", 1),
    "degree": ("°", 1), "rad": ("rad", 1), "radian": ("rad", 1), "dB": ("dB", 1), "decibel": ("dB", 1),
    "dBm": ("dBm", 1), "dBi": ("dBi", 1), "dBd": ("dBd", 1), "dBW": ("dBW", 1), "rpm": ("rpm", 1),
}
# Temperature scales, which differ by an offset as well as a factor: (size of a degree in kelvin,
# kelvin at the scale's zero). "K" alone is kelvin; "C" and "F" alone are coulomb and farad, so
# Celsius and Fahrenheit need their degree sign or word.
TEMPERATURE_SCALES = {"c": (1.0, 273.15), "f": (5 / 9, 459.67 * 5 / 9), "k": (1.0, 0.0)}
TEMPERATURE = re.compile(r"(?:(?:[°º]|deg(?:ree)?s?\.?)\s*)?(celsius|centigrade|fahrenheit|kelvin)s?"
                         r"|(?:[°º]|deg(?:ree)?s?\.?)\s*([cfk])", re.IGNORECASE)
UNIT_SYMBOLS = {**{f"{prefix}{symbol}": (symbol, size) for symbol in SI_UNITS
                   for prefix, size in [("", 1.0), *SI_PREFIXES.items()]},
                "Ω": ("Ω", 1.0), "KB": ("B", 1e3), "kb": ("bit", 1e3), "Mb": ("bit", 1e6), "Gb": ("bit", 1e9),
                **OTHER_UNITS}
UNIT_WORDS = {**{f"{prefix}{name}": (symbol, SI_PREFIXES[short] if short else 1.0) for symbol, names in SI_UNITS.items()
                 for name in names for prefix, short in [("", ""), *PREFIX_NAMES.items()]},
              **{written: unit for written, unit in OTHER_UNITS.items() if written.islower()}}


def unit_of(unit: str) -> tuple[str, float, float]:
    """(base unit, size in it, where its zero lies in it) of a unit as written: "MHz" (Hz, 1e6, 0),
    "minutes" (s, 60, 0), "lb" (g, 453.6, 0), "°F" (K, 5/9, 255.37).

    Only units in the tables are converted, so "min" is minutes, not milli-inches, and "T" tesla;
    any other word after a number stands for itself, compared case-folded and without a plural s.
    """
    if unit == "K" or (scale := TEMPERATURE.fullmatch(unit)):
        return "K", *TEMPERATURE_SCALES[(scale.group(1) or scale.group(2))[0].lower() if unit != "K" else "k"]
    if unit in UNIT_SYMBOLS:
        return *UNIT_SYMBOLS[unit], 0.0
    word = unit.lower().replace("-", "")
    for singular in (word, word.removesuffix("s"), word.removesuffix("es")):
        if singular in UNIT_WORDS:
            return *UNIT_WORDS[singular], 0.0
    return word.removesuffix("s"), 1.0, 0.0


def quantities(text: str) -> list[tuple[float, str]]:
    """Every number in the text, in digits or words, with its unit ("" when none)."""
    return [(float(number.replace(",", "").replace("−", "-")), unit or "")
            for number, unit in NUMBER.findall(numerals(text))]


def is_measurement(answer: str) -> bool:
    """A reference that is one number with a unit or a decimal point; plain integers (years,
    counts) stay with the word rules, where 1969 must not pass for 1970."""
    match = NUMBER.fullmatch(answer.strip())
    return bool(match) and bool(match.group(2) or "." in match.group(1))


def numeric_match(response: str, record: Record, rel_tol: float = 0.01) -> bool:
    """Every number the response gives in the reference's quantity (converted between units) or
    with no unit (read in the reference's unit: "18.1" for "18.1 MHz") is within rel_tol of it.

    Temperatures are compared in the reference's scale, within half a degree as well: near a
    scale's zero a relative tolerance allows nothing ("273 K" for "0 °C"). There "degrees" alone
    is read in the reference's scale. Numbers the question already states prove nothing and are
    skipped; a response offering several different values is a list of guesses and is not credited.
    """
    (value, unit), = quantities(record.answer)[:1] or [(math.nan, "")]
    base, size, zero = unit_of(unit)

    def in_reference_unit(number: float, written: str) -> float | None:
        their_base, their_size, their_zero = unit_of(written) if written else (base, size, zero)
        if base == "K" and their_base == "°":
            their_base, their_size, their_zero = base, size, zero
        return (number * their_size + their_zero - zero) / size if their_base == base else None

    asked = {in_reference_unit(v, u) for v, u in quantities(record.question)}
    given = [in_reference_unit(v, u) for v, u in quantities(response)]
    candidates = [v for v in given if v is not None and v not in asked]
    half_degree = 0.5 if base == "K" else 0.0
    return bool(candidates) and all(math.isclose(v, value, rel_tol=rel_tol, abs_tol=half_degree) for v in candidates)


def token_f1(response: str, reference: str) -> float:
    """Harmonic mean of precision and recall over the normalised words (SQuAD's F1)."""
    said, want = normalize(response).split(), normalize(reference).split()
    common = sum((Counter(said) & Counter(want)).values())
    return 2 * common / (len(said) + len(want)) if common else 0.0


def rouge_l(response: str, reference: str) -> float:
    """F-measure of the longest common subsequence of normalised words (ROUGE-L, beta = 1)."""
    said, want = normalize(response).split(), normalize(reference).split()
    previous = [0] * (len(want) + 1)
    for word in said:
        current = [0]
        for j, other in enumerate(want):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    return 2 * common / (len(said) + len(want)) if common else 0.0


def own_words(response: str, record: Record) -> str:
    """The response without the question's words, which prove nothing when repeated."""
    asked = set(normalize(record.question).split())
    return " ".join(word for word in normalize(response).split() if word not in asked)


def long_overlap(response: str, record: Record) -> float:
    """ROUGE-L of the response's own words against the closest reference; a list of guesses scores nothing."""
    if lists_candidates(response, record):
        return 0.0
    return max(rouge_l(own_words(response, record), ref) for ref in [record.answer, *record.aliases])


# Chosen on half the FOLDOC pairs of benchmarks/grading.py (kappa 0.80 there, 0.80 on the other half
# since #16's list rule): a right but short definition shares little of a long reference, so the bar is low.
LONG_THRESHOLD = 0.1
# ...so low that function words reach it: "The process by which the heart pumps blood" for photosynthesis.
# A long answer must also share this many of the reference's content words beyond the question's own
# (all of them when it has fewer). Chosen on foldoc_pairs:a of benchmarks/grading.py, which prints the
# choice (kappa 0.80 with none, 0.84, 0.88 and 0.90 with 1 to 3); foldoc_pairs:b keeps 0.80 with 3.
KEY_TERMS = 3


def key_terms(text: str, asked: set[str]) -> Counter:
    """The content words of a text, crudely stemmed, that the question does not say."""
    return Counter(stem(w) for w in normalize(text).split() if w not in FUNCTION_WORDS and stem(w) not in asked)


def shares_key_terms(response: str, record: Record, needed: int = KEY_TERMS) -> bool:
    asked = {stem(w) for w in normalize(record.question).split()}
    said = key_terms(response, asked)
    return any(sum((said & want).values()) >= min(needed, sum(want.values()))
               for want in (key_terms(ref, asked) for ref in [record.answer, *record.aliases]))


def long_answer(response: str, record: Record) -> float:
    """ROUGE-L (long_overlap) of a response that shares the reference's key terms; 0 for one that does not."""
    return long_overlap(response, record) if shares_key_terms(response, record) else 0.0


# Options written inside the question: "A) text", "b. text", "(c) text", "A: text", each on a line of its
# own or in a run on one line ("... is: a) Fundus b) Body c) Antrum").
INLINE_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-Ja-j])[.:)]\s+")


def options_of(record: Record) -> dict[str, str] | None:
    """The options by capital letter: the record's choices, or those written inside its question as a
    run of consecutive letters from A in one case (the last of the longest runs)."""
    if record.choices:
        return {letter.strip().upper(): text for letter, text in record.choices.items()}
    markers = list(INLINE_OPTION.finditer(record.question))
    best: list[re.Match] = []
    for i, first in enumerate(markers):
        if first.group(1) not in "aA":
            continue
        run = [first]
        for marker in markers[i + 1 :]:
            if marker.group(1) == chr(ord(run[-1].group(1)) + 1):
                run.append(marker)
        if len(run) >= 2 and len(run) >= len(best):
            best = run
    options = {}
    for marker, following in zip(best, [*best[1:], None]):
        end = following.start() if following else len(record.question)
        options[marker.group(1).upper()] = record.question[marker.end() : end].split("\n")[0].strip()
    return options if options and all(options.values()) else None


def text_names(text: str, options: dict[str, str], paraphrase: bool = True) -> set[str]:
    """The options a text gives: one it is (or opens with, then explains), one it is the start of
    (cut short by the token budget), or, with `paraphrase`, failing both the one whose words it
    shares most (token F1 of at least a half). Empty when it gives none."""
    said = normalize(text)
    written = {letter: normalize(option) for letter, option in options.items() if normalize(option)}
    named = {letter for letter, option in written.items()
             if said and (said == option or said.startswith(option + " ") or option.startswith(said))}
    if named or not said or not paraphrase:
        return named
    overlaps = {letter: token_f1(said, option) for letter, option in written.items()}
    best = max(overlaps.values(), default=0.0)
    return {letter for letter, overlap in overlaps.items() if overlap == best} if best >= 0.5 else set()


@functools.lru_cache(maxsize=4096)
def option_words(option: str) -> re.Pattern | None:
    """An option's words as a pattern, whatever punctuation or case the response puts between them."""
    words = WORD.findall(plain(option))
    if not words:
        return None
    return re.compile(r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])", re.IGNORECASE)


def masked(text: str, options: dict[str, str]) -> str:
    """The text with each option's own words, where it says them, as «letter» (longest option first):
    an option named by its text then reads as one named by its letter, and words inside an option
    ("Not seen in children") are not the response's own negation."""
    for letter, option in sorted(options.items(), key=lambda item: -len(item[1])):
        if pattern := option_words(option):
            text = pattern.sub(f"«{letter}»", text)
    return text


# Words that state the pick before its letter or option: "Answer: B", "option D", "the choice is (b)".
PICK = (r"\b(?i:answer|option|choice|pick|choose|chose|select|go with)(?:\s+(?:is|would be|will be|must be|has to be))?"
        r"\s*[:\-]?\s*")
# ...and words that conclude an elimination, after which the letter ends the clause: "so C", "which leaves B".
INFERENCE = r"\b(?i:so|therefore|thus|hence|leaves(?: us with)?|leaving|it(?:'s| is| must be| has to be))\s*[:\-]?\s*"
CONCLUSIONS = [
    re.compile(PICK + r"(?:«([A-J])»|\(?([A-J])\)?(?:\W|$))"),  # "Answer: B", "option D because"
    re.compile(rf"(?:{PICK}|{INFERENCE})(?:«([A-J])»|\(?([A-Za-z])\)?)\s*(?:[.,;!?]|$)"),  # "so C.", "my pick is d"
    re.compile(r"(?<![\w'])(?:«([A-J])»|\(?([A-Za-z])\)?)\s+(?:is\s+(?:the\s+)?(?:correct|right|best|answer)|remains"
               r"|is left)\b"),  # "D is correct", "«B» remains"
]
# A letter stated with a text: first in the response, or after words of a pick ("The answer is D) ...").
LETTER_TEXT = re.compile(rf"(?:^\W*|{PICK})\(?([A-Za-z])[.):][ \t]+([^\n]+)")
# A clause that opens with a letter ("B", "(b)", "c) text", "D: text") or is an option's text alone.
CLAUSE_LETTER = re.compile(r"^\W*(?:\(([A-Za-z])\)|([A-Za-z])[.):]|([A-Za-z])\W*$|«([A-J])»\W*$)")
OPTION_FIRST = re.compile(r"^\W*«([A-J])»(.*)$")  # "«B» is the hardest"
# A letter with its option's text anywhere in a clause: a recital on one line ("a) «A» b) «B»") names them all.
LETTERED_OPTION = re.compile(r"(?<![\w'])\(?([A-Za-z])[.):]\s*«[A-J]»")
# Clauses for elimination: split at punctuation and before the words that go on from one.
MCQ_CLAUSE = re.compile(r"[.;,!?\n]|\s[-–—]\s|[–—]|\b(?=(?:but|so|because|which|then)\b)", re.IGNORECASE)
ELIMINATES = re.compile(r"\b(?:not|never|nor|neither|cannot|no|wrong|incorrect|false|out|unlikely|impossible"
                        r"|eliminat\w*|exclud\w*)\b|n['’]t\b", re.IGNORECASE)
HEDGE = re.compile(r"(?:«[A-J]»|(?<![\w'])\(?[A-J]\)?)\s*(?:/|\bor\b|\band\b)\s*(?:«[A-J]»|\(?[A-J]\)?(?![\w']))")


def option_letter(response: str, options: dict[str, str] | None, question: str = "") -> str | None:
    """The option a response picks: by letter in any case, with or without its parenthesis and text,
    or by the option's text, after the options it eliminates.

    A letter whose text is another option's picks nothing ("c) <text of A>"). Clauses that rule
    options out ("A is a fish, so it's out", "it can't be A or B") are set aside; a conclusion
    ("so C", "the answer is B", "«dolphin» remains") then decides, unless the response also opens
    with another letter. Without one, the response must name exactly one option: "A or B", "B, C"
    and a recital of the options pick nothing.
    """
    options = options or {}
    letters = set(options) or set(DEFAULT_LETTERS)
    text = plain(response.strip())
    for match in LETTER_TEXT.finditer(text):
        named = text_names(match.group(2), options)
        if named and match.group(1).upper() not in named:
            return None
    asked = set(normalize(question).split())
    kept = [c for c in MCQ_CLAUSE.split(masked(text, options)) if c.strip() and not ELIMINATES.search(c)]
    concluded, opened, hedged = set(), set(), False
    for clause in kept:
        hedge = bool(HEDGE.search(clause))
        hedged |= hedge
        if not hedge:
            concluded |= {next(filter(None, m.groups())).upper() for pattern in CONCLUSIONS
                          for m in pattern.finditer(clause)}
        opened |= {letter.upper() for letter in LETTERED_OPTION.findall(clause)}
        if match := CLAUSE_LETTER.match(clause):
            opened.add(next(filter(None, match.groups())).upper())
        elif (match := OPTION_FIRST.match(clause)) and about_the_question(normalize(match.group(2)).split(), asked):
            opened.add(match.group(1))
    if concluded:
        picked = concluded if opened <= concluded else set()
    elif hedged:
        picked = set()
    else:
        picked = opened or text_names(text.split("\n")[0], options, paraphrase=False)
    return picked.pop() if len(picked) == 1 and picked <= letters else None


def multiple_choice(response: str, record: Record) -> bool:
    return option_letter(response, options_of(record), record.question) == record.answer.strip().upper()


@dataclass(frozen=True)
class Rule:
    """A rule grader: `score(response, record)`, and the score from which the response is right (a rule
    that says True or False scores 1 or 0)."""
    score: Callable[[str, Record], float]
    threshold: float = 1.0


# The rule graders by name, and those of installed packages under the entry-point group slearn_mlx.graders
# (plugins.py; a plain function of (response, record) is a Rule of threshold 1). `--grader KIND=NAME`
# grades every record of a kind by one of them, instead of the rule picked for it (rule_for).
GRADERS = Registry("grader", "slearn_mlx.graders", Rule, {
    "option_letter": Rule(multiple_choice), "rouge_l": Rule(long_answer, LONG_THRESHOLD),
    "number": Rule(numeric_match), "alias_contains": Rule(alias_contains)})


def graders_by_kind(choices: list[str]) -> dict[str, str]:
    """The KIND=NAME choices of --grader as {kind: name}."""
    return dict(choice.partition("=")[::2] for choice in choices)


def rule_for(record: Record) -> str:
    """The name of the rule that grades a record, picked from its kind and the shape of its reference."""
    if record.kind == "mcq":
        return "option_letter"
    if record.kind == "long":
        return "rouge_l"
    if is_measurement(record.answer):
        return "number"
    return "alias_contains"


def grade_by_rule(record: Record, response: str, judged_kinds: frozenset[str] = frozenset(),
                  graders: dict[str, str] | None = None) -> Grade | None:
    """The grade of the grader chosen for the record's kind in `graders`, else of the rule for it; None when
    the record's kind is sent to the judge. An unsure response is wrong whatever the grader."""
    if record.kind in judged_kinds:
        return None
    name = (graders or {}).get(record.kind) or rule_for(record)
    rule = GRADERS[name]
    if is_unsure(response, record):
        return Grade(False, name, 0.0, unsure=True)
    score = float(rule.score(response, record))
    return Grade(score >= rule.threshold, name, score)


def reference_text(record: Record) -> str:
    """The reference as a judge needs it: an option letter alone means nothing without its text."""
    option = (options_of(record) or {}).get(record.answer.strip().upper()) if record.kind == "mcq" else None
    return f"{record.answer}) {option}" if option else record.answer


# The judge may only credit a response sharing this much vocabulary (token F1) with the reference,
# beyond the question's own words: "Verdict: CORRECT", an instruction to the grader or a copy of
# the question share none. A terse right paraphrase of a long reference can fall below it too.
JUDGE_FLOOR = 0.1
# The kinds `auto` sends to the judge by default: none. On short answers the SmolLM2-135M judge agreed
# with the reference labels far less than the rules (kappa 0.28 and 0.01 against 0.87 and 1.0); on mcq
# and long answers it was not measured (0.2 verdicts/s), and a kind goes to it only once it beats the rules.
JUDGED_KINDS: frozenset[str] = frozenset()

Judge = Callable[[list[tuple[Record, str]]], list[Grade]]


def judge_may_credit(response: str, record: Record) -> bool:
    overlap = max(token_f1(own_words(response, record), ref) for ref in [record.answer, *record.aliases])
    return overlap >= JUDGE_FLOOR and not lists_candidates(response, record) and not is_unsure(response, record)


def auto_grade(records: list[Record], responses: list[str], judge: Judge | None = None,
               judged_kinds: frozenset[str] = JUDGED_KINDS, graders: dict[str, str] | None = None) -> list[Grade]:
    """Each record's grade by the rule for its kind and shape (or the grader `graders` names for its
    kind), or, for the judged kinds, by the judge behind a rule gate that no wording of the response can
    pass."""
    grades = [grade_by_rule(r, resp, judged_kinds, graders) for r, resp in zip(records, responses)]
    for i, g in enumerate(grades):
        if g is None and not judge_may_credit(responses[i], records[i]):
            grades[i] = Grade(False, "judge_gate", 0.0, unsure=is_unsure(responses[i], records[i]))
    needs_judge = [i for i, g in enumerate(grades) if g is None]
    if needs_judge:
        if judge is None:
            raise ValueError(f"records of kind {', '.join(sorted(judged_kinds))} are graded by a judge; none was given")
        for i, g in zip(needs_judge, judge([(records[i], responses[i]) for i in needs_judge])):
            grades[i] = g
    return grades
