"""Who may be named as the approver of a model release: one rule, in two packages.

NIST AI RMF MEASURE 1.3 (independent assessors): the approver recorded in a release's
``release_decision.json`` is a person, never an automated step. The workload refuses such a
name at release time (``--approver`` / ``QSO_RELEASE_APPROVER``), skyrig when a person approves
afterwards (``skyrig model approve``) and when it checks the evidence (``skyrig governance
check``). The two packages depend on nothing of each other, so this module is the same file in
both (``skyrig.governance.approver`` and ``qso_anomaly.registry.approver``; a test keeps them
identical): standard library only, no error class of either package.

A name is compared word by word after normalising it: Unicode compatibility forms folded
(NFKC), ``camelCase`` split, case folded, every run of characters that are not letters or
digits (hyphens, underscores, dots, brackets, whitespace) made one space. It names an automated
step when it holds one of :data:`AUTOMATED_PHRASES` as whole words (``release gates``,
``Release_Gates``, ``ReleaseGates``, ``deploy pipeline``), when it ends in GitHub's mark of an
app account, ``[bot]`` (``dependabot[bot]``, ``renovate[bot]``: what ``github.actor`` holds in
a run a bot started), or when every word of it that is not a number is one of
:data:`AUTOMATED_WORDS` or several of them run together (``CI-bot``, ``deploy[bot]``,
``AUTO.``, ``github-actions``, ``ci-runner-01``, ``cibot``, ``DeployBot2``). Short
words such as ``ci``, ``auto`` or ``bot`` alone do not refuse a name that also holds other
words, since people carry them: ``Ci Wang``, ``Jan Bot``; ``Circe`` and ``Autumn`` are other
words altogether, and a run of short words only (``Cici``) is a name.
"""

from __future__ import annotations

import re
import unicodedata

#: Phrases (normalised as by :func:`normalise_name`) no person's name holds: a name holding
#: one as whole words names an automated step.
AUTOMATED_PHRASES: tuple[str, ...] = ("release gates", "automatic", "pipeline")

#: Words of automated identities (CI jobs, bot and service accounts, the release gates): a name
#: made of these words only names an automated step.
AUTOMATED_WORDS: frozenset[str] = frozenset({
    "release", "gates", "gate", "automatic", "automated", "auto", "ci", "cd", "pipeline",
    "bot", "robot", "job", "deploy", "github", "gitlab", "actions", "jenkins", "runner",
    "service", "account", "system",
})

#: The longest approver name accepted, in characters: a person's name is far shorter, and the
#: name is recorded as an MLflow tag (values up to 100,000 characters) after the release
#: decision file, so a longer one left the two disagreeing.
MAX_NAME_CHARS = 200

#: GitHub's suffix of app (bot) accounts, e.g. ``dependabot[bot]`` (compared case-folded).
BOT_ACCOUNT_SUFFIX = "[bot]"

_LOWER_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_WORD = re.compile(r"[\W_]+")


def normalise_name(name: str) -> str:
    """Return ``name`` as lower-case words separated by single spaces.

    Args:
        name: Any text, e.g. ``" CI-Bot "`` or ``"ReleaseGates"``.

    Returns:
        The words of ``name``, e.g. ``"ci bot"`` or ``"release gates"``; ``""`` for a name
        with no letter or digit.
    """
    text = _LOWER_UPPER.sub(" ", unicodedata.normalize("NFKC", name))
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def automated_name(name: str) -> str | None:
    """Return what in ``name`` names an automated step, or None.

    Args:
        name: A proposed approver, e.g. ``"CI-bot "``.

    Returns:
        The entry of :data:`AUTOMATED_PHRASES` found first, else the normalised name when
        it ends in :data:`BOT_ACCOUNT_SUFFIX` (``"dependabot bot"`` for ``"dependabot[bot]"``)
        or all its words but numbers are :data:`AUTOMATED_WORDS`, alone or run together
        (``"ci bot"`` for ``"CI-bot "``, ``"ci runner 01"``, ``"cibot"``), else None.
    """
    normal = normalise_name(name)
    padded = f" {normal} "
    for phrase in AUTOMATED_PHRASES:
        if f" {phrase} " in padded:
            return phrase
    if unicodedata.normalize("NFKC", name).strip().casefold().endswith(BOT_ACCOUNT_SUFFIX):
        return normal
    words = [w for w in normal.split() if not w.isdigit()]
    if words and all(w.rstrip("0123456789") in AUTOMATED_WORDS or _run_together(w)
                     for w in words):
        return normal
    return None


def _run_together(word: str) -> bool:
    """Whether ``word`` is two or more :data:`AUTOMATED_WORDS` run together, one of them
    three letters or longer (``cibot``, ``deploybot``, ``autojob``; not ``cici``), each
    optionally followed by digits (``ci2bot``)."""
    def ends(i: int) -> set[int]:
        out = set()
        for w in AUTOMATED_WORDS:
            if word.startswith(w, i):
                j = i + len(w)
                while j < len(word) and word[j].isdigit():
                    j += 1
                out.add(j)
        return out

    # reachable[i]: (tokens used, a long token used) for every way to spell word[:i]
    reachable: dict[int, set[tuple[int, bool]]] = {0: {(0, False)}}
    for i in range(len(word)):
        for used, long in reachable.get(i, set()):
            for j in ends(i):
                reachable.setdefault(j, set()).add(
                    (min(used + 1, 2), long or len(word[i:j].rstrip("0123456789")) >= 3))
    return (2, True) in reachable.get(len(word), set())


def _script(ch: str) -> str:
    """The script of a letter: the first word of its Unicode name; Han, hiragana and
    katakana are one (Japanese writes a name in them together: ``山田はなこ``)."""
    script = unicodedata.name(ch, "?").split()[0]
    return "CJK" if script.startswith(("CJK", "HIRAGANA", "KATAKANA")) else script


def mixed_script_word(name: str) -> str | None:
    """Return the first word of ``name`` whose letters come from more than one script.

    Look-alike letters (Cyrillic ``е``, ``о`` or Greek ``ο`` in a Latin word: ``rеlease
    gates``) would let an automated name past :func:`automated_name`; a person's name keeps
    each word in one script (``José``, ``山田はなこ``, ``Łukasz``). The script is the first word of
    the letter's Unicode name (LATIN, CYRILLIC, GREEK, CJK, ...), after NFKC.

    Args:
        name: A proposed approver.

    Returns:
        The offending word, or None.
    """
    for word in _NOT_WORD.split(unicodedata.normalize("NFKC", name)):
        scripts = {_script(ch) for ch in word if ch.isalpha()}
        if len(scripts) > 1:
            return word
    return None


def approver_problem(name: str) -> tuple[str, str] | None:
    """Say why ``name`` cannot be a release's approver, or return None if it can.

    Args:
        name: A proposed approver as given (surrounding whitespace is not a problem).

    Returns:
        ``(message, hint)`` for an error (the message quotes ``name``, its start only when
        it is too long), or None for a person's name. Problems: more than
        :data:`MAX_NAME_CHARS` characters (surrounding whitespace aside); no letter or
        digit; letters of two alphabets within one word (:func:`mixed_script_word`); an
        automated step's name as whole words (see :func:`automated_name`); a
        control or format character (a line break or tab would forge or split lines of the
        model card and the approvals record). Spaces
        of any width (no-break, thin, ideographic: ``"山田\u3000太郎"``) are not a problem.
    """
    person = "give the name of the human who reviewed the release"
    if len(name.strip()) > MAX_NAME_CHARS:
        message = (f"approver {name.strip()[:40]!r}... is {len(name.strip())} characters long,"
                   f" not a person's name (at most {MAX_NAME_CHARS})")
        return message, person
    if any(not ch.isprintable() and unicodedata.category(ch) != "Zs" for ch in name.strip()):
        message = (f"approver {name!r} holds a control character (a line break or tab would"
                   " forge or split lines of the model card and the release decision)")
        return message, "give the reviewer's name on one line"
    if not normalise_name(name):
        return f"approver {name!r} is not a person (no name in it)", person
    mixed = mixed_script_word(name)
    if mixed is not None:
        return ((f"approver {name!r} mixes alphabets within the word {mixed!r} (look-alike"
                 " letters such as Cyrillic 'е' for Latin 'e')"),
                "type the reviewer's name in one alphabet per word")
    auto = automated_name(name)
    if auto is not None:
        phrases = ", ".join(repr(a) for a in AUTOMATED_PHRASES)
        return (f"approver {name!r} is not a person: {auto!r} names an automated step",
                (f"{person} (names holding {phrases}, bot accounts ('...[bot]'), or names"
                 " made only of words such as 'ci', 'bot', 'auto' or 'deploy' are refused)"))
    return None
