"""A seeded template grammar of voice-assistant requests: the text of the synthetic corpus.

Domains: smart home, timers and alarms, reminders, weather, music, navigation,
calendar and messages, shopping lists.  Numbers and times are written as words
(``SET A TIMER FOR TWENTY FIVE MINUTES``), sentences are 3-12 upper-case words
without punctuation, and the vocabulary is a few hundred words -- small enough
for a tiny model trained for minutes, varied enough for hundreds of thousands of
distinct sentences.

Contractions and letter abbreviations (``WHAT'S``, ``PM``) are avoided on
purpose: TTS engines read them inconsistently, which would make the audio
disagree with the transcript.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Mapping, Sequence, Set

MIN_WORDS = 3
MAX_WORDS = 12

_ONES = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN "
    "FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_ORDINAL_ONES = (
    "_ FIRST SECOND THIRD FOURTH FIFTH SIXTH SEVENTH EIGHTH NINTH TENTH ELEVENTH TWELFTH "
    "THIRTEENTH FOURTEENTH FIFTEENTH SIXTEENTH SEVENTEENTH EIGHTEENTH NINETEENTH"
).split()


def number_words(n: int) -> str:
    """``n`` (0-100) in upper-case words: ``42`` -> ``FORTY TWO``."""
    if not 0 <= n <= 100:
        raise ValueError(f"number_words supports 0..100, got {n}")
    if n == 100:
        return "ONE HUNDRED"
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"


def ordinal_words(n: int) -> str:
    """Day-of-month ordinal (1-31) in words: ``23`` -> ``TWENTY THIRD``."""
    if not 1 <= n <= 31:
        raise ValueError(f"ordinal_words supports 1..31, got {n}")
    if n < 20:
        return _ORDINAL_ONES[n]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return "TWENTIETH" if tens == 2 else "THIRTIETH"
    return f"{_TENS[tens]} {_ORDINAL_ONES[ones]}"


def _numbers(lo: int, hi: int) -> list[str]:
    return [number_words(i) for i in range(lo, hi + 1)]


def _minute_words(m: int) -> str:
    """Minutes after the hour as said in a clock time: 5 -> ``OH FIVE``."""
    return f"OH {number_words(m)}" if m < 10 else number_words(m)


# Each rule maps to alternatives; ``<name>`` refers to another rule and the empty
# string makes a slot optional.  Alternatives are chosen uniformly, so a rule's
# weight is tuned by how many alternatives it lists.
_RULES: dict[str, list[str]] = {
    "S": [
        "<home>",
        "<home>",
        "<home>",
        "<home>",
        "<timer>",
        "<timer>",
        "<alarm>",
        "<alarm>",
        "<reminder>",
        "<weather>",
        "<weather>",
        "<music>",
        "<music>",
        "<nav>",
        "<nav>",
        "<calendar>",
        "<calendar>",
        "<message>",
        "<shopping>",
        "<general>",
    ],
    # -- politeness wrappers -------------------------------------------------
    "ask": ["", "", "", "PLEASE", "CAN YOU", "COULD YOU", "I WANT YOU TO", "HEY COMPUTER"],
    "end": ["", "", "", "", "PLEASE", "NOW", "FOR ME", "RIGHT NOW"],
    # -- smart home ----------------------------------------------------------
    "home": [
        "<ask> TURN <onoff> THE <room> <device> <end>",
        "<ask> TURN THE <device> <onoff> IN THE <room>",
        "<ask> SWITCH <onoff> THE <device> IN THE <room>",
        "<ask> SET THE <room> LIGHTS TO <percent> PERCENT",
        "<ask> DIM THE LIGHTS IN THE <room> <end>",
        "<ask> MAKE THE <room> LIGHTS <brighter>",
        "<ask> CHANGE THE <room> LIGHTS TO <color>",
        "<ask> SET THE THERMOSTAT TO <temperature> DEGREES",
        "<ask> SET THE <room> TEMPERATURE TO <temperature> DEGREES",
        "WHAT IS THE TEMPERATURE IN THE <room>",
        "IS THE <device> IN THE <room> STILL ON",
        "<ask> <lock> THE <door> <end>",
        "IS THE <door> LOCKED",
        "<ask> <openclose> THE <blinds> IN THE <room>",
        "<ask> START THE <appliance> <end>",
        "<ask> STOP THE <appliance>",
        "HOW LONG UNTIL THE <appliance> IS DONE",
        "<ask> TURN EVERYTHING OFF IN THE <room>",
        "<ask> MAKE IT <warmer> IN THE <room>",
    ],
    "onoff": ["ON", "OFF"],
    "room": [
        "KITCHEN",
        "LIVING ROOM",
        "BEDROOM",
        "BATHROOM",
        "OFFICE",
        "GARAGE",
        "HALLWAY",
        "DINING ROOM",
        "BASEMENT",
        "GUEST ROOM",
        "KIDS ROOM",
    ],
    "device": ["LIGHTS", "LAMP", "FAN", "HEATER", "TELEVISION", "AIR CONDITIONER", "RADIO"],
    "brighter": ["BRIGHTER", "DARKER", "A LITTLE BRIGHTER", "A LITTLE DARKER"],
    "color": ["RED", "BLUE", "GREEN", "YELLOW", "PURPLE", "WARM WHITE"],
    "lock": ["LOCK", "UNLOCK"],
    "door": ["FRONT DOOR", "BACK DOOR", "GARAGE DOOR", "SIDE DOOR"],
    "openclose": ["OPEN", "CLOSE"],
    "blinds": ["BLINDS", "CURTAINS", "WINDOWS"],
    "appliance": [
        "DISHWASHER",
        "WASHING MACHINE",
        "DRYER",
        "OVEN",
        "COFFEE MAKER",
        "VACUUM",
        "KETTLE",
    ],
    "warmer": ["WARMER", "COOLER", "A BIT WARMER", "A BIT COOLER"],
    # -- timers and alarms ---------------------------------------------------
    "timer": [
        "<ask> SET A TIMER FOR <duration>",
        "<ask> SET A <food> TIMER FOR <duration>",
        "<ask> START A <duration> TIMER",
        "HOW MUCH TIME IS LEFT ON THE <food> TIMER",
        "HOW MUCH TIME IS LEFT ON MY TIMER",
        "<ask> CANCEL THE <food> TIMER",
        "<ask> CANCEL THE <duration> TIMER",
        "<ask> ADD <duration> TO THE <food> TIMER",
        "<ask> PAUSE THE <food> TIMER",
    ],
    "duration": [
        "<n2_59> MINUTES",
        "<n2_59> MINUTES",
        "<n2_59> MINUTES",
        "ONE MINUTE",
        "<n2_59> SECONDS",
        "<n2_12> HOURS",
        "ONE HOUR",
        "HALF AN HOUR",
        "AN HOUR AND <n2_59> MINUTES",
        "<n1_9> AND A HALF MINUTES",
        "<n1_5> AND A HALF HOURS",
    ],
    "food": ["PASTA", "RICE", "EGG", "PIZZA", "TEA", "BREAD", "LAUNDRY", "CHICKEN"],
    "alarm": [
        "<ask> WAKE ME UP AT <time>",
        "<ask> WAKE ME UP <dayref> AT <time>",
        "<ask> SET AN ALARM FOR <time>",
        "<ask> SET AN ALARM FOR <time> <dayref>",
        "<ask> SET AN ALARM FOR <weekday> AT <time>",
        "<ask> CANCEL MY <time> ALARM",
        "<ask> MOVE MY ALARM TO <time>",
        "WHAT ALARMS DO I HAVE <dayref>",
        "<ask> SNOOZE FOR <n2_30> MINUTES",
        "<ask> TURN OFF MY ALARM",
        "<ask> SET A REPEATING ALARM FOR <time> ON <weekdays>",
    ],
    "time": [
        "<hour> <minute>",
        "<hour> <minute>",
        "<hour> <minute> <daypart>",
        "<hour> <daypart>",
        "HALF PAST <hour>",
        "QUARTER PAST <hour>",
        "QUARTER TO <hour>",
        "NOON",
        "MIDNIGHT",
        "<hour> THIRTY",
    ],
    "hour": _numbers(1, 12),
    "minute": [_minute_words(m) for m in range(5, 60)],
    "daypart": ["IN THE MORNING", "IN THE AFTERNOON", "IN THE EVENING", "AT NIGHT"],
    "weekday": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"],
    "weekdays": ["WEEKDAYS", "WEEKENDS", "<weekday> AND <weekday>"],
    "dayref": [
        "TODAY",
        "TOMORROW",
        "TONIGHT",
        "TOMORROW MORNING",
        "TOMORROW NIGHT",
        "THIS WEEKEND",
        "ON <weekday>",
        "NEXT <weekday>",
        "THIS <weekday>",
        "ON <weekday> MORNING",
        "THIS EVENING",
    ],
    # -- reminders -----------------------------------------------------------
    "reminder": [
        "<ask> REMIND ME TO <task> AT <time>",
        "<ask> REMIND ME TO <task> <dayref>",
        "<ask> REMIND ME IN <duration> TO <task>",
        "<ask> REMIND ME <dayref> AT <time> TO <task>",
        "WHAT ARE MY REMINDERS FOR <dayref>",
        "<ask> DELETE THE REMINDER TO <task>",
    ],
    "task": [
        "CALL <person>",
        "TAKE OUT THE TRASH",
        "WATER THE PLANTS",
        "BUY <item>",
        "PICK UP THE KIDS",
        "FEED THE CAT",
        "WALK THE DOG",
        "PAY THE RENT",
        "TAKE MY MEDICINE",
        "CHECK THE MAIL",
        "BOOK A TABLE",
        "CLEAN THE KITCHEN",
        "CHARGE MY PHONE",
        "LOCK THE <door>",
        "START THE <appliance>",
        "LEAVE FOR <place_name>",
    ],
    # -- weather -------------------------------------------------------------
    "weather": [
        "WHAT IS THE WEATHER <dayref>",
        "WHAT IS THE WEATHER IN <city>",
        "WHAT IS THE WEATHER IN <city> <dayref>",
        "WHAT IS THE WEATHER LIKE <dayref>",
        "WILL IT <precip> <dayref>",
        "WILL IT <precip> IN <city> <dayref>",
        "HOW <hot> WILL IT BE <dayref>",
        "HOW <hot> IS IT IN <city> RIGHT NOW",
        "WHAT IS THE TEMPERATURE IN <city>",
        "DO I NEED <gear> <dayref>",
        "WHAT IS THE FORECAST FOR <city> <dayref>",
        "WHAT IS THE FORECAST FOR THE NEXT <n2_10> DAYS",
        "IS IT GOING TO BE <sky> <dayref>",
        "WILL IT BE WARMER THAN <temperature> DEGREES <dayref>",
    ],
    "precip": ["RAIN", "SNOW", "BE WINDY", "BE FOGGY", "FREEZE"],
    "hot": ["HOT", "COLD", "WARM", "WINDY"],
    "gear": ["AN UMBRELLA", "A JACKET", "SUNSCREEN"],
    "sky": ["SUNNY", "CLOUDY", "RAINY", "STORMY", "FOGGY", "HOT", "COLD", "WARM"],
    "city": [
        "LONDON",
        "PARIS",
        "BERLIN",
        "MADRID",
        "TOKYO",
        "CHICAGO",
        "BOSTON",
        "SEATTLE",
        "TORONTO",
        "SYDNEY",
    ],
    "temperature": _numbers(10, 95),
    # -- music ---------------------------------------------------------------
    "music": [
        "<ask> PLAY SOME <genre> MUSIC",
        "<ask> PLAY SOME <genre> MUSIC IN THE <room>",
        "<ask> PLAY <genre> MUSIC ON THE <room> SPEAKER",
        "<ask> PLAY MY <playlist> PLAYLIST",
        "<ask> SHUFFLE MY <playlist> PLAYLIST",
        "<ask> ADD THIS SONG TO MY <playlist> PLAYLIST",
        "<ask> <skip> THIS SONG",
        "<ask> PLAY THE <nextprev> SONG",
        "<ask> <pause> THE MUSIC <end>",
        "<ask> TURN THE VOLUME <updown>",
        "<ask> TURN IT <updown> A LITTLE",
        "<ask> SET THE VOLUME TO <n1_10>",
        "WHAT SONG IS THIS",
        "<ask> PLAY <genre> MUSIC FOR <duration>",
    ],
    "genre": ["JAZZ", "ROCK", "CLASSICAL", "BLUES", "COUNTRY", "PIANO", "POP", "DANCE"],
    "playlist": ["WORKOUT", "MORNING", "DINNER", "PARTY", "FAVORITE"],
    "skip": ["SKIP", "REPEAT", "LIKE"],
    "nextprev": ["NEXT", "LAST"],
    "pause": ["PAUSE", "STOP", "RESUME"],
    "updown": ["UP", "DOWN"],
    # -- navigation ----------------------------------------------------------
    "nav": [
        "<ask> NAVIGATE TO <place>",
        "<ask> GIVE ME DIRECTIONS TO <place>",
        "<ask> TAKE ME TO <place>",
        "<ask> TAKE ME HOME",
        "HOW LONG WILL IT TAKE TO GET TO <place>",
        "HOW LONG DOES IT TAKE TO GET TO <place> BY <mode>",
        "HOW FAR IS <place> FROM HERE",
        "<ask> FIND THE NEAREST <poi>",
        "<ask> FIND A <poi> NEAR <place>",
        "IS THERE TRAFFIC ON THE WAY TO <place>",
        "<ask> AVOID <avoid> ON THE WAY TO <place>",
        "WHAT TIME WILL I GET TO <place>",
        "HOW DO I GET TO <city> BY <mode>",
        "<ask> ADD A STOP AT THE NEAREST <poi>",
    ],
    "place": ["<place_name>", "<place_name>", "<address>", "WORK", "<city>"],
    "place_name": [
        "THE AIRPORT",
        "THE TRAIN STATION",
        "THE OFFICE",
        "THE GYM",
        "THE HOSPITAL",
        "THE LIBRARY",
        "THE MALL",
        "THE BEACH",
        "THE PARK",
        "THE SCHOOL",
    ],
    "address": [
        "<n1_99> <street> STREET",
        "<n1_99> <street> AVENUE",
        "<n1_99> <street> ROAD",
        "<street> STREET",
        "<street> AVENUE",
    ],
    "street": ["MAIN", "OAK", "PINE", "MAPLE", "LAKE", "HILL", "RIVER"],
    "poi": [
        "GAS STATION",
        "PHARMACY",
        "COFFEE SHOP",
        "SUPERMARKET",
        "RESTAURANT",
        "BAKERY",
        "HOTEL",
    ],
    "mode": ["CAR", "TRAIN", "BUS", "BIKE", "TAXI"],
    "avoid": ["TOLLS", "HIGHWAYS", "TRAFFIC"],
    # -- calendar ------------------------------------------------------------
    "calendar": [
        "WHAT IS ON MY CALENDAR <dayref>",
        "WHAT DO I HAVE <dayref>",
        "<ask> SCHEDULE A <event> WITH <person> <dayref> AT <time>",
        "<ask> SCHEDULE A <event> <dayref> AT <time>",
        "<ask> ADD A <event> TO MY CALENDAR ON <date>",
        "<ask> ADD A <event> TO MY CALENDAR FOR <weekday> AT <time>",
        "<ask> MOVE MY <event> TO <time>",
        "<ask> MOVE MY <event> TO <weekday>",
        "<ask> CANCEL MY <event> WITH <person>",
        "<ask> CANCEL MY <event> <dayref>",
        "WHEN IS MY NEXT <event>",
        "AM I FREE <dayref> AT <time>",
        "WHAT DAY OF THE WEEK IS <date>",
        "HOW MANY DAYS UNTIL <date>",
        "WHEN IS MY <event> WITH <person>",
    ],
    "event": [
        "MEETING",
        "DENTIST APPOINTMENT",
        "DOCTOR APPOINTMENT",
        "LUNCH",
        "DINNER",
        "PHONE CALL",
        "HAIRCUT",
        "INTERVIEW",
        "PIANO LESSON",
        "TEAM MEETING",
        "BIRTHDAY PARTY",
    ],
    "date": ["<month> <ordinal>", "THE <ordinal> OF <month>"],
    "month": [
        "JANUARY",
        "FEBRUARY",
        "MARCH",
        "APRIL",
        "MAY",
        "JUNE",
        "JULY",
        "AUGUST",
        "SEPTEMBER",
        "OCTOBER",
        "NOVEMBER",
        "DECEMBER",
    ],
    # Days 1-10 and 20-31 only: the teen ordinals would add ten rare words.
    "ordinal": [ordinal_words(d) for d in (*range(1, 11), *range(20, 32))],
    "person": [
        "ANNA",
        "DAVID",
        "MARIA",
        "JAMES",
        "SARAH",
        "PETER",
        "EMMA",
        "MICHAEL",
        "MOM",
        "DAD",
    ],
    # -- messages and calls --------------------------------------------------
    "message": [
        "<ask> CALL <person> <end>",
        "<ask> CALL <person> ON SPEAKER",
        "<ask> SEND A MESSAGE TO <person>",
        "<ask> TEXT <person> THAT I AM <status>",
        "<ask> TELL <person> I WILL BE THERE IN <duration>",
        "<ask> TELL <person> I WILL BE THERE AT <time>",
        "DID <person> CALL ME <dayref>",
        "<ask> READ THE LAST MESSAGE FROM <person>",
    ],
    "status": [
        "RUNNING LATE",
        "ON MY WAY",
        "ALMOST THERE",
        "AT HOME",
        "AT WORK",
        "STUCK IN TRAFFIC",
        "LEAVING NOW",
    ],
    # -- shopping and general ------------------------------------------------
    "shopping": [
        "<ask> ADD <item> TO MY SHOPPING LIST",
        "<ask> ADD <item> AND <item> TO MY SHOPPING LIST",
        "<ask> REMOVE <item> FROM MY SHOPPING LIST",
        "IS <item> ON MY SHOPPING LIST",
        "<ask> ORDER MORE <item>",
        "WHAT IS ON MY SHOPPING LIST",
    ],
    "item": [
        "MILK",
        "EGGS",
        "BREAD",
        "BUTTER",
        "APPLES",
        "BANANAS",
        "CHEESE",
        "COFFEE",
        "RICE",
        "PASTA",
        "CHICKEN",
        "SOAP",
    ],
    "general": [
        "WHAT TIME IS IT <cityref>",
        "WHAT IS THE DATE <dayref>",
        "WHAT IS <n1_99> PLUS <n1_99>",
        "WHAT IS <n1_99> TIMES <n1_12>",
        "WHAT IS <n1_99> MINUS <n1_99>",
        "HOW MANY DAYS ARE IN <month>",
        "WHAT IS <percent> PERCENT OF <n1_99>",
    ],
    "cityref": ["", "", "IN <city>"],
    # -- numbers -------------------------------------------------------------
    "percent": [number_words(p) for p in range(5, 101, 5)],
    "n1_5": _numbers(1, 5),
    "n1_9": _numbers(1, 9),
    "n1_10": _numbers(1, 10),
    "n1_12": _numbers(1, 12),
    "n2_10": _numbers(2, 10),
    "n2_12": _numbers(2, 12),
    "n2_30": _numbers(2, 30),
    "n2_59": _numbers(2, 59),
    "n1_99": _numbers(1, 99),
}

_REF_RE = re.compile(r"<([a-z0-9_]+)>")


def _expand(
    rule: str, rng: random.Random, rules: Mapping[str, Sequence[str]] = _RULES, used: set[str] | None = None
) -> str:
    """Random expansion of ``rule``: pick an alternative, expand its references.

    ``rules`` replaces the grammar (same draws for the same alternatives); ``used``
    collects the names of every rule expanded.
    """
    if used is not None:
        used.add(rule)
    template = rng.choice(rules[rule])
    return _REF_RE.sub(lambda m: _expand(m.group(1), rng, rules, used), template)


def _normalise(sentence: str) -> str:
    # Empty optional slots leave double spaces behind.
    return " ".join(sentence.split())


def generate_sentences(n: int, seed: int, exclude: Set[str] = frozenset()) -> list[str]:
    """``n`` distinct sentences, deterministic for ``seed``, none of them in ``exclude``.

    Sentences are upper-case words separated by single spaces, without
    punctuation, ``MIN_WORDS``..``MAX_WORDS`` words long.  Use ``exclude`` to
    make disjoint sets (e.g. train sentences that never occur in test).
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(seed)
    # The grammar has far more sentences than anyone asks for, so running out of
    # attempts means n is unreasonable for it.
    return _distinct(n, 50 * n + 1000, lambda: _normalise(_expand("S", rng)), exclude)


def _distinct(n: int, max_attempts: int, draw: Callable[[], str | None], exclude: Set[str]) -> list[str]:
    """Rejection sampling: the first ``n`` distinct sentences of ``draw`` (None = rejected)
    that are not in ``exclude`` and have ``MIN_WORDS``..``MAX_WORDS`` words."""
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(max_attempts):
        if len(out) == n:
            break
        sentence = draw()
        if sentence is None or sentence in seen or sentence in exclude:
            continue
        if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
            continue
        seen.add(sentence)
        out.append(sentence)
    if len(out) < n:
        raise ValueError(f"could only generate {len(out)} distinct sentences of the {n} requested")
    return out


def generate_slot_sentences(
    n: int, seed: int, slot_values: Mapping[str, Sequence[str]], exclude: Set[str] = frozenset()
) -> list[str]:
    """``n`` distinct sentences, each using at least one slot of ``slot_values`` filled with its words.

    ``slot_values`` replaces the alternatives of grammar rules, e.g. ``{"person":
    ["THADDEUS", ...], "city": [...]}``: new names in the grammar's own sentence
    frames (``CALL THADDEUS ON SPEAKER``).  Sentences that never reach one of these
    slots are skipped, so every sentence holds at least one of the new words.
    Deterministic for ``seed``; none of the sentences is in ``exclude``.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not slot_values:
        raise ValueError("slot_values must name at least one slot")
    for slot, values in slot_values.items():
        if slot not in _RULES or slot == "S":
            raise ValueError(f"unknown slot {slot!r}; choose from the grammar's rules except 'S'")
        if isinstance(values, str) or not values or not all(re.fullmatch(r"[A-Z]+( [A-Z]+)*", v) for v in values):
            raise ValueError(f"slot {slot!r} needs a list of upper-case words, got {values!r}")
    rules = {**_RULES, **{slot: list(values) for slot, values in slot_values.items()}}
    rng = random.Random(seed)

    def draw() -> str | None:
        used: set[str] = set()
        sentence = _normalise(_expand("S", rng, rules, used))
        return sentence if used & slot_values.keys() else None

    # Only some sentence frames reach a given slot (about one in ten for "person").
    return _distinct(n, 500 * n + 1000, draw, exclude)


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    words: set[str] = set()
    for alternatives in _RULES.values():
        for template in alternatives:
            words.update(_REF_RE.sub(" ", template).split())
    return frozenset(words)


def vocabulary() -> set[str]:
    """Every word that :func:`generate_sentences` can produce."""
    return set(_vocabulary())


DIGIT_WORDS = tuple(_ONES[:10])


def generate_digit_strings(n: int, seed: int, max_digits: int = 1) -> list[str]:
    """``n`` prompts of 1..``max_digits`` digit words (``ZERO`` .. ``NINE``), deterministic for ``seed``.

    With ``max_digits`` 1 the prompts are isolated digits in balanced order: each block of
    ten holds every digit once (shuffled), so any voice split still hears all ten.  Longer
    prompts draw their length and digits uniformly.  Repeats are intended: with ten words
    the variety comes from the voices, not the texts.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(max_digits, int) or max_digits < 1:
        raise ValueError(f"max_digits must be a positive int, got {max_digits!r}")
    rng = random.Random(seed)
    if max_digits == 1:
        out: list[str] = []
        while len(out) < n:
            block = list(DIGIT_WORDS)
            rng.shuffle(block)
            out.extend(block)
        return out[:n]
    return [" ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, max_digits))) for _ in range(n)]
