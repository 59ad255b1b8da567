"""The ``role`` strategy: every member instance argues from its own role.

Member *i* (config order, 0-based) gets the *i*-th role. Once the roles run
out, each further member gets a generated personality — a trait matrix drawn
from ``random.Random(seed + i)`` — or, with ``use_dynamic_personalities`` off,
the roles are reused in turn. A role depends only on the member and the seed
(the ``seed`` parameter, else one derived from the run id), so it is the same
in every iteration, the same whatever order members are called in, and the
same when a run is repeated with the same seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..results import Member
from .base import Param, Strategy, StrategyContext

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


class RoleStrategy(Strategy):
    """Gives each member instance a distinct role in its system prompt."""

    name = "role"
    description = (
        "Assign distinct roles or generated personalities to member instances "
        "(in their system prompts) to avoid groupthink."
    )
    params = (
        Param(
            "roles",
            "list",
            list(DEFAULT_ROLES),
            "Roles in member order (repeat the parameter for more): a built-in name "
            "(generator, devil's advocate, fact checker), 'Name: instructions' or free text.",
        ),
        Param(
            "use_dynamic_personalities",
            "bool",
            True,
            "When roles run out, generate trait-matrix personalities (else reuse the roles).",
        ),
        Param(
            "seed",
            "int",
            None,
            "Seed for generated personalities (default: derived from the run id).",
        ),
    )

    def __init__(self, params: Mapping[str, Any], context: StrategyContext) -> None:
        super().__init__(params, context)
        self.roles = [parse_role(text) for text in self.options["roles"] or DEFAULT_ROLES]
        seed = self.options["seed"]
        self.seed = seed_from_run_id(context.run_id) if seed is None else seed

    def role_for(self, member: Member) -> Role:
        """Computed from the member alone: no state shared between threads."""
        if member.index < len(self.roles):
            return self.roles[member.index]
        if self.options["use_dynamic_personalities"]:
            return personality(random.Random(self.seed + member.index))
        return self.roles[member.index % len(self.roles)]

    def member_system_prompt(self, member: Member, base: str | None) -> str | None:
        role = self.role_for(member).prompt
        return f"{base}\n\n{role}" if base else role

    def member_role(self, member: Member) -> str | None:
        return self.role_for(member).label
