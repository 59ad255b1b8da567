"""Clustering of response embeddings (dbscan, hdbscan, tropical).

Distance scale
--------------
All three algorithms work on the precomputed matrix of scikit-learn's cosine
distance, ``1 - cos(a, b)`` in [0, 2] (0 = same direction, 1 = orthogonal,
2 = opposite) -- the scale of ``DBSCAN(metric="cosine")`` that the original
plugin used.  ``eps`` is a distance on that scale (``0 < eps <= 2``), for
every algorithm, so ``--cluster-eps 0.35`` keeps exactly the answers that
``sklearn.cluster.DBSCAN(metric="cosine", eps=0.35)`` keeps.  ``min_samples``
counts the point itself.  (Geometric confidence and the cluster statistics
below use half that distance; see :mod:`llm_consortium.geometry`.)

Zero vectors have no direction, so they are always noise and are left out
before clustering.

Algorithms
----------
``dbscan``
    ``sklearn.cluster.DBSCAN(eps, min_samples, metric="precomputed")``: a core
    point has at least ``min_samples`` points (itself included) within
    ``eps``; clusters are core points connected through core points, plus the
    border points within ``eps`` of a core point.
``hdbscan``
    ``sklearn.cluster.HDBSCAN`` (scikit-learn >= 1.3; falls back to the
    ``hdbscan`` package, whose ``min_samples`` excludes the point itself and
    is passed ``min_samples - 1``) with ``min_cluster_size=max(2,
    min_samples)``, ``allow_single_cluster=True`` and
    ``cluster_selection_epsilon=eps``.  With a handful of responses the usual
    outcome is one group; without ``allow_single_cluster`` HDBSCAN refuses to
    return the root of its tree and reports such a group as noise.  With the
    root allowed but no ``eps``, HDBSCAN is scale-free and puts points that
    are all far apart (for example orthogonal) into one cluster; with
    ``cluster_selection_epsilon=eps`` a point joins the single cluster only
    when it merges into it at a mutual-reachability distance <= ``eps``, and
    clusters that split below ``eps`` are kept together.  Fewer points than
    ``min_cluster_size`` are all noise.
``tropical``
    Single-linkage clustering computed in tropical algebra.  In the (min, max)
    "bottleneck" semiring -- the tropical (min, +) semiring with ``+``
    replaced by ``max`` -- the matrix product ``(A (x) B)[i, j] =
    min_k max(A[i, k], B[k, j])`` gives, for ``D (x) D``, the best two-step
    path where a path costs its largest step.  The closure ``D* = D (+) D^2
    (+) ... (+) D^(n-1)`` holds the minimax path distance between every pair,
    which is the subdominant ultrametric of ``D`` (the largest ultrametric
    below ``D``, i.e. the single-linkage merge heights).  It is computed with
    Floyd-Warshall in that semiring (:func:`subdominant_ultrametric`).  Two
    points share a cluster when their ultrametric distance is ``<= eps``; as
    the ultrametric satisfies ``u(i, k) <= max(u(i, j), u(j, k))`` this is
    already an equivalence relation, so its classes are the connected
    components of the ``eps``-neighbourhood graph.  Components with fewer
    than ``min_samples`` points are noise.

    Unlike DBSCAN there is no core-point condition: a chain of answers each
    within ``eps`` of the next forms one cluster even when no answer has
    ``min_samples`` neighbours.  That is the point: paraphrases drift, and a
    consensus that is reached step by step is still a consensus.  With
    ``min_samples <= 3`` the two algorithms agree (every interior point of a
    component of three or more is then a DBSCAN core point); they differ from
    ``min_samples = 4``.

Cluster statistics
------------------
``centroid`` is the mean of the members, ``radius`` the largest member
distance to it and ``mean_distance`` the average one, both ``(1 - cos) / 2``
as in the original, and ``density = 1 - mean_distance`` (the original's
stored cluster density: 1 for identical answers).  The ``consensus`` cluster is the
largest; ties go to the smaller ``mean_distance``, then to the lower label.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .defaults import CLUSTERING_ALGORITHMS
from .embeddings import MissingExtraError, import_optional
from .geometry import Vector, centroid, cosine_distance, pairwise_distances

if TYPE_CHECKING:
    import numpy

NOISE = -1
MAX_EPS = 2.0  # 1 - cos never exceeds 2 (opposite directions)


@dataclass(frozen=True)
class Cluster:
    """One cluster; members are indices into the clustered vectors."""

    label: int
    members: list[int]
    centroid: list[float]
    radius: float
    density: float
    size: int
    mean_distance: float


@dataclass(frozen=True)
class ClusteringResult:
    """Labels per vector (-1 = noise), the clusters and the consensus one."""

    algorithm: str
    labels: list[int]
    clusters: list[Cluster]
    consensus: Cluster | None
    all_noise: bool


def _check_algorithm(algorithm: str) -> str:
    name = algorithm.strip().lower() if isinstance(algorithm, str) else algorithm
    if name not in CLUSTERING_ALGORITHMS:
        valid = ", ".join(CLUSTERING_ALGORITHMS)
        raise ValueError(
            f"unknown clustering algorithm {algorithm!r}; valid algorithms: {valid}"
        )
    return name


def _check_parameters(eps: float, min_samples: int) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"eps must be a number, got {eps!r}")
    if not (math.isfinite(eps) and 0.0 < eps <= MAX_EPS):
        raise ValueError(f"eps must be in (0, 2] on the 1 - cos scale, got {eps}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int):
        raise ValueError(f"min_samples must be an integer, got {min_samples!r}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")


def subdominant_ultrametric(distances: Any) -> "numpy.ndarray":
    """Tropical closure of a distance matrix: minimax path distances.

    Floyd-Warshall in the (min, max) semiring; see the module docstring.
    """
    np = import_optional("numpy")
    ultra = np.array(distances, dtype=float)
    if ultra.ndim != 2 or ultra.shape[0] != ultra.shape[1]:
        raise ValueError(f"distances must be a square matrix, got shape {ultra.shape}")
    for k in range(ultra.shape[0]):
        through_k = np.maximum(ultra[:, k, None], ultra[None, k, :])
        ultra = np.minimum(ultra, through_k)
    return ultra


def _run_tropical(distances: Any, eps: float, min_samples: int) -> list[int]:
    np = import_optional("numpy")
    ultra = subdominant_ultrametric(distances)
    labels = [NOISE] * len(ultra)
    seen = np.zeros(len(ultra), dtype=bool)
    next_label = 0
    for index in range(len(ultra)):
        if seen[index]:
            continue
        members = np.flatnonzero(ultra[index] <= eps)
        seen[members] = True
        if len(members) >= min_samples:
            for member in members:
                labels[int(member)] = next_label
            next_label += 1
    return labels


def _run_dbscan(distances: Any, eps: float, min_samples: int) -> list[int]:
    sklearn_cluster = import_optional("sklearn.cluster", "scikit-learn")
    model = sklearn_cluster.DBSCAN(
        eps=eps, min_samples=min_samples, metric="precomputed"
    )
    return [int(label) for label in model.fit_predict(distances)]


def _hdbscan_model(min_cluster_size: int, min_samples: int, eps: float) -> Any:
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError:
        return _hdbscan_package_model(min_cluster_size, min_samples, eps)
    return HDBSCAN(
        metric="precomputed",
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_epsilon=eps,
        allow_single_cluster=True,
        copy=True,
    )


def _hdbscan_package_model(min_cluster_size: int, min_samples: int, eps: float) -> Any:
    try:
        import hdbscan
    except ImportError as exc:
        raise MissingExtraError("scikit-learn>=1.3 (or hdbscan)") from exc
    return hdbscan.HDBSCAN(
        metric="precomputed",
        min_cluster_size=min_cluster_size,
        min_samples=max(1, min_samples - 1),
        cluster_selection_epsilon=eps,
        allow_single_cluster=True,
    )


def _run_hdbscan(distances: Any, eps: float, min_samples: int) -> list[int]:
    min_cluster_size = max(2, min_samples)
    if len(distances) < min_cluster_size:
        return [NOISE] * len(distances)
    model = _hdbscan_model(min_cluster_size, min_samples, eps)
    return [int(label) for label in model.fit_predict(distances)]


_RUNNERS: dict[str, Callable[[Any, float, int], list[int]]] = {
    "dbscan": _run_dbscan,
    "hdbscan": _run_hdbscan,
    "tropical": _run_tropical,
}


def _describe_cluster(
    label: int, members: list[int], vectors: Sequence[Vector]
) -> Cluster:
    center = centroid([vectors[i] for i in members])
    distances = [cosine_distance(vectors[i], center) for i in members]
    mean_distance = math.fsum(distances) / len(distances)
    return Cluster(
        label=label,
        members=members,
        centroid=center,
        radius=max(distances),
        density=1.0 - mean_distance,
        size=len(members),
        mean_distance=mean_distance,
    )


def _build_clusters(vectors: Sequence[Vector], labels: list[int]) -> list[Cluster]:
    found = sorted({label for label in labels if label != NOISE})
    return [
        _describe_cluster(
            label, [i for i, own in enumerate(labels) if own == label], vectors
        )
        for label in found
    ]


def _consensus(clusters: list[Cluster]) -> Cluster | None:
    if not clusters:
        return None
    return min(clusters, key=lambda c: (-c.size, c.mean_distance, c.label))


def _label_active(distances: Any, name: str, eps: float, min_samples: int) -> list[int]:
    """Cluster the non-zero vectors (diagonal 0) and leave zero vectors as noise."""
    np = import_optional("numpy")
    active = np.flatnonzero(np.diagonal(distances) == 0.0)
    labels = [NOISE] * len(distances)
    if len(active) == 0:
        return labels
    sub_labels = _RUNNERS[name](distances[np.ix_(active, active)], eps, min_samples)
    for position, index in enumerate(active):
        labels[int(index)] = sub_labels[position]
    return labels


def cluster(
    vectors: Sequence[Vector],
    algorithm: str,
    eps: float = 0.5,
    min_samples: int = 2,
) -> ClusteringResult:
    """Cluster ``vectors`` with ``algorithm`` (see the module docstring)."""
    name = _check_algorithm(algorithm)
    _check_parameters(eps, min_samples)
    if len(vectors) == 0:
        raise ValueError("at least one vector is required")
    distances = 2.0 * pairwise_distances(vectors)  # 1 - cos
    labels = _label_active(distances, name, float(eps), min_samples)
    clusters = _build_clusters(vectors, labels)
    return ClusteringResult(
        algorithm=name,
        labels=labels,
        clusters=clusters,
        consensus=_consensus(clusters),
        all_noise=not clusters,
    )
