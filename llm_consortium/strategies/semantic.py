"""The ``semantic`` strategy: embed every answer, cluster, keep the consensus.

Per iteration:

1. Every successful member's answer (its ``<answer>`` text, else the whole
   reply) is embedded in one batched call to the configured backend
   (``embedding_backend`` / ``embedding_model`` of the consortium; see
   :mod:`llm_consortium.embeddings`). A blank answer is not sent; it gets a
   zero vector, which has no direction and is therefore always noise.
2. The geometric confidence of all the answers is computed
   (:func:`llm_consortium.geometry.geometric_confidence`) and the answers are
   clustered with ``clustering_algorithm`` (:func:`llm_consortium.clustering.cluster`).
   Both use one distance, ``d = (1 - cos) / 2`` in [0, 1] (0 = same
   direction, 0.5 = orthogonal, 1 = opposite); ``eps`` is on that scale.
3. Only the consensus cluster (the largest; ties go to the tighter one) is
   passed to the arbiter. When every answer is noise, all of them are passed
   and the run records ``all_noise``.

What it hands the store (as values: ``ResponseEmbedding`` per answer,
``ClusterSummary`` per cluster, or, when everything is noise, one with label
-1 and ``all_noise`` holding every answer) and the arbiter decision's
``geometric_confidence``, ``centroid_vector`` (the mean of all the answers'
vectors) and outliers (member ids). Each member result's ``extra`` gets ``semantic_cluster`` (-1 = noise),
``in_consensus`` and ``semantic_outlier``.

The backend is opened when the first iteration starts, before any member is
prompted: a missing extra, credential or model fails the run at once (the run
is recorded as failed), and so does any embedding error later. There is no
fallback to another backend or to "all answers".

numpy and scikit-learn are imported only when a run uses this strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..defaults import CLUSTERING_ALGORITHMS, EMBEDDING_BACKENDS
from ..errors import ConfigError, ConsortiumError, RunFailed
from .base import Param, Strategy, StrategyContext, StrategyOutcome

if TYPE_CHECKING:
    from ..clustering import ClusteringResult
    from ..config import ConsortiumConfig
    from ..embeddings import EmbeddingBackend
    from ..geometry import GeometricSummary
    from ..results import ClusterSummary, Member, MemberResult, ResponseEmbedding

NEEDS_BACKEND = (
    "The semantic strategy needs an embedding backend: add --embedding-backend "
    f"({', '.join(EMBEDDING_BACKENDS)}) and usually --embedding-model "
    "(embedding_backend= / embedding_model= in Python)"
)


def embedding_text(result: MemberResult) -> str:
    """The text embedded for a member: its answer, else its whole reply."""
    return (result.answer or "").strip() or (result.text or "").strip()


class SemanticStrategy(Strategy):
    name = "semantic"
    description = "Cluster response embeddings and keep the densest semantic consensus region."
    params = (
        Param(
            "clustering_algorithm",
            "str",
            "dbscan",
            "dbscan, hdbscan or tropical (single linkage computed in the tropical "
            "min-max semiring: chains of close answers form one cluster).",
            choices=CLUSTERING_ALGORITHMS,
        ),
        Param(
            "eps",
            "float",
            0.5,
            "Neighbourhood radius on the (1 - cos)/2 distance scale, 0 < eps <= 1 "
            "(0.5 = orthogonal; real embedding models usually need 0.1-0.25).",
            min=0.0,
            max=1.0,
        ),
        Param(
            "min_samples",
            "int",
            2,
            "Answers (the point itself included) needed to form a cluster.",
            min=1,
        ),
        Param(
            "use_centroid_synthesis",
            "bool",
            False,
            "Pass the consensus answers to the arbiter nearest-to-centroid first "
            "(without an arbiter the most central answer wins).",
        ),
    )

    def __init__(self, params: Mapping[str, Any], context: StrategyContext) -> None:
        super().__init__(params, context)
        self._backend: EmbeddingBackend | None = None

    # -- validation ---------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        eps = params["eps"]
        if not 0.0 < eps <= 1.0:  # also refuses NaN
            raise ConfigError(
                f"Invalid strategy parameter 'eps': {eps} is not in (0, 1] "
                "(the distance scale is (1 - cos)/2: 0.5 = orthogonal)"
            )

    @classmethod
    def check_config(cls, config: ConsortiumConfig) -> None:
        if not config.embedding_backend:
            raise ConfigError(NEEDS_BACKEND)

    # -- the run ------------------------------------------------------------
    def select_members(self, members: list[Member], iteration: int) -> list[Member]:
        self.backend()  # fail before any member is prompted
        return list(members)

    def backend(self) -> EmbeddingBackend:
        """The run's embedding backend, opened (and checked) on first use."""
        if self._backend is None:
            self._backend = self._open_backend()
        return self._backend

    def _open_backend(self) -> EmbeddingBackend:
        from ..embeddings import get_backend, import_optional

        config = self.context.config
        if not config.embedding_backend:
            raise RunFailed(NEEDS_BACKEND)
        try:
            import_optional("numpy")
            if self.options["clustering_algorithm"] != "tropical":
                import_optional("sklearn.cluster", "scikit-learn")
            return get_backend(config.embedding_backend, config.embedding_model)
        except (ConsortiumError, ValueError) as ex:
            raise RunFailed(f"Semantic strategy: {ex}") from None

    def process_responses(
        self, responses: list[MemberResult], iteration: int
    ) -> StrategyOutcome:
        from ..clustering import cluster
        from ..geometry import geometric_confidence

        vectors = self._embed(responses, iteration)
        try:
            summary = geometric_confidence(vectors)
            grouping = cluster(
                vectors,
                self.options["clustering_algorithm"],
                eps=self.options["eps"],
                min_samples=self.options["min_samples"],
            )
        except (ConsortiumError, ValueError) as ex:
            raise RunFailed(f"Semantic strategy, iteration {iteration}: {ex}") from None
        chosen = self._chosen(vectors, summary, grouping)
        self._mark(responses, summary, grouping)
        telemetry = {
            "geometric_confidence": summary.confidence,
            "centroid_vector": summary.centroid,
            "outliers": [responses[index].member.id for index in summary.outliers],
            "embeddings": self._embeddings(responses, vectors),
            "clusters": self._clusters(responses, vectors, summary, grouping),
            "semantic": self._notes(responses, grouping, chosen),
        }
        return StrategyOutcome([responses[index] for index in chosen], telemetry)

    # -- steps ----------------------------------------------------------------
    def _embed(self, responses: list[MemberResult], iteration: int) -> list[list[float]]:
        """One vector per response, in order, from one batched backend call."""
        from ..embeddings import EmbeddingError

        texts = [embedding_text(result) for result in responses]
        wanted = [text for text in texts if text]
        try:
            embedded = self.backend().embed(wanted) if wanted else []
        except EmbeddingError as ex:
            raise RunFailed(f"Semantic strategy, iteration {iteration}: {ex}") from None
        dimensions = len(embedded[0]) if embedded else 1
        found = iter(embedded)
        return [next(found) if text else [0.0] * dimensions for text in texts]

    def _chosen(
        self,
        vectors: list[list[float]],
        summary: GeometricSummary,
        grouping: ClusteringResult,
    ) -> list[int]:
        """Indices of the responses for the arbiter, in the order given."""
        from ..geometry import cosine_distance

        if grouping.consensus is None:
            indices, center = list(range(len(vectors))), summary.centroid
        else:
            indices, center = list(grouping.consensus.members), grouping.consensus.centroid
        if self.options["use_centroid_synthesis"]:
            indices.sort(key=lambda index: (cosine_distance(vectors[index], center), index))
        return indices

    def _mark(
        self,
        responses: list[MemberResult],
        summary: GeometricSummary,
        grouping: ClusteringResult,
    ) -> None:
        consensus = set(grouping.consensus.members) if grouping.consensus else set()
        outliers = set(summary.outliers)
        for index, result in enumerate(responses):
            result.extra.update(
                semantic_cluster=grouping.labels[index],
                in_consensus=index in consensus,
                semantic_outlier=index in outliers,
            )

    def _embeddings(
        self, responses: list[MemberResult], vectors: list[list[float]]
    ) -> list[ResponseEmbedding]:
        from ..results import ResponseEmbedding

        backend = self.backend()
        return [
            ResponseEmbedding(result, vector, backend.name, backend.model)
            for result, vector in zip(responses, vectors)
        ]

    def _clusters(
        self,
        responses: list[MemberResult],
        vectors: list[list[float]],
        summary: GeometricSummary,
        grouping: ClusteringResult,
    ) -> list[ClusterSummary]:
        """Density is 1 - mean distance to the centroid (the original's)."""
        from ..clustering import NOISE
        from ..results import ClusterSummary

        ids = [result.member.id for result in responses]
        if grouping.all_noise:
            return [
                ClusterSummary(
                    label=NOISE,
                    centroid=summary.centroid,
                    radius=max(summary.distances),
                    density=1.0 - summary.mean_distance,
                    member_ids=ids,
                    algorithm=grouping.algorithm,
                    all_noise=True,
                )
            ]
        return [
            ClusterSummary(
                label=found.label,
                centroid=found.centroid,
                radius=found.radius,
                density=1.0 - found.mean_distance,
                member_ids=[ids[index] for index in found.members],
                algorithm=grouping.algorithm,
                is_consensus=found is grouping.consensus,
            )
            for found in grouping.clusters
        ]

    def _notes(
        self,
        responses: list[MemberResult],
        grouping: ClusteringResult,
        chosen: Sequence[int],
    ) -> dict[str, Any]:
        from ..clustering import NOISE

        backend = self.backend()
        ids = [result.member.id for result in responses]
        return {
            "backend": backend.name,
            "embedding_model": backend.model,
            "algorithm": grouping.algorithm,
            "eps": self.options["eps"],
            "min_samples": self.options["min_samples"],
            "labels": dict(zip(ids, grouping.labels)),
            "consensus": [ids[index] for index in grouping.consensus.members]
            if grouping.consensus
            else [],
            "noise": [ids[i] for i, label in enumerate(grouping.labels) if label == NOISE],
            "all_noise": grouping.all_noise,
            "selected": [ids[index] for index in chosen],
        }
