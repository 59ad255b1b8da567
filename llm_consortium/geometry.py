"""Geometric confidence of a set of response embeddings.

Distance scales
---------------
Two scales are used, as in the original plugin:

* geometric confidence, outliers and cluster statistics (radius, density)
  use the *cosine distance halved*::

      d(a, b) = (1 - cos(a, b)) / 2        in [0, 1]

  0 means "same direction", 0.5 "orthogonal", 1 "opposite";
* clustering ``eps`` (:mod:`llm_consortium.clustering`) is on scikit-learn's
  cosine scale, ``1 - cos`` in [0, 2] (``DBSCAN(metric="cosine")``), for every
  algorithm: an ``eps`` of 0.35 means what it meant with the original.
  A zero vector has
no direction, so any distance involving one is defined as 1.0 (the maximum),
including the distance of a zero vector to itself.

Geometric confidence
--------------------
For vectors ``v_1 .. v_n`` with centroid ``c`` (the element-wise mean):

* ``distances[i] = d(v_i, c)``
* ``confidence = clamp(1 - mean(distances), 0, 1)``
* outliers (only when ``n >= 3`` and the population standard deviation of
  the distances is > 0): indices with ``distances[i] > mean + 2 * std``.

The standard deviation is the population one (``ddof=0``).  Note that with
this rule the largest possible z-score of a point is ``(n - 1) / sqrt(n)``,
so an outlier can only be reported once ``n >= 6``; for 3 to 5 vectors the
list is always empty.  A standard deviation below ``STD_TOLERANCE`` is treated
as zero, so floating-point noise among equal distances is not an outlier.

This is telemetry stored with the arbiter decision, not a stopping rule.

``cosine_distance``, ``centroid`` and ``geometric_confidence`` are pure Python
(no optional dependency); ``pairwise_distances`` needs numpy, which is part of
the ``embeddings`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .embeddings import import_optional

if TYPE_CHECKING:
    import numpy

Vector = Sequence[float]

OUTLIER_STD_FACTOR = 2.0
STD_TOLERANCE = 1e-12


@dataclass(frozen=True)
class GeometricSummary:
    """Geometric telemetry for a set of embeddings (see module docstring)."""

    confidence: float
    centroid: list[float]
    distances: list[float]
    mean_distance: float
    std_distance: float
    outliers: list[int]


def _check_vector(vector: Vector) -> list[float]:
    values = [float(x) for x in vector]
    if not values:
        raise ValueError("vectors must have at least one dimension")
    if not all(math.isfinite(x) for x in values):
        raise ValueError("vectors must contain only finite numbers")
    return values


def _check_vectors(vectors: Sequence[Vector]) -> list[list[float]]:
    if len(vectors) == 0:
        raise ValueError("at least one vector is required")
    checked = [_check_vector(v) for v in vectors]
    width = len(checked[0])
    for index, vector in enumerate(checked):
        if len(vector) != width:
            raise ValueError(
                f"vector {index} has {len(vector)} dimensions, expected {width}"
            )
    return checked


def _norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def cosine_distance(a: Vector, b: Vector) -> float:
    """Return ``(1 - cos(a, b)) / 2`` in [0, 1]; 1.0 if either is a zero vector."""
    left, right = _check_vectors([a, b])
    norm_product = _norm(left) * _norm(right)
    if norm_product == 0.0:
        return 1.0
    cosine = math.fsum(x * y for x, y in zip(left, right)) / norm_product
    cosine = min(1.0, max(-1.0, cosine))
    return (1.0 - cosine) / 2.0


def pairwise_distances(vectors: Sequence[Vector]) -> "numpy.ndarray":
    """Return the symmetric ``n x n`` matrix of :func:`cosine_distance` values.

    The diagonal is 0.0 for non-zero vectors and 1.0 for zero vectors, matching
    ``cosine_distance(v, v)``.  Requires numpy (``embeddings`` extra).
    """
    np = import_optional("numpy")
    matrix = np.asarray(_check_vectors(vectors), dtype=float)
    norms = np.linalg.norm(matrix, axis=1)
    nonzero = norms > 0.0
    unit = np.zeros_like(matrix)
    unit[nonzero] = matrix[nonzero] / norms[nonzero, None]
    cosine = np.clip(unit @ unit.T, -1.0, 1.0)
    distances = (1.0 - cosine) / 2.0
    distances = (distances + distances.T) / 2.0
    np.fill_diagonal(distances, 0.0)
    distances[~nonzero, :] = 1.0
    distances[:, ~nonzero] = 1.0
    return distances


def centroid(vectors: Sequence[Vector]) -> list[float]:
    """Return the element-wise mean of ``vectors`` (ValueError when empty)."""
    checked = _check_vectors(vectors)
    count = len(checked)
    return [math.fsum(column) / count for column in zip(*checked)]


def _mean_and_std(values: list[float]) -> tuple[float, float]:
    mean = math.fsum(values) / len(values)
    variance = math.fsum((x - mean) ** 2 for x in values) / len(values)
    return mean, math.sqrt(variance)


def _outliers(
    distances: list[float], mean: float, std: float, factor: float = OUTLIER_STD_FACTOR
) -> list[int]:
    if len(distances) < 3 or std <= STD_TOLERANCE:
        return []
    limit = mean + factor * std
    return [index for index, value in enumerate(distances) if value > limit]


def geometric_confidence(vectors: Sequence[Vector]) -> GeometricSummary:
    """Summarise how tightly ``vectors`` agree (see module docstring)."""
    checked = _check_vectors(vectors)
    center = centroid(checked)
    distances = [cosine_distance(vector, center) for vector in checked]
    mean, std = _mean_and_std(distances)
    return GeometricSummary(
        confidence=min(1.0, max(0.0, 1.0 - mean)),
        centroid=center,
        distances=distances,
        mean_distance=mean,
        std_distance=std,
        outliers=_outliers(distances, mean, std),
    )


class GeometricConfidenceCalculator:
    """The original plugin's interface to the functions above, on numpy arrays."""

    @staticmethod
    def compute_confidence(response_vectors: Sequence[Vector], centroid: Vector) -> float:
        """``clamp(1 - mean d(v, centroid), 0, 1)``; 0.0 without vectors."""
        if len(response_vectors) == 0 or len(centroid) == 0:
            return 0.0
        distances = [cosine_distance(vector, centroid) for vector in response_vectors]
        return min(1.0, max(0.0, 1.0 - math.fsum(distances) / len(distances)))

    @staticmethod
    def detect_outliers(vectors: Sequence[Vector], threshold_std: float = OUTLIER_STD_FACTOR) -> list[int]:
        """Indices farther from the centroid than mean + ``threshold_std`` · std."""
        if len(vectors) < 3:
            return []
        center = centroid(vectors)
        distances = [cosine_distance(vector, center) for vector in vectors]
        mean, std = _mean_and_std(distances)
        return _outliers(distances, mean, std, threshold_std)

    @staticmethod
    def compute(embeddings: Sequence[Vector]) -> tuple[float, Any]:
        """``(confidence, centroid)``, the centroid a numpy array."""
        np = import_optional("numpy")
        if len(embeddings) == 0:
            return 0.0, np.array([], dtype=float)
        summary = geometric_confidence(embeddings)
        return summary.confidence, np.asarray(summary.centroid, dtype=float)
