"""The ``role`` strategy: every member instance argues from its own role.

Roles are assigned as the original assigns them: the *k*-th member instance
to be prompted (config order: model order, then instance) gets the *k*-th
role. Once the roles run out, each further instance gets a generated
personality — a trait matrix drawn from ``random.Random(seed + k)`` — or,
with ``use_dynamic_personalities`` off, no role at all. A role is kept for
the whole run. The seed is the ``seed`` parameter, else one derived from the
run id, so a run repeated with the same seed assigns the same roles.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from .base import ConsortiumStrategy
from .params import NonEmptyText, StrategyParams

BUILTIN_ROLES: dict[str, str] = {
    "generator": (
        "Give the most direct, complete and conventional solution you can. Work through "
        "the problem plainly and commit to one answer."
    ),
    "devil's advocate": (
        "Be the sceptic. Treat the obvious answer as wrong until it is shown to be right: "
        "look for the strongest objection, the overlooked alternative or the case where the "
        "usual approach breaks, and answer from there."
    ),
    "fact checker": (
        "Check everything the question rests on: facts, numbers, units, definitions, edge "
        "cases and hidden constraints. Name any error or false premise, then give the answer "
        "that survives your checks."
    ),
}
DEFAULT_ROLES = tuple(BUILTIN_ROLES)
TRAITS = (
    "scepticism",
    "creativity",
    "caution",
    "precision",
    "bluntness",
    "lateral thinking",
    "pessimism",
    "optimism",
)
LABEL_WIDTH = 40


@dataclass(frozen=True)
class Role:
    """``label`` is stored as the member's role; ``prompt`` joins its system prompt."""

    label: str
    prompt: str


def named_role(label: str, instructions: str) -> Role:
    return Role(label, f"Your role in this consortium: {label}.\n{instructions}")


def _key(name: str) -> str:
    return " ".join(name.lower().replace("’", "'").replace("-", " ").replace("_", " ").split())


def parse_role(text: str) -> Role:
    """A built-in role name, ``"Name: instructions"``, or free instructions."""
    builtin = {_key(name): name for name in BUILTIN_ROLES}
    if _key(text) in builtin:
        name = builtin[_key(text)]
        return named_role(name, BUILTIN_ROLES[name])
    head, sep, rest = text.partition(":")
    if sep and head.strip() and rest.strip() and len(head.strip()) <= LABEL_WIDTH:
        return named_role(head.strip(), rest.strip())
    label = text if len(text) <= LABEL_WIDTH else text[: LABEL_WIDTH - 3].rstrip() + "..."
    return named_role(label, text)


def personality(rng: random.Random) -> Role:
    """A trait matrix (each trait 1-20) as a role."""
    matrix = {trait: rng.randint(1, 20) for trait in TRAITS}
    strongest = sorted(matrix, key=lambda trait: (-matrix[trait], TRAITS.index(trait)))[:2]
    label = "personality (" + ", ".join(f"{trait} {matrix[trait]}" for trait in strongest) + ")"
    traits = ", ".join(f"{trait} {value}/20" for trait, value in matrix.items())
    return Role(
        label,
        "Your role in this consortium: a distinct personality, set by this trait matrix "
        f"(1 = hardly at all, 20 = extremely): {traits}.\nLet these traits shape your tone, "
        "your reasoning and the angle you take, and still answer the question.",
    )


def seed_from_run_id(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode("utf-8")).digest()[:8], "big")


class RoleStrategy(ConsortiumStrategy):
    """Gives each member instance a distinct role in its system prompt."""

    name = "role"
    description = (
        "Assign distinct roles or generated personalities to member instances "
        "(in their system prompts) to avoid groupthink."
    )

    class Params(StrategyParams):
        roles: list[NonEmptyText] = Field(
            default_factory=lambda: list(DEFAULT_ROLES),
            description="Roles in member order (repeat the parameter for more): a built-in name "
            "(generator, devil's advocate, fact checker), 'Name: instructions' or free text.",
        )
        use_dynamic_personalities: bool = Field(
            True,
            description="When roles run out, generate trait-matrix personalities (else no role).",
        )
        seed: int | None = Field(
            None, description="Seed for generated personalities (default: derived from the run id)."
        )

    def _validate_params(self) -> None:
        self.role_list = [parse_role(text) for text in self.params["roles"] or DEFAULT_ROLES]

    def _seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        run_id = getattr(self.orchestrator, "consortium_id", None)
        return seed_from_run_id(run_id) if isinstance(run_id, str) else 0

    def initialize_state(self) -> None:
        super().initialize_state()
        self.iteration_state["assigned_roles"] = {}
        self.iteration_state["role_labels"] = {}

    def role_for(self, model: str, instance: int) -> Role | None:
        """The instance's role, assigned on first request (see the module docstring)."""
        key = f"{model}-{instance}"
        assigned = self.iteration_state.setdefault("assigned_roles", {})
        labels = self.iteration_state.setdefault("role_labels", {})
        if key not in assigned:
            position = len(assigned)
            role: Role | None = None
            if position < len(self.role_list):
                role = self.role_list[position]
            elif self.use_dynamic_personalities:
                role = personality(random.Random(self._seed() + position))
            assigned[key] = role.prompt if role else ""
            labels[key] = role.label if role else None
        label = labels.get(key)
        return Role(label, assigned[key]) if label else None

    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        return dict(available_models)

    def get_instance_system_prompt(
        self, model: str, instance: int, default_prompt: str | None
    ) -> str | None:
        role = self.role_for(model, instance)
        if role is None:
            return default_prompt
        return f"{default_prompt}\n\n{role.prompt}" if default_prompt else role.prompt

    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        return successful_responses

    def instance_role(self, model: str, instance: int) -> str | None:
        role = self.role_for(model, instance)
        return role.label if role else None
