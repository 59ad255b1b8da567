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
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")


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
    """``0.8``, ``80``, ``80%``, `` 0.8 `` → 0.8; anything else → None."""
    if text is None:
        return None
    match = _NUMBER.search(text)
    if not match:
        return None
    value = float(match.group(0).replace(",", "."))
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


def _last_bool(text: str, tag: str) -> bool | None:
    for block in reversed(_blocks(text, tag)):
        value = parse_bool(block)
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
_RANK = re.compile(
    r"<\s*rank\b([^>]*)>(.*?)<\s*/\s*rank\s*>", re.IGNORECASE | re.DOTALL
)
_POSITION = re.compile(r"position\s*=\s*['\"]?\s*(\d+)", re.IGNORECASE)


def parse_ranking(text: str, known_ids: Sequence[str]) -> list[str]:
    """Member ids from the last ``<ranking>``, best first; unknown ids dropped."""
    block = _last_block(text, "ranking")
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


def _areas(text: str) -> list[str]:
    block = _last_block(text, "refinement_areas")
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
    missing tags. Rank judging returns the top-ranked member's answer."""
    by_id = {result.member.id: result for result in results}
    ranking = parse_ranking(text, list(by_id))
    confidence = _last_confidence(text)
    needs_iteration = _last_bool(text, "needs_iteration")
    top = by_id[ranking[0]] if ranking else None
    if judging_method == "rank":
        if top is None:
            raise ValueError("the arbiter's reply has no usable <ranking> of the response ids")
        synthesis = top.answer or top.text or ""
        analysis = _last_block(text, "analysis") or (
            f"Top: #{top.member.id}. Ranking: {', '.join(ranking)}"
        )
        confidence = 1.0 if confidence is None else confidence
    else:
        synthesis = _last_block(text, "synthesis")
        if synthesis is None:
            synthesis = _strip_known_blocks(text)
        analysis = _last_block(text, "analysis") or ""
        confidence = 0.0 if confidence is None else confidence
    return Decision(
        synthesis=synthesis,
        confidence=confidence,
        analysis=analysis,
        dissent=_last_block(text, "dissent") or "",
        needs_iteration=bool(needs_iteration),
        refinement_areas=_areas(text),
        ranking=ranking,
        chosen_response_id=top.response_id if top else None,
        chosen_member_id=top.member.id if top else None,
        raw_arbiter_response=text,
    )


def _strip_known_blocks(text: str) -> str:
    stripped = text
    for tag in ("confidence", "needs_iteration", "analysis", "dissent", "refinement_areas", "ranking"):
        stripped = re.sub(
            rf"<\s*{tag}\b[^>]*>.*?<\s*/\s*{tag}\s*>", "", stripped, flags=re.IGNORECASE | re.DOTALL
        )
    return stripped.strip() or text.strip()


class SynthesisStream:
    """Finds the final synthesis in a streamed arbiter reply as it arrives.

    The arbiter is asked for ``<confidence>`` and ``<needs_iteration>`` before
    ``<synthesis>``. When ``<synthesis>`` opens, ``is_final(confidence,
    needs_iteration)`` decides whether this reply ends the run; only then is
    the synthesis passed on, piece by piece, until ``</synthesis>``. Leading and
    trailing white space is not passed on, so the streamed text equals the
    stored synthesis.
    """

    _OPEN = re.compile(r"<\s*synthesis\b[^>]*>", re.IGNORECASE)
    _CLOSE = re.compile(r"<\s*/\s*synthesis\s*>", re.IGNORECASE)
    _CLOSE_TAG = "</synthesis>"

    def __init__(self, is_final: Callable[[float | None, bool | None], bool]) -> None:
        self.is_final = is_final
        self.buffer = ""
        self.state = "before"  # before -> streaming -> done, or off
        self.start = 0
        self.emitted = ""

    def feed(self, chunk: str) -> str:
        self.buffer += chunk
        if self.state == "before":
            opening = self._OPEN.search(self.buffer)
            if opening:
                head = self.buffer[: opening.start()]
                final = self.is_final(_last_confidence(head), _last_bool(head, "needs_iteration"))
                self.state = "streaming" if final else "off"
                self.start = opening.end()
        if self.state != "streaming":
            return ""
        body = self.buffer[self.start :].lstrip()
        closing = self._CLOSE.search(body)
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
