"""``ConsortiumModel``: a saved consortium as an ``llm`` model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Optional

import click
import llm
from pydantic import Field, model_validator

from .config import ConsortiumConfig
from .errors import ConsortiumError, RunFailed
from .orchestrator import ConsortiumOrchestrator, history_from_messages
from .progress import Reporter, answer_pieces
from .saved import check_no_cycle, load_configs
from .db import shared_store

# Attachments are passed through to every member; a member that cannot take
# one fails (and is reported) instead of the whole consortium refusing.
ATTACHMENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/heic",
        "image/heif",
        "application/pdf",
        "audio/mpeg",
        "audio/wav",
        "audio/x-wav",
        "audio/ogg",
        "audio/flac",
        "video/mp4",
        "video/webm",
        "text/plain",
        "text/markdown",
        "text/csv",
    }
)


#: Conversations whose member threads one ``ConsortiumModel`` keeps in memory
#: (an older one is rebuilt from the store when it continues).
KEPT_CONVERSATIONS = 16


class UnknownOptionError(click.UsageError, llm.ModelError):
    """``-o NAME`` that a consortium does not take. Raised from option
    validation as a click error (not a ``ValueError``, which pydantic would turn
    into ``llm``'s two-line report), so ``llm`` prints one line and exits 2;
    from Python it is an ``llm.ModelError`` like the consortium's other errors."""


class ConsortiumModel(llm.Model):
    can_stream = True
    attachment_types = ATTACHMENT_TYPES

    class Options(llm.Options):
        max_iterations: Optional[int] = Field(
            default=None, description="Maximum iterations for this call", ge=1
        )
        min_iterations: Optional[int] = Field(
            default=None, description="Minimum iterations for this call", ge=1
        )
        confidence_threshold: Optional[float] = Field(
            default=None,
            description="Confidence to stop at, 0-1 (or a percentage, 1-100)",
            ge=0,
            le=100,
        )
        system_prompt: Optional[str] = Field(
            default=None, description="System prompt for the members and arbiter"
        )
        timeout: Optional[float] = Field(
            default=None, description="Seconds allowed per member or arbiter call", gt=0
        )
        retries: Optional[int] = Field(
            default=None, description="Retries for transient member or arbiter failures", ge=0
        )

        @model_validator(mode="before")
        @classmethod
        def _known_options_only(cls, data: object) -> object:
            if isinstance(data, dict):
                unknown = [key for key in data if key not in cls.model_fields]
                if unknown:
                    valid = ", ".join(cls.model_fields)
                    raise UnknownOptionError(
                        f"Unknown option '{unknown[0]}' for a consortium; valid options: {valid}"
                    )
            return data

    def __init__(self, model_id: str, config: ConsortiumConfig) -> None:
        self.model_id = str(model_id)
        self.config = config
        # One orchestrator per llm conversation of this process (``llm chat``),
        # so that each member continues its own conversation turn after turn;
        # the most recently used few are kept.
        self._orchestrators: OrderedDict[str, ConsortiumOrchestrator] = OrderedDict()

    def get_orchestrator(self, conversation: llm.Conversation | None = None) -> ConsortiumOrchestrator:
        """An orchestrator for this consortium; the same one for every turn of
        ``conversation`` (a new one without)."""
        key = getattr(conversation, "id", None)
        if key is None:
            return ConsortiumOrchestrator(self.config, config_name=self.model_id, store=shared_store())
        if key not in self._orchestrators:
            self._orchestrators[key] = ConsortiumOrchestrator(
                self.config, config_name=self.model_id, store=shared_store()
            )
            while len(self._orchestrators) > KEPT_CONVERSATIONS:
                self._orchestrators.popitem(last=False)
        self._orchestrators.move_to_end(key)
        return self._orchestrators[key]

    def __str__(self) -> str:
        return f"Consortium: {self.model_id}"

    @property
    def description(self) -> str:
        members = ", ".join(f"{count}x {model}" for model, count in self.config.models.items())
        return f"Consortium strategy '{self.config.strategy}' using models: {members}"

    def config_for(self, prompt: llm.Prompt) -> ConsortiumConfig:
        """The saved config with this call's ``-o`` options and ``-s`` applied."""
        options = prompt.options
        minimum = options.min_iterations
        if minimum is None and options.max_iterations is not None:
            # -o max_iterations 1 on a consortium saved with --min-iterations 2
            # means "at most one", not an error.
            minimum = min(self.config.minimum_iterations, options.max_iterations)
        return self.config.with_overrides(
            max_iterations=options.max_iterations,
            minimum_iterations=minimum,
            confidence_threshold=options.confidence_threshold,
            system_prompt=prompt.system or options.system_prompt,
            timeout=options.timeout,
            retries=options.retries,
        )

    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        try:
            config = self.config_for(prompt)
            store = shared_store()
            check_no_cycle(
                self.model_id,
                config,
                {
                    name: saved
                    for name, saved in load_configs(store, warn=False).items()  # warned at start-up
                    if name != self.model_id
                },
            )
        except ConsortiumError as ex:
            raise llm.ModelError(str(ex)) from None
        orchestrator = self.get_orchestrator(conversation)
        orchestrator.config = config
        run = orchestrator.run(
            prompt.prompt,
            history=history_from_messages(prompt.messages),
            attachments=prompt.attachments,
            stream_final=stream,
        )
        try:
            yield from answer_pieces(run, Reporter())
        except RunFailed:
            raise
        except ConsortiumError as ex:
            raise llm.ModelError(str(ex)) from None
        finally:
            response.set_usage(input=run.input_tokens, output=run.output_tokens)
            response.response_json = {
                "run_id": run.run_id,
                "consortium": self.model_id,
                "status": run.status,
                "iterations": (run.result or {}).get("metadata", {}).get("total_iterations"),
                "confidence": ((run.result or {}).get("synthesis") or {}).get("confidence"),
                "input_tokens": run.input_tokens,
                "output_tokens": run.output_tokens,
            }
