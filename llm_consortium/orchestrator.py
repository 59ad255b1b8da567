"""The run loop: members answer concurrently, the arbiter judges, repeat.

The loop is pure: it parses no CLI arguments, prints nothing and opens no
database of its own. It writes through the ``Store`` it is given and reports
``events`` to whoever iterates it — ``ConsortiumModel.execute`` (``llm -m``),
``llm consortium run`` and ``orchestrate()`` (Python) all drive the same loop.
Auto and manual context differ only in how a member is called: in its own
persistent ``llm`` conversation, or with one fresh prompt each iteration.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import llm

from . import arbiter as arbiter_text
from . import resolve
from .calls import POLL_SECONDS, CallGroup, CallOutcome, CallRequest
from .clients import shared_pool
from .config import ConsortiumConfig
from .errors import ConfigError, RunFailed, StoreError
from .events import (
    ArbiterIgnoredFormat,
    ArbiterStarted,
    Event,
    IterationFinished,
    IterationStarted,
    MemberFinished,
    RunFinished,
    RunStarted,
    SynthesisDelta,
)
from .prompts import load
from .processing import Processed, keep_notes, process_with
from .redaction import redact
from .results import (
    Decision,
    IterationContext,
    Member,
    MemberResult,
    ResponseEmbedding,
    members_from_models,
)
from .db import Store, shared_store
from .stopping import IterationVerdict, judge_iteration
from .strategies.base import processes_in_memory
from .terminal import valid_unicode

Turn = tuple[str, str]
# Member results are stored (then reported) together, at most this many
# seconds after the first of them arrived; an iteration's last results wait
# instead until the arbiter has been asked (``Run._release``).
STORE_BATCH_SECONDS = 0.05
# A failed iteration's message lists at most this many distinct member errors.
MAX_ERROR_LINES = 10


@dataclass
class _Held:
    """An iteration's results not yet stored (its last batch, and which
    answers reached the arbiter), and how many of its results were reported."""

    total: int = 0
    done: int = 0
    results: list[MemberResult] = field(default_factory=list)
    judged: tuple[list[MemberResult], Sequence[MemberResult]] | None = None


def normalize_history(history: Any) -> list[Turn]:
    """Conversation history as ``[(role, text), …]`` with roles user/assistant.

    Accepts ``llm`` Message objects (``prompt.messages``), dicts with
    ``role``/``content``, ``(role, text)`` pairs, or the original plugin's
    plain-text history (kept as one user turn).
    """
    if not history:
        return []
    if isinstance(history, str):
        return [("user", f"Earlier conversation:\n{history}")]
    turns: list[Turn] = []
    for item in history:
        if isinstance(item, tuple):
            role, text = item
        elif isinstance(item, Mapping):
            role, text = item.get("role", "user"), item.get("content") or item.get("text") or ""
        else:
            role = getattr(item, "role", "user")
            text = "".join(getattr(part, "text", "") or "" for part in getattr(item, "parts", []))
        if role in ("user", "assistant") and str(text).strip():
            turns.append((role, valid_unicode(str(text))))
    return turns


def _thread_messages(thread: Sequence[tuple[str, str]]) -> list[Any]:
    """``llm`` messages for earlier ``(prompt, answer)`` turns."""
    messages: list[Any] = []
    for prompt, answer in thread:
        messages += [llm.user(prompt), llm.assistant(answer)]
    return messages


def has_history(conversation: Any) -> bool:
    """Whether an ``llm`` conversation already holds earlier turns."""
    return bool(getattr(conversation, "responses", None) or getattr(conversation, "loaded_messages", None))


def history_from_messages(messages: Sequence[Any]) -> list[Turn]:
    """Earlier turns from ``prompt.messages``: everything before the last
    user message (the current prompt)."""
    items = list(messages)
    for position in range(len(items) - 1, -1, -1):
        if getattr(items[position], "role", None) == "user":
            return normalize_history(items[:position])
    return normalize_history(items)


class ConsortiumOrchestrator:
    """Runs a consortium. ``orchestrate()`` returns the original plugin's
    result dict; ``run()`` yields events as the run progresses.

    As in the original, the settings are plain attributes that may be
    reassigned between runs (``models``, ``arbiter``, ``system_prompt``,
    ``confidence_threshold``, ``max_iterations``, ``minimum_iterations``,
    ``judging_method``, ``manual_context``, ``strategy``); assigning
    ``config`` resets them all. Under automatic context each member instance
    keeps its own ``llm`` conversation (``model_conversations``, keyed
    ``"{model}_{instance}"``) and the arbiter its own
    (``arbiter_conversation``) for the life of the orchestrator, so a reused
    orchestrator continues them turn after turn.
    """

    def __init__(
        self,
        config: ConsortiumConfig,
        config_name: str | None = None,
        store: Store | None = None,
    ) -> None:
        self.config_name = config_name
        self._store = store
        self.config = config
        self.iteration_history: list[dict[str, Any]] = []
        self._conversation_history: Any = ""
        self.consortium_id: str | None = None
        self._embedding_service: Any = None
        self.model_conversations: dict[str, Any] = {}
        self.arbiter_conversation: Any = None
        # Threads rebuilt from the store for conversations not started yet.
        self._rebuilt: tuple[dict[tuple[str, int], list[Turn]], list[Turn]] = ({}, [])

    @property
    def config(self) -> ConsortiumConfig:
        return self._config

    @config.setter
    def config(self, config: ConsortiumConfig) -> None:
        from .strategies import create_strategy

        self._config = config
        self.models: dict[str, int] = dict(config.models)
        self.arbiter: str | None = config.arbiter
        self.system_prompt: str | None = config.system_prompt
        self.confidence_threshold: float = config.confidence_threshold
        self.max_iterations: int = config.max_iterations
        self.minimum_iterations: int = config.minimum_iterations
        self.judging_method: str = config.judging_method
        self.manual_context: bool = config.manual_context
        self.strategy = create_strategy(config.strategy, self, config.strategy_params)

    def effective_config(self) -> ConsortiumConfig:
        """The config with the attributes as they are now (validated)."""
        data = self._config.to_dict()
        data.update(
            models=dict(self.models),
            arbiter=self.arbiter,
            system_prompt=self.system_prompt,
            confidence_threshold=self.confidence_threshold,
            max_iterations=self.max_iterations,
            minimum_iterations=self.minimum_iterations,
            judging_method=self.judging_method,
            manual_context=self.manual_context,
        )
        if self.strategy.forced_judging_method:
            data["judging_method"] = self.strategy.forced_judging_method
        return ConsortiumConfig(**data)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = shared_store()
        return self._store

    def get_embedding_service(self) -> Any:
        """The embedding service of this consortium (created on first use)."""
        if self._embedding_service is None:
            from .embeddings import create_embedding_service

            self._embedding_service = create_embedding_service(self._config)
        return self._embedding_service

    # -- persistent conversations (automatic context) ------------------------
    def reset_model_conversations(self) -> None:
        """Forget every member instance's conversation."""
        self.model_conversations.clear()

    def reset_arbiter_conversation(self) -> None:
        """Forget the arbiter's conversation."""
        self.arbiter_conversation = None

    def _rebuild_threads(self, history: list[Turn]) -> None:
        """Before its first run, an orchestrator given earlier turns of a
        conversation (``llm -c``) finds the runs that answered them, so each
        member instance and the arbiter continue their own threads."""
        if self.model_conversations or self.arbiter_conversation is not None:
            return  # the conversations of this process go on
        pairs = [
            (history[i][1], history[i + 1][1])
            for i in range(len(history) - 1)
            if history[i][0] == "user" and history[i + 1][0] == "assistant"
        ]
        runs = self.store.runs_answering(self.config_name, pairs) if pairs else []
        self._rebuilt = self.store.conversation_threads(runs) if runs else ({}, [])

    def member_conversation(
        self, model: Any, model_id: str, instance: int, system: Any, history: list[Any]
    ) -> Any:
        """The member instance's own conversation, created on first use: it
        starts from its own thread rebuilt from the store, else from
        ``history`` (the conversation's earlier messages), after ``system``."""
        key = f"{model_id}_{instance}"
        if key not in self.model_conversations:
            conversation = model.conversation()
            thread = self._rebuilt[0].get((model_id, instance))
            turns = _thread_messages(thread) if thread else history
            if turns:
                conversation.loaded_messages = [system, *turns]
            self.model_conversations[key] = conversation
        return self.model_conversations[key]

    def arbiter_conversation_for(self, model: Any) -> Any:
        """The arbiter's conversation, created (and rebuilt) on first use."""
        if self.arbiter_conversation is None:
            conversation = model.conversation()
            thread = self._rebuilt[1]
            if thread:
                conversation.loaded_messages = _thread_messages(thread)
            self.arbiter_conversation = conversation
        return self.arbiter_conversation

    def orchestrate(
        self,
        prompt: str,
        conversation_history: Any = None,
        consortium_id: str | None = None,
        *,
        attachments: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        self._conversation_history = conversation_history or ""
        run = self.run(
            prompt, history=conversation_history, run_id=consortium_id, attachments=attachments
        )
        for _ in run:
            pass
        assert run.result is not None
        return run.result

    def run(
        self,
        prompt: str,
        *,
        history: Any = None,
        run_id: str | None = None,
        attachments: Sequence[Any] | None = None,
        stream_final: bool = False,
    ) -> Run:
        turns = normalize_history(history)
        if not self.manual_context:
            self._rebuild_threads(turns)
        return Run(
            self,
            prompt,
            history=turns,
            run_id=run_id or str(uuid.uuid4()),
            attachments=list(attachments or []),
            stream_final=stream_final,
        )


class Run:
    """One run. Iterate it for events; afterwards ``result`` holds the
    result dict and ``status`` is ``success``, ``failed`` or ``interrupted``.

    The run row is written before the first member is called. Member answers
    are stored in batches as they arrive — an iteration's last batch as soon
    as the arbiter has been asked, so that storing it adds nothing to the
    wait (or before the strategy runs, when it may take long) — and always
    before they are reported; every arbiter answer is stored as it arrives.
    Nothing is lost when the run fails or is interrupted, and the run is
    never left ``running``.
    """

    def __init__(
        self,
        orchestrator: ConsortiumOrchestrator,
        prompt: str,
        *,
        history: list[Turn],
        run_id: str,
        attachments: list[Any],
        stream_final: bool,
    ) -> None:
        self.orchestrator = orchestrator
        self.config = orchestrator.effective_config()
        self.strategy = orchestrator.strategy
        self.store = orchestrator.store
        self.prompt = valid_unicode(prompt)
        self.history = history
        self.run_id = run_id
        self.attachments = attachments
        self.stream_final = stream_final
        self.status = "pending"
        self.result: dict[str, Any] | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cancel = threading.Event()
        self._system_messages: dict[str, Any] = {}
        self._held = _Held()
        self._started = time.monotonic()
        self._events: Iterator[Event] | None = None

    def __iter__(self) -> Iterator[Event]:
        if self._events is None:
            self._events = self._run()
        return self._events

    # -- helpers ------------------------------------------------------------
    def _add_usage(self, input_tokens: int | None, output_tokens: int | None) -> None:
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens

    def _is_final(self, iteration: int, confidence: float | None, needs_iteration: bool | None) -> bool:
        return self.verdict(iteration, confidence, needs_iteration).final

    def verdict(
        self, iteration: int, confidence: float | None, needs_iteration: bool | None
    ) -> IterationVerdict:
        config = self.config
        return judge_iteration(
            iteration,
            confidence,
            needs_iteration,
            threshold=config.confidence_threshold,
            min_iterations=config.minimum_iterations,
            max_iterations=config.max_iterations,
        )

    # -- the loop -----------------------------------------------------------
    def _run(self) -> Iterator[Event]:
        config = self.config
        members = members_from_models(config.models)
        strategy = self.strategy
        self.orchestrator.consortium_id = self.run_id
        self.orchestrator.iteration_history = []
        strategy.initialize_state()
        # One pass over llm's models for the arbiter and every member.
        models, missing = resolve.get_models([*([config.arbiter] if config.arbiter else []), *config.models])
        # One HTTP client per endpoint (llm builds one per call).
        clients = shared_pool()
        models = {name: clients.adopt(model) for name, model in models.items()}
        arbiter_model = None
        if config.arbiter:
            if config.arbiter in missing:
                raise ConfigError(f"Unknown arbiter model: {config.arbiter}")
            arbiter_model = models[config.arbiter]
        try:
            self.store.start_run(
                self.run_id, self.prompt, config, config_name=self.orchestrator.config_name, history=self.history
            )
        except StoreError as ex:
            raise StoreError(f"Cannot record this run: {ex}; no model was called") from None
        self.status = "running"
        error: str | None = None
        decision: Decision | None = None
        iterations: list[IterationContext] = []
        decisions: list[Decision] = []
        streamed = False
        reached = 0  # the iterations begun, failed or not
        try:
            yield RunStarted(self.run_id, self.orchestrator.config_name, config.max_iterations, len(members))
            for iteration in range(1, config.max_iterations + 1):
                reached = iteration
                selected_models = self._select(strategy, iteration)
                selected = [m for m in members if m.instance < selected_models.get(m.model, 0)]
                if not selected:
                    raise RunFailed(f"Strategy '{config.strategy}' selected no members in iteration {iteration}")
                yield IterationStarted(iteration, config.max_iterations, selected)
                jobs = [
                    self._member_job(member, iteration, models, missing, strategy)
                    for member in selected
                ]
                results = yield from self._fan_out(jobs)
                results.sort(key=lambda result: result.member.index)
                succeeded = [result for result in results if result.ok]
                if len(succeeded) < config.min_responses:
                    yield from self._release()
                    raise RunFailed(self._members_failed_message(iteration, results))
                if not processes_in_memory(strategy):
                    # It may call out (embeddings) and take long: what has
                    # arrived is stored and reported first.
                    yield from self._release()
                outcome: Processed | None = None
                try:
                    outcome = process_with(strategy, succeeded, iteration)
                finally:
                    # Which answers reach the arbiter, and the strategy's notes:
                    # stored with the held answers (``_release``).
                    self._held.judged = (results, outcome.responses if outcome else ())
                if not outcome.responses:
                    yield from self._release()
                    raise RunFailed(
                        f"Strategy '{config.strategy}' passed no responses to the arbiter in iteration {iteration}"
                    )
                if arbiter_model is None:
                    yield from self._release()
                    first = outcome.responses[0]
                    decision = Decision(
                        synthesis=first.answer or first.text or "",
                        confidence=1.0,
                        analysis="No arbiter defined, using first model response.",
                        ranking=[first.member.id],
                        chosen_response_id=first.response_id,
                        chosen_member_id=first.member.id,
                    )
                    self._record_decision(iteration, decision, None, None, outcome)
                else:
                    judged = yield from self._judge(arbiter_model, iteration, outcome, decisions)
                    decision, streamed = judged
                decisions.append(decision)
                # A synthesis already streamed to the user cannot be taken
                # back: its iteration is the final one.
                verdict = self.verdict(iteration, decision.confidence, decision.needs_iteration)
                if streamed and not verdict.final:
                    verdict = IterationVerdict(True, "the synthesis was already streamed")
                if decision.fallback is not None and not verdict.final:
                    # Another iteration cannot help an arbiter that cannot follow the format.
                    verdict = IterationVerdict(True, "the arbiter ignored the reply format")
                final = verdict.final
                context = IterationContext(
                    synthesis=decision.to_dict(),
                    model_responses=[result.to_dict() for result in results],
                    iteration=iteration,
                    selected_models=selected_models,
                    results=results,
                    decision=decision,
                    members=selected,
                    final=final,
                )
                strategy.update_state(context)
                # After update_state, so what the strategy noted (eliminations)
                # is in the result as well as in the store.
                keep_notes(results, context.model_responses)
                context.model_responses = [result.to_dict() for result in results]
                self.store.record_eliminated(self.run_id, results)
                iterations.append(context)
                self.orchestrator.iteration_history = [item.to_dict() for item in iterations]
                self.store.record_progress(
                    self.run_id, iteration, decision.confidence, self.input_tokens, self.output_tokens
                )
                yield IterationFinished(iteration, decision, final, verdict.reason)
                if final:
                    break
            assert decision is not None
            if not streamed:
                yield SynthesisDelta(decision.synthesis)
            self.status = "success"
        except (KeyboardInterrupt, GeneratorExit):
            self.status = "interrupted"
            error = "interrupted"
            raise
        except RunFailed as ex:
            self.status = "failed"
            error = str(ex)
            raise
        except Exception as ex:
            self.status = "failed"
            error = redact(f"{type(ex).__name__}: {ex}")
            raise
        finally:
            self.cancel.set()
            try:
                self._store_held()
            finally:
                self.store.finish_run(
                    self.run_id,
                    status=self.status,
                    error=error,
                    iteration_count=reached,
                    final_confidence=decision.confidence if decision else None,
                    final_synthesis=decision.synthesis if decision and self.status == "success" else None,
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                    duration_ms=int((time.monotonic() - self._started) * 1000),
                )
        self.result = {
            "synthesis": decision.to_dict(),
            "iterations": [item.to_dict() for item in iterations],
            "metadata": {
                "total_iterations": len(iterations),
                "consortium_id": self.run_id,
                "run_id": self.run_id,
                "config_name": self.orchestrator.config_name,
                "config": config.to_dict(),
                "status": self.status,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "duration_ms": int((time.monotonic() - self._started) * 1000),
            },
            "original_prompt": self.prompt,
        }
        self.orchestrator.consortium_id = self.run_id
        yield RunFinished(self.run_id, self.status, self.result)

    def _members_failed_message(self, iteration: int, results: list[MemberResult]) -> str:
        """One line per distinct error, naming the members that got it (a few
        of them, when hundreds failed alike); at most ``MAX_ERROR_LINES``."""
        failed = [result for result in results if not result.ok]
        lines = [
            f"Only {len(results) - len(failed)} of {len(results)} members answered in iteration "
            f"{iteration} (at least {self.config.min_responses} needed):"
        ]
        by_error: dict[str, list[str]] = {}
        for result in failed:
            by_error.setdefault(result.error or "", []).append(result.member.label)
        for error, labels in list(by_error.items())[:MAX_ERROR_LINES]:
            named = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
            lines.append(f"  {named}: {error}")
        if len(by_error) > MAX_ERROR_LINES:
            lines.append(
                f"  … and {len(by_error) - MAX_ERROR_LINES} other errors "
                "(llm consortium run-info shows every member)"
            )
        return "\n".join(lines)

    # -- members ------------------------------------------------------------
    def _select(self, strategy: Any, iteration: int) -> dict[str, int]:
        """``{model: count}`` from the strategy, checked against the config."""
        available = dict(self.config.models)
        selected = strategy.select_models(dict(available), self.prompt, iteration)
        unknown = [model for model in selected or {} if model not in available]
        if unknown:
            raise RunFailed(
                f"Strategy '{self.config.strategy}' selected models that are not members: "
                + ", ".join(unknown)
            )
        return {model: min(int(count), available[model]) for model, count in (selected or {}).items()}

    def _member_job(
        self,
        member: Member,
        iteration: int,
        models: dict[str, Any],
        missing: dict[str, str],
        strategy: Any,
    ) -> tuple[Member, CallRequest | None, MemberResult]:
        system = "\n\n".join(
            part
            for part in (
                strategy.get_instance_system_prompt(member.model, member.instance, self.config.system_prompt),
                load("member_instructions.txt"),
            )
            if part
        )
        text = strategy.prepare_iteration_prompt(member.model, member.instance, self.prompt, iteration)
        shell = MemberResult(
            member=member,
            iteration=iteration,
            response_id=f"{self.run_id}:{iteration}:{member.id}",
            prompt=text,
            system=system,
            role=strategy.instance_role(member.model, member.instance),
        )
        model = models.get(member.model)
        if model is None:
            shell.error = missing[member.model]
            return member, None, shell
        history = [
            llm.user(content) if role == "user" else llm.assistant(content)
            for role, content in self.history
        ]
        if history and not getattr(model, "supports_conversation", True):
            text = f"Earlier conversation:\n{arbiter_text.format_history(self.history)}\n\n{text}"
            history = []
        if self.config.manual_context:
            # The full prompt every time, the conversation so far as messages.
            request = CallRequest(
                model=model,
                prompt=text,
                system=system,
                # Without earlier turns, llm builds the same [system, user]
                # messages itself from system= and the prompt.
                messages=[self._system_message(system), *history] if history else None,
                attachments=self.attachments or None,
            )
        else:
            # The member instance's own conversation: its earlier prompts and
            # answers (this run's and earlier turns'), else the history once.
            conversation = self.orchestrator.member_conversation(
                model, member.model, member.instance, self._system_message(system), history
            )
            request = CallRequest(
                model=conversation, prompt=text, system=system, attachments=self.attachments or None
            )
        shell.prompt = text
        return member, request, shell

    def _system_message(self, system: str) -> Any:
        """One (immutable) system message per distinct text: members mostly
        share one system prompt."""
        if system not in self._system_messages:
            self._system_messages[system] = llm.system(system)
        return self._system_messages[system]

    def _fan_out(
        self, jobs: list[tuple[Member, CallRequest | None, MemberResult]]
    ) -> Generator[Event, None, list[MemberResult]]:
        """Call every member at once (no fixed cap; ``max_concurrency`` if
        configured); return every result. Results are stored and reported
        (``MemberFinished``) in batches as they arrive, except the last
        batch: it is held until the arbiter has been asked (``_release``),
        so that storing it costs no time on the way to the arbiter."""
        config = self.config
        calls = CallGroup(
            timeout=config.timeout,
            retries=config.retries,
            cancel=self.cancel,
            max_concurrency=config.max_concurrency,
        )
        self._held = _Held(total=len(jobs))
        shells: dict[Hashable, MemberResult] = {}
        results: list[MemberResult] = []
        batch: list[MemberResult] = []
        for _, request, shell in jobs:
            if request is None:
                batch.append(shell)  # failed before any call (unknown model)
            else:
                shells[shell.member.id] = shell
                calls.submit(shell.member.id, request)
        first_waiting = time.monotonic()
        for kind, key, outcome in calls.events():
            if kind == "done":
                if not batch:
                    first_waiting = time.monotonic()
                batch.append(self._member_result(shells[key], outcome))
            elif kind == "idle" and batch and time.monotonic() - first_waiting >= STORE_BATCH_SECONDS:
                # What has arrived, stored in one transaction; results that
                # arrive close together (hundreds of members) share one.
                results += batch
                yield from self._report(batch)
                batch = []
            # Wake soon only while results wait to be stored: polling every
            # few milliseconds would take the GIL from the members' threads.
            calls.wake_every = STORE_BATCH_SECONDS if batch else POLL_SECONDS
        self._held.results = batch
        return results + batch

    def _report(self, results: list[MemberResult]) -> Iterator[Event]:
        """Store results, then report them: a reported result is stored."""
        if results:
            self.store.record_members(self.run_id, results)
            yield from self._finished(results)

    def _finished(self, stored: list[MemberResult]) -> Iterator[Event]:
        for result in stored:
            self._held.done += 1
            yield MemberFinished(result, self._held.done, self._held.total)

    def _store_held(self) -> list[MemberResult]:
        """Store what is held: the iteration's last results, then which
        answers reached the arbiter (their rows must exist first)."""
        held, judged = self._held.results, self._held.judged
        self._held.results, self._held.judged = [], None
        if held:
            self.store.record_members(self.run_id, held)
        if judged is not None:
            self.store.record_judged(self.run_id, *judged)
        return held

    def _release(self) -> Iterator[Event]:
        """Store and report what is held: once the arbiter has been asked,
        or before the iteration ends without it."""
        yield from self._finished(self._store_held())

    def _arbiter_asked(self, iteration: int) -> Iterator[Event]:
        """The arbiter's call is on its way: its wait is idle time, in which
        what ``_fan_out`` held is stored and reported."""
        yield from self._release()
        yield ArbiterStarted(iteration, self.config.arbiter or "")

    def _member_result(self, shell: MemberResult, outcome: CallOutcome | None) -> MemberResult:
        if outcome is None:
            return shell
        shell.duration_ms = outcome.duration_ms
        shell.attempts = outcome.attempts
        shell.input_tokens = outcome.input_tokens
        shell.output_tokens = outcome.output_tokens
        self._add_usage(outcome.input_tokens, outcome.output_tokens)
        if outcome.error is not None:
            shell.error = outcome.error
            return shell
        shell.response_id = outcome.response_id or shell.response_id
        shell.text = outcome.text
        shell.answer = arbiter_text.member_answer(outcome.text or "")
        shell.confidence = arbiter_text.member_confidence(outcome.text or "")
        return shell

    # -- the arbiter --------------------------------------------------------
    def _judge(
        self,
        model: Any,
        iteration: int,
        outcome: Processed,
        previous: list[Decision],
    ) -> Iterator[Event | tuple[Decision, bool]]:
        config = self.config
        target = model
        history = self.history
        if not config.manual_context:
            # The arbiter's own conversation: what it judged before is in it.
            target = self.orchestrator.arbiter_conversation_for(model)
            if has_history(target):
                history = []
                previous = []
        prompt = arbiter_text.build_arbiter_prompt(
            judging_method=config.judging_method,
            original_prompt=self.prompt,
            results=outcome.responses,
            history=history,
            previous=previous,
            user_instructions=config.system_prompt,
            iteration=iteration,
            max_iterations=config.max_iterations,
        )
        call, decision, streamed = yield from self._ask_arbiter(
            model, target, iteration, prompt, outcome, announce=True
        )
        if decision.format_problem is None:
            self._record_decision(iteration, decision, call, prompt, outcome)
            return decision, streamed
        # The reply ignored the format: ask once more, with a reminder; if
        # that fails too, use the best-ranked member answer (or the first
        # one passed to the arbiter) and end the run there.
        problem = decision.format_problem
        reminder = load("format_reminder.txt").format(problem=problem)
        first_reply = call.text
        # The arbiter's own conversation already holds the prompt and the
        # reply: the reminder follows them. Otherwise the prompt is repeated.
        again = reminder.strip() if target is not model else prompt + reminder
        call, retried, streamed = yield from self._ask_arbiter(model, target, iteration, again, outcome)
        if retried.format_problem is None:
            retried.format_problem = problem
            decision = retried
        else:
            decision = self._fallback_decision(retried, decision, outcome)
        decision.format_problem = problem
        decision.reply_ignoring_format = first_reply
        self._record_decision(iteration, decision, call, prompt + reminder, outcome)
        yield ArbiterIgnoredFormat(iteration, config.arbiter or "", problem, decision.fallback)
        return decision, streamed

    def _ask_arbiter(
        self,
        model: Any,
        target: Any,
        iteration: int,
        prompt: str,
        outcome: Processed,
        *,
        announce: bool = False,
    ) -> Generator[Event, None, tuple[CallOutcome, Decision, bool]]:
        """One arbiter call to ``target`` (the model, or its conversation),
        streaming the final synthesis when it can, and its parsed decision;
        a failed call ends the run. Once the call is on its way, what
        ``_fan_out`` held is stored and reported, then ``ArbiterStarted``
        (``announce``)."""
        config = self.config
        streaming = (
            self.stream_final and config.judging_method != "rank" and bool(getattr(model, "can_stream", False))
        )
        calls = CallGroup(timeout=config.timeout, retries=config.retries, cancel=self.cancel)
        calls.submit("arbiter", CallRequest(model=target, prompt=prompt, stream=streaming), stream_chunks=streaming)
        stream = arbiter_text.SynthesisStream(lambda c, n: self._is_final(iteration, c, n))
        attempt_seen = 1
        call: CallOutcome | None = None
        for kind, _, payload in calls.events():
            if announce:
                yield from self._arbiter_asked(iteration)
                announce = False
            if kind == "done":
                call = payload
            if kind != "chunk":
                continue
            attempt, chunk = payload
            if attempt != attempt_seen:
                if stream.streamed:
                    raise RunFailed(f"Arbiter {config.arbiter} failed part-way through its answer")
                stream = arbiter_text.SynthesisStream(lambda c, n: self._is_final(iteration, c, n))
                attempt_seen = attempt
            delta = stream.feed(chunk)
            if delta:
                yield SynthesisDelta(delta)
        assert call is not None
        if announce:  # the call ended before any event
            yield from self._arbiter_asked(iteration)
        self._add_usage(call.input_tokens, call.output_tokens)
        if call.error is not None:
            self._record_decision(iteration, None, call, prompt, outcome)
            if stream.streamed:
                raise RunFailed(f"Arbiter {config.arbiter} failed part-way through its answer: {call.error}")
            raise RunFailed(f"Arbiter {config.arbiter} failed: {call.error}")
        decision = arbiter_text.parse_decision(call.text or "", outcome.responses, config.judging_method)
        if stream.streamed:
            decision.synthesis = stream.emitted
        return call, decision, stream.streamed

    @staticmethod
    def _fallback_decision(retried: Decision, first: Decision, outcome: Processed) -> Decision:
        """A member's answer in place of a synthesis: the best-ranked one
        (by either reply's ranking), else the first passed to the arbiter."""
        by_id = {result.member.id: result for result in outcome.responses}
        ranking = retried.ranking or first.ranking
        chosen = by_id[ranking[0]] if ranking else outcome.responses[0]
        how = "best ranked" if ranking else "first response; no usable ranking"
        return Decision(
            synthesis=chosen.answer or chosen.text or "",
            confidence=0.0,
            analysis=retried.analysis or first.analysis,
            dissent=retried.dissent or first.dissent,
            refinement_areas=retried.refinement_areas or first.refinement_areas,
            ranking=ranking,
            chosen_response_id=chosen.response_id,
            chosen_member_id=chosen.member.id,
            raw_arbiter_response=retried.raw_arbiter_response,
            fallback=f"member #{chosen.member.id} {chosen.member.label} ({how})",
        )

    def _record_decision(
        self,
        iteration: int,
        decision: Decision | None,
        call: CallOutcome | None,
        prompt: str | None,
        outcome: Processed,
    ) -> None:
        geometry = outcome.geometry
        if decision is not None and geometry is not None:
            passed = [result.member.id for result in outcome.responses if result.member.id in outcome.embeddings]
            decision.geometric_confidence = geometry.confidence
            decision.centroid_vector = geometry.centroid
            decision.outlier_indices = list(geometry.outliers)
            decision.outliers = [passed[index] for index in geometry.outliers]
        backend = getattr(self.orchestrator._embedding_service, "backend", None)
        by_member = {result.member.id: result for result in outcome.considered}
        self.store.record_decision(
            self.run_id,
            iteration,
            decision,
            arbiter=self.config.arbiter,
            prompt=prompt,
            call=call,
            embeddings=[
                ResponseEmbedding(
                    by_member[member_id],
                    vector,
                    getattr(backend, "name", None) or self.config.embedding_backend or "",
                    getattr(backend, "model", None) or self.config.embedding_model,
                )
                for member_id, vector in outcome.embeddings.items()
                if member_id in by_member
            ],
            clusters=outcome.clusters,
        )


def create_consortium(
    models: Any,
    arbiter: str | None = None,
    confidence_threshold: float = 0.8,
    max_iterations: int = 3,
    minimum_iterations: int = 1,
    system_prompt: str | None = None,
    judging_method: str = "default",
    manual_context: bool = False,
    strategy: str = "default",
    strategy_params: dict[str, Any] | None = None,
    config_name: str | None = None,
    embedding_backend: str | None = None,
    embedding_model: str | None = None,
    **settings: Any,
) -> ConsortiumOrchestrator:
    """A ready-to-run orchestrator. ``models`` is a list of specs
    (``"gpt-4o:2"``) or a ``{model: count}`` dict. Invalid values raise
    ``ValueError`` with the same messages as the CLI. Extra keyword
    arguments set further config fields (``timeout``, ``retries``,
    ``min_responses``, ``max_concurrency``); ``store=`` picks a database."""
    store = settings.pop("store", None)
    config = ConsortiumConfig(
        models=models,
        arbiter=arbiter,
        confidence_threshold=confidence_threshold,
        max_iterations=max_iterations,
        minimum_iterations=minimum_iterations,
        system_prompt=system_prompt,
        judging_method=judging_method,
        manual_context=manual_context,
        strategy=strategy,
        strategy_params=strategy_params or {},
        embedding_backend=embedding_backend,
        embedding_model=embedding_model,
        **settings,
    )
    return ConsortiumOrchestrator(config, config_name=config_name, store=store)
