"""The ``semantic`` strategy (``SemanticClusteringStrategy``): embed every
answer, cluster, keep the consensus.

Per iteration:

1. Every successful member's answer (its ``<answer>`` text, else the whole
   reply) is embedded through the orchestrator's embedding service
   (``get_embedding_service()``: the consortium's ``embedding_backend`` /
   ``embedding_model``, see :mod:`llm_consortium.embeddings`) in one batched
   call. A blank answer is not sent; it gets a zero vector, which has no
   direction and is therefore always noise.
2. The answers are clustered with ``clustering_algorithm``
   (:func:`llm_consortium.clustering.cluster`). ``eps`` is on
   scikit-learn's cosine scale, ``1 - cos`` (as the original's
   ``DBSCAN(metric="cosine")``), for dbscan, hdbscan and tropical alike.
3. Only the consensus cluster (the largest; ties go to the tighter one) is
   passed to the arbiter. When every answer is noise, all of them are.

Each response dict gets ``embedding``, ``cluster_id`` (-1 = noise) and
``distance_to_centroid`` ((1 - cos)/2 to the consensus centroid; 1.0 outside
it), as in the original. The strategy stores nothing itself: the
orchestrator records the embeddings, the clusters (density = 1 - mean
distance) and the geometric confidence of the answers passed on.

The embedding backend is checked when the first iteration starts, before any
member is prompted: a missing extra, credential or model fails the run at
once, and so does any embedding error later. There is no fallback.
numpy and scikit-learn are imported only when a run uses this strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ..defaults import CLUSTERING_ALGORITHMS, EMBEDDING_BACKENDS
from ..errors import ConfigError, ConsortiumError, RunFailed
from .base import ConsortiumStrategy
from .params import StrategyParams

if TYPE_CHECKING:
    from ..config import ConsortiumConfig

NEEDS_BACKEND = (
    "The semantic strategy needs an embedding backend: add --embedding-backend "
    f"({', '.join(EMBEDDING_BACKENDS)}) and usually --embedding-model "
    "(embedding_backend= / embedding_model= in Python)"
)


def embedding_text(response: dict[str, Any]) -> str:
    """The text embedded for a member: its answer, else its whole reply."""
    return str(response.get("answer") or "").strip() or str(response.get("response") or "").strip()


class SemanticClusteringStrategy(ConsortiumStrategy):
    """Cluster response embeddings and keep the densest consensus region."""

    name = "semantic"
    description = "Cluster response embeddings and keep the densest semantic consensus region."

    class Params(StrategyParams):
        clustering_algorithm: Literal[CLUSTERING_ALGORITHMS] = Field(  # type: ignore[valid-type]
            "dbscan",
            description="dbscan, hdbscan or tropical (single linkage computed in the tropical "
            "min-max semiring: chains of close answers form one cluster).",
        )
        eps: float = Field(
            0.5,
            ge=0.0,
            le=2.0,
            description="Neighbourhood radius on scikit-learn's cosine scale, 1 - cos, "
            "0 < eps <= 2 (0.5: answers with cosine similarity of at least 0.5 are neighbours).",
        )
        min_samples: int = Field(
            2, ge=1, description="Answers (the point itself included) needed to form a cluster."
        )
        use_centroid_synthesis: bool = Field(
            False,
            description="Pass the consensus answers to the arbiter nearest-to-centroid first "
            "(without an arbiter the most central answer wins).",
        )

        @field_validator("eps")
        @classmethod
        def _positive_eps(cls, eps: float) -> float:
            if eps <= 0.0:
                raise ValueError(f"eps must be in (0, 2] on the 1 - cos scale, got {eps}")
            return eps

    @classmethod
    def check_config(cls, config: ConsortiumConfig) -> None:
        if not config.embedding_backend:
            raise ConfigError(NEEDS_BACKEND)

    def initialize_state(self) -> None:
        super().initialize_state()
        self.iteration_state["checked"] = False

    def service(self) -> Any:
        """The orchestrator's embedding service, checked once per run."""
        from ..embeddings import import_optional

        try:
            service = self.orchestrator.get_embedding_service()
            if not self.iteration_state.get("checked"):
                import_optional("numpy")
                if self.clustering_algorithm != "tropical":
                    import_optional("sklearn.cluster", "scikit-learn")
                check = getattr(service, "check", None)
                if check is not None:
                    check()
                self.iteration_state["checked"] = True
        except (ConsortiumError, ValueError) as ex:
            raise RunFailed(f"Semantic strategy: {ex}") from None
        return service

    def select_models(
        self, available_models: dict[str, int], current_prompt: str, iteration: int
    ) -> dict[str, int]:
        self.service()  # fail before any member is prompted
        return dict(available_models)

    def process_responses(
        self, successful_responses: list[dict[str, Any]], iteration: int
    ) -> list[dict[str, Any]]:
        if not successful_responses:
            return []
        from ..clustering import cluster
        from ..geometry import cosine_distance

        try:
            vectors = self._embed(successful_responses)
            grouping = cluster(
                [list(map(float, vector)) for vector in vectors],
                self.clustering_algorithm,
                eps=self.eps,
                min_samples=self.min_samples,
            )
        except (ConsortiumError, ValueError) as ex:
            raise RunFailed(f"Semantic strategy, iteration {iteration}: {ex}") from None
        consensus = grouping.consensus
        for response, vector, label in zip(successful_responses, vectors, grouping.labels):
            response["embedding"] = vector
            response["cluster_id"] = label
            response["distance_to_centroid"] = (
                cosine_distance(vector, consensus.centroid)
                if consensus is not None and label == consensus.label
                else 1.0
            )
        if consensus is None:
            return successful_responses
        chosen = [successful_responses[index] for index in consensus.members]
        if self.use_centroid_synthesis:
            chosen.sort(key=lambda response: response["distance_to_centroid"])
        return chosen

    def _embed(self, responses: list[dict[str, Any]]) -> list[Any]:
        """One vector per response, in order, from one batched call."""
        from ..embeddings import import_optional

        np = import_optional("numpy")
        texts = [embedding_text(response) for response in responses]
        wanted = [text for text in texts if text]
        embedded = list(self.service().embed_batch(wanted)) if wanted else []
        dimensions = len(embedded[0]) if embedded else 1
        found = iter(embedded)
        return [
            np.asarray(next(found), dtype=float) if text else np.zeros(dimensions) for text in texts
        ]
