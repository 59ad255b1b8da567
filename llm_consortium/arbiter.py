"""The arbiter's prompt and the parsing of its reply.

Member text is data. Before it goes into a prompt, every tag whose name this
plugin uses for structure or for the arbiter's answer is neutralised
(``<synthesis>`` → ``‹synthesis>``), so a member cannot close its
``model_response`` element early or forge the arbiter's tags — not even when the
arbiter quotes it back, because the quoted copy no longer contains a real tag.
Members are shown by id only, never by model name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .defaults import FALSE_WORDS, TRUE_WORDS
from .prompts import load
from .results import Decision, MemberResult

RESERVED_TAGS = (
    "model_responses",
    "model_response",
    "synthesis",
    "confidence",
    "analysis",
    "dissent",
    "needs_iteration",
    "refinement_areas",
    "area",
    "ranking",
    "rank",
    "user_instructions",
    "conversation_history",
    "original_prompt",
    "iteration_history",
    "previous_synthesis",
)
_RESERVED_OPEN = re.compile(
    r"<(?=\s*/?\s*(?:" + "|".join(RESERVED_TAGS) + r")\b)", re.IGNORECASE
)
_NUMBER = re.compile(r"[-+]?[0-9]+(?:[.,][0-9]+)?")
_RATIO = re.compile(
    r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*(?:/|out\s+of)\s*([0-9]+(?:[.,][0-9]+)?)\s*$", re.IGNORECASE
)
T = TypeVar("T")


def neutralise(text: str) -> str:
    """Make reserved tags in untrusted text inert (``<`` → ``‹``)."""
    return _RESERVED_OPEN.sub("‹", text or "")


@functools.lru_cache(maxsize=None)
def _block_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<\s*{tag}\b[^>]*>(.*?)<\s*/\s*{tag}\s*>", re.IGNORECASE | re.DOTALL)


def _blocks(text: str, tag: str) -> list[str]:
    return [match.group(1) for match in _block_pattern(tag).finditer(text or "")]


def _last_block(text: str, tag: str) -> str | None:
    blocks = _blocks(text, tag)
    return blocks[-1].strip() if blocks else None


def parse_confidence(text: str | None) -> float | None:
    """``0.8``, ``80``, ``80%``, `` 0.8 ``, ``8/10``, ``0.8 (high)`` → 0.8.

    None when there is no number, or several that are not a ratio: "a number
    between 0 and 1" (an arbiter echoing the prompt's template) is not 0."""
    if text is None:
        return None
    ratio = _RATIO.match(text)
    if ratio:
        numerator, denominator = (float(part.replace(",", ".")) for part in ratio.groups())
        if denominator <= 0:
            return None
        value = numerator / denominator
    else:
        numbers = _NUMBER.findall(text)
        if len(numbers) != 1:
            return None
        value = float(numbers[0].replace(",", "."))
        if "%" in text or value > 1:
            value /= 100
    return min(max(value, 0.0), 1.0)


def parse_bool(text: str | None) -> bool | None:
    word = (text or "").strip().strip(".").lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def _last_confidence(text: str) -> float | None:
    for block in reversed(_blocks(text, "confidence")):
        value = parse_confidence(block)
        if value is not None:
            return value
    return None


def member_confidence(text: str) -> float:
    """A member's self-reported confidence; 0.5 when it gives none."""
    value = _last_confidence(text)
    return 0.5 if value is None else value


def member_answer(text: str) -> str | None:
    return _last_block(text, "answer")


# -- prompts ---------------------------------------------------------------
def format_responses(results: Sequence[MemberResult]) -> str:
    parts = []
    for result in results:
        confidence = "" if result.confidence is None else f' confidence="{result.confidence:g}"'
        parts.append(
            f'<model_response id="{result.member.id}"{confidence}>\n'
            f"{neutralise(result.text or '')}\n"
            "</model_response>"
        )
    return "\n\n".join(parts)


def format_history(turns: Sequence[tuple[str, str]]) -> str:
    if not turns:
        return "(none: this is the first message of the conversation)"
    lines = [f"{role.capitalize()}: {neutralise(text)}" for role, text in turns]
    return "\n\n".join(lines)


def format_iterations(decisions: Sequence[Decision]) -> str:
    if not decisions:
        return "(none: this is the first iteration)"
    parts = []
    for number, decision in enumerate(decisions, start=1):
        areas = "\n".join(f"- {area}" for area in decision.refinement_areas) or "- (none)"
        parts.append(
            f"Iteration {number} (confidence {decision.confidence:g}):\n"
            f"Synthesis:\n{neutralise(decision.synthesis)}\n"
            f"Refinement areas:\n{neutralise(areas)}"
        )
    return "\n\n".join(parts)


def build_arbiter_prompt(
    *,
    judging_method: str,
    original_prompt: str,
    results: Sequence[MemberResult],
    history: Sequence[tuple[str, str]],
    previous: Sequence[Decision],
    user_instructions: str | None,
    iteration: int,
    max_iterations: int,
) -> str:
    template = load("rank_prompt.txt" if judging_method == "rank" else "arbiter_prompt.txt")
    return template.format(
        user_instructions=user_instructions or "(none)",
        conversation_history=format_history(history),
        original_prompt=neutralise(original_prompt),
        iteration_history=format_iterations(previous),
        model_responses=format_responses(results),
        iteration=iteration,
        max_iterations=max_iterations,
    )


def build_refinement_prompt(
    original_prompt: str, iteration: int, synthesis: str, refinement_areas: Sequence[str]
) -> str:
    areas = "\n".join(f"- {area}" for area in refinement_areas) or "- (none given)"
    return load("refinement_prompt.txt").format(
        iteration=iteration,
        original_prompt=original_prompt,
        previous_synthesis=synthesis,
        refinement_areas=areas,
    )


# -- parsing -----------------------------------------------------------------
# One rule, for a streamed reply and a complete one alike:
#
# * Only *top-level* blocks count: a tag inside another answer block (a draft
#   ``<synthesis>`` quoted in ``<analysis>``) is that block's text. A block
#   runs to the first matching closing tag; an opening tag that is never
#   closed is ignored, except ``<synthesis>``, which then runs to the end.
# * The synthesis is the first top-level ``<synthesis>`` that follows a usable
#   top-level ``<confidence>`` (the order the arbiter is asked for); the
#   decision's confidence and ``needs_iteration`` are the last usable ones
#   before it. Without such a synthesis: the last top-level ``<synthesis>``,
#   and the last usable confidence and ``needs_iteration`` anywhere.
# * Every other field is its last top-level block.
#
# A streamed synthesis is therefore known the moment it opens, and it is the
# same text a complete reply gives (``--no-stream``).
_ANSWER_TAGS = (
    "synthesis", "confidence", "needs_iteration", "analysis", "dissent", "refinement_areas", "ranking",
)
_ANSWER_TAG = re.compile(r"<\s*(/)?\s*(" + "|".join(_ANSWER_TAGS) + r")\b[^>]*>", re.IGNORECASE)


@functools.lru_cache(maxsize=None)
def _closing_pattern(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<\s*/\s*{tag}\s*>", re.IGNORECASE)


@dataclass
class Block:
    """A top-level block of an arbiter reply; ``start`` is where its body
    begins in the reply."""

    tag: str
    body: str
    start: int


@dataclass
class ReplyScanner:
    """Finds the top-level blocks of an arbiter reply, also while it is
    still arriving: ``scan(text)`` with the text so far (each call with a
    longer text), ``scan(text, complete=True)`` once it is whole."""

    blocks: list[Block] = field(default_factory=list)
    position: int = 0
    #: body start of a top-level ``<synthesis>`` that is open at the end of
    #: the text seen so far
    open_synthesis: int | None = None

    def scan(self, text: str, complete: bool = False) -> ReplyScanner:
        self.open_synthesis = None
        while (tag_match := _ANSWER_TAG.search(text, self.position)) is not None:
            if tag_match.group(1):  # a stray closing tag at top level
                self.position = tag_match.end()
                continue
            tag = tag_match.group(2).lower()
            closing = _closing_pattern(tag).search(text, tag_match.end())
            if closing is not None:
                self.blocks.append(Block(tag, text[tag_match.end() : closing.start()], tag_match.end()))
                self.position = closing.end()
            elif not complete:
                self.position = tag_match.start()  # wait for the rest of the block
                if tag == "synthesis":
                    self.open_synthesis = tag_match.end()
                return self
            elif tag == "synthesis":
                self.blocks.append(Block(tag, text[tag_match.end() :], tag_match.end()))
                self.position = len(text)
            else:
                self.position = tag_match.end()  # never closed: not a block
        return self

    def last(self, tag: str) -> str | None:
        bodies = [block.body.strip() for block in self.blocks if block.tag == tag]
        return bodies[-1] if bodies else None

    def signals(self, before: int | None = None) -> tuple[float | None, bool | None]:
        """The last usable confidence and ``needs_iteration`` (before the body
        start ``before``, if given)."""
        confidence: float | None = None
        needs_iteration: bool | None = None
        for block in self.blocks:
            if before is not None and block.start >= before:
                break
            if block.tag == "confidence":
                confidence = _or(parse_confidence(block.body), confidence)
            elif block.tag == "needs_iteration":
                needs_iteration = _or(parse_bool(block.body), needs_iteration)
        return confidence, needs_iteration

    def chosen_synthesis(self) -> Block | None:
        """The first synthesis after a usable confidence (see the rule above)."""
        confidence_seen = False
        for block in self.blocks:
            if block.tag == "confidence" and parse_confidence(block.body) is not None:
                confidence_seen = True
            elif block.tag == "synthesis" and confidence_seen:
                return block
        return None


def _or(value: T | None, default: T | None) -> T | None:
    return default if value is None else value


_RANK = re.compile(
    r"<\s*rank\b([^>]*)>(.*?)<\s*/\s*rank\s*>", re.IGNORECASE | re.DOTALL
)
_POSITION = re.compile(r"position\s*=\s*['\"]?\s*(\d+)", re.IGNORECASE)


def parse_ranking(block: str | None, known_ids: Sequence[str]) -> list[str]:
    """Member ids from a ``<ranking>`` block's body, best first; unknown ids dropped."""
    if block is None:
        return []
    known = set(known_ids)
    entries: list[tuple[int, int, str]] = []
    for order, match in enumerate(_RANK.finditer(block)):
        position_match = _POSITION.search(match.group(1))
        position = int(position_match.group(1)) if position_match else order + 1
        content = match.group(2).strip()
        candidate = content if content in known else None
        if candidate is None:
            numbers = re.findall(r"\d+", content)
            candidate = next((number for number in numbers if number in known), None)
        if candidate is not None:
            entries.append((position, order, candidate))
    ranking: list[str] = []
    for _, _, member_id in sorted(entries):
        if member_id not in ranking:
            ranking.append(member_id)
    return ranking


def _areas(block: str | None) -> list[str]:
    if not block:
        return []
    areas = [area.strip() for area in _blocks(block, "area") if area.strip()]
    if areas:
        return areas
    return [line.strip(" -*•\t") for line in block.splitlines() if line.strip(" -*•\t")]


def parse_decision(
    text: str, results: Sequence[MemberResult], judging_method: str
) -> Decision:
    """Parse an arbiter reply; tolerant of case, whitespace, quoting and
    missing tags. Rank judging returns the top-ranked member's answer.

    A reply that does not follow the format — no ``<synthesis>`` or no usable
    ``<confidence>`` (rank judging: no usable ``<ranking>``) — still gives a
    decision, with ``format_problem`` saying what is missing."""
    scanner = ReplyScanner().scan(text or "", complete=True)
    by_id = {result.member.id: result for result in results}
    ranking = parse_ranking(scanner.last("ranking"), list(by_id))
    top = by_id[ranking[0]] if ranking else None
    problems: list[str] = []
    if judging_method == "rank":
        confidence, needs_iteration = scanner.signals()
        if top is None:
            problems.append("no <ranking> of the response ids")
        synthesis = (top.answer or top.text or "") if top else ""
        analysis = scanner.last("analysis") or (
            f"Top: #{top.member.id}. Ranking: {', '.join(ranking)}" if top else ""
        )
        confidence = 1.0 if confidence is None else confidence
    else:
        chosen = scanner.chosen_synthesis()
        if chosen is not None:
            confidence, needs_iteration = scanner.signals(before=chosen.start)
            synthesis = chosen.body.strip()
        else:
            confidence, needs_iteration = scanner.signals()
            synthesis = scanner.last("synthesis") or ""
            if scanner.last("synthesis") is None:
                problems.append("no <synthesis>")
            if confidence is None:
                problems.append("no usable <confidence>")
        analysis = scanner.last("analysis") or ""
        confidence = 0.0 if confidence is None else confidence
    return Decision(
        synthesis=synthesis,
        confidence=confidence,
        analysis=analysis,
        dissent=scanner.last("dissent") or "",
        needs_iteration=bool(needs_iteration),
        refinement_areas=_areas(scanner.last("refinement_areas")),
        ranking=ranking,
        chosen_response_id=top.response_id if top else None,
        chosen_member_id=top.member.id if top else None,
        raw_arbiter_response=text,
        format_problem=", ".join(problems) or None,
    )


def format_outcome(problem: str, fallback: str | None) -> str:
    """What happened when the arbiter ignored the reply format, in words."""
    if fallback is None:
        done = "asked again with a format reminder, it followed the format"
    else:
        done = f"it ignored a format reminder too, so the answer is {fallback}'s, not a synthesis"
    return f"ignored the reply format ({problem}); {done}"


class SynthesisStream:
    """Finds the final synthesis in a streamed arbiter reply as it arrives,
    by the same rule as ``parse_decision`` (``ReplyScanner``).

    When the synthesis opens, ``is_final(confidence, needs_iteration)``
    decides whether this reply ends the run; only then is the synthesis
    passed on, piece by piece, until its closing tag. Leading and trailing
    white space is not passed on, so the streamed text equals the stored
    synthesis.
    """

    _CLOSE_TAG = "</synthesis>"

    def __init__(self, is_final: Callable[[float | None, bool | None], bool]) -> None:
        self.is_final = is_final
        self.buffer = ""
        self.state = "before"  # before -> streaming -> done, or off
        self.start = 0
        self.emitted = ""
        self._scanner = ReplyScanner()

    def _find_start(self) -> None:
        scanner = self._scanner.scan(self.buffer)
        chosen = scanner.chosen_synthesis()
        if chosen is not None:
            start = chosen.start
        elif scanner.open_synthesis is not None and scanner.signals()[0] is not None:
            start = scanner.open_synthesis
        else:
            return
        confidence, needs_iteration = scanner.signals(before=start)
        self.state = "streaming" if self.is_final(confidence, needs_iteration) else "off"
        self.start = start

    def feed(self, chunk: str) -> str:
        self.buffer += chunk
        if self.state == "before":
            self._find_start()
        if self.state != "streaming":
            return ""
        body = self.buffer[self.start :].lstrip()
        closing = _closing_pattern("synthesis").search(body)
        if closing:
            ready = body[: closing.start()].rstrip()
            self.state = "done"
        else:
            ready = body.rstrip()
            for size in range(min(len(self._CLOSE_TAG), len(ready)), 0, -1):
                if self._CLOSE_TAG.startswith(ready[-size:].lower()):
                    ready = ready[:-size].rstrip()
                    break
        new = ready[len(self.emitted) :] if ready.startswith(self.emitted) else ""
        self.emitted += new
        return new

    @property
    def streamed(self) -> bool:
        return bool(self.emitted)
