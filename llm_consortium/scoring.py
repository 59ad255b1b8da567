"""Scoring answers against expected ones, and the statistics of ``eval``.

Scorers (``--scorer``):

* ``exact`` — the answer, stripped of surrounding whitespace, equals the
  expected text (also stripped). Case-sensitive.
* ``contains`` — the expected text (stripped) occurs in the answer.
  Case-sensitive.
* ``number`` — the last number in the answer (``1,234.5``, ``-3``, ``2e3``,
  ``50%`` → 50) equals the expected number (relative tolerance 1e-6).
* ``regex:PATTERN`` — ``re.search(PATTERN, answer)`` finds a match. In the
  pattern, ``{expected}`` stands for the expected text (regex-escaped).
* ``judge:MODEL`` — the ``llm`` model MODEL is asked whether the answer
  agrees with the expected one and replies yes or no; its reply is kept.

An expected value may be a list: the answer is correct if it matches any
item. Numbers in the dataset are compared as their JSON text (``42`` →
``"42"``) by the text scorers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

SCORER_KINDS = ("exact", "contains", "number", "regex", "judge")
WILSON_Z = 1.959963984540054  # the 97.5th percentile of the normal distribution
NUMBER_RE = re.compile(
    r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d])"
    r"|(?<![\w.])[-−]?\.\d+"
)
EXPECTED_PLACEHOLDER = "{expected}"
YES_WORDS = {"yes", "y", "true", "correct"}
NO_WORDS = {"no", "n", "false", "incorrect", "wrong"}


@dataclass(frozen=True)
class Scorer:
    kind: str
    argument: str | None = None  # the pattern, or the judge model's name

    def __str__(self) -> str:
        return self.kind if self.argument is None else f"{self.kind}:{self.argument}"


def parse_scorer(text: str) -> Scorer:
    """``exact``, ``contains``, ``number``, ``regex:PATTERN`` or ``judge:MODEL``."""
    kind, sep, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind in ("exact", "contains", "number") and not sep:
        return Scorer(kind)
    if kind == "regex" and sep and argument:
        try:
            re.compile(argument.replace(EXPECTED_PLACEHOLDER, ""))
        except re.error as ex:
            raise ConfigError(f"--scorer regex: invalid pattern '{argument}': {ex}") from None
        return Scorer(kind, argument)
    if kind == "judge" and sep and argument.strip():
        return Scorer(kind, argument.strip())
    raise ConfigError(
        f"Unknown --scorer '{text}': use exact, contains, number, regex:PATTERN or judge:MODEL"
    )


def expected_texts(expected: Any) -> list[str]:
    """The acceptable answers: a list's items, or the one value, as text."""
    items = expected if isinstance(expected, list) else [expected]
    return [item if isinstance(item, str) else json.dumps(item) for item in items]


@dataclass
class Score:
    correct: bool | None  # None: could not be scored (the judge failed)
    detail: str | None = None
    judge_prompt: str | None = None
    judge_verdict: str | None = None
    judge_error: str | None = None


def parse_number(text: str) -> float | None:
    """``text`` read as one number (``1,234``, ``$5``, ``50%``, ``-2.5``)."""
    cleaned = text.strip().replace("−", "-").strip("$€£%").replace(",", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def last_number(text: str) -> float | None:
    found = NUMBER_RE.findall(text)
    return parse_number(found[-1]) if found else None


def score_text(scorer: Scorer, answer: str, expected: Any) -> Score:
    """Every scorer but the judge (which needs a model call: ``judge``)."""
    wanted = expected_texts(expected)
    if scorer.kind == "exact":
        return Score(any(answer.strip() == item.strip() for item in wanted))
    if scorer.kind == "contains":
        return Score(any(item.strip() in answer for item in wanted))
    if scorer.kind == "number":
        numbers = [value for value in map(parse_number, wanted) if value is not None]
        if not numbers:
            return Score(False, "the expected value is not a number")
        got = last_number(answer)
        if got is None:
            return Score(False, "no number in the answer")
        return Score(
            any(math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-9) for value in numbers),
            f"read {got:g}",
        )
    if scorer.kind == "regex":
        assert scorer.argument is not None
        patterns = (
            [scorer.argument.replace(EXPECTED_PLACEHOLDER, re.escape(item.strip())) for item in wanted]
            if EXPECTED_PLACEHOLDER in scorer.argument
            else [scorer.argument]
        )
        return Score(any(re.search(pattern, answer) for pattern in patterns))
    raise ValueError(f"score_text cannot score with {scorer}")


def judge_prompt(question: str, answer: str, expected: Any) -> str:
    from .prompts import load

    wanted = expected_texts(expected)
    shown = wanted[0] if len(wanted) == 1 else " OR ".join(wanted)
    # One pass over the template, so text inside the answer is never re-substituted.
    values = {"question": question, "expected": shown, "answer": answer}
    return re.sub(r"\{(question|expected|answer)\}", lambda m: values[m.group(1)], load("judge_prompt.txt"))


def parse_verdict(reply: str) -> bool | None:
    """yes → True, no → False, anything else → None. The first word decides;
    failing that, the first stand-alone yes or no."""
    words = re.findall(r"[a-z]+", reply.lower())
    if words and words[0] in YES_WORDS | NO_WORDS:
        return words[0] in YES_WORDS
    for word in words:
        if word in ("yes", "no"):
            return word == "yes"
    return None


def judge(model: Any, question: str, answer: str, expected: Any) -> Score:
    """Ask ``model`` (an ``llm.Model``) for a yes/no verdict."""
    from .batch import error_text

    prompt = judge_prompt(question, answer, expected)
    try:
        reply = model.prompt(prompt, stream=False).text()
    except Exception as ex:  # noqa: BLE001 - stored with the row; it is re-judged on resume
        return Score(None, judge_prompt=prompt, judge_error=error_text(ex))
    verdict = parse_verdict(reply)
    return Score(
        bool(verdict),
        None if verdict is not None else "the judge replied neither yes nor no",
        judge_prompt=prompt,
        judge_verdict=reply,
    )


# -- statistics ----------------------------------------------------------------


def wilson_interval(correct: int, n: int, z: float = WILSON_Z) -> tuple[float | None, float | None]:
    """The Wilson score interval for ``correct`` successes out of ``n``."""
    if n <= 0:
        return None, None
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n the bound is exactly 0 or 1 (rounding would miss it).
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
