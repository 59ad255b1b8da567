import math
import subprocess
import sys

import pytest

from llm_consortium.embeddings import EXTRA_INSTALL_HINT, MissingExtraError
from llm_consortium.geometry import (
    GeometricSummary,
    centroid,
    cosine_distance,
    geometric_confidence,
    pairwise_distances,
)

SQRT_HALF = math.sqrt(0.5)  # cos of 45 degrees


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 0], [1, 0], 0.0),
        ([1, 0], [3, 0], 0.0),
        ([1, 0], [0, 1], 0.5),
        ([1, 0], [-2, 0], 1.0),
        ([1, 0], [1, 1], (1 - SQRT_HALF) / 2),  # 0.1464466
        ([1, 2, 3], [4, 5, 6], (1 - 32 / math.sqrt(14 * 77)) / 2),
    ],
)
def test_cosine_distance_hand_values(a, b, expected):
    assert cosine_distance(a, b) == pytest.approx(expected, abs=1e-12)
    assert cosine_distance(b, a) == pytest.approx(expected, abs=1e-12)


def test_cosine_distance_of_a_zero_vector_is_one():
    assert cosine_distance([0, 0], [1, 0]) == 1.0
    assert cosine_distance([1, 0], [0.0, 0.0]) == 1.0
    assert cosine_distance([0, 0], [0, 0]) == 1.0


@pytest.mark.parametrize(
    ("a", "b"),
    [([1, 0], [1, 0, 0]), ([], []), ([1, float("nan")], [1, 0])],
)
def test_cosine_distance_rejects_bad_vectors(a, b):
    with pytest.raises(ValueError):
        cosine_distance(a, b)


def test_centroid_is_the_mean():
    assert centroid([[1, 0], [0, 1]]) == [0.5, 0.5]
    assert centroid([[1, 2, 3], [3, 4, 5]]) == [2.0, 3.0, 4.0]
    assert centroid([[7, -1]]) == [7.0, -1.0]


def test_centroid_errors():
    with pytest.raises(ValueError, match="at least one vector"):
        centroid([])
    with pytest.raises(ValueError, match="dimensions"):
        centroid([[1, 2], [1, 2, 3]])


def test_pairwise_distances_matches_cosine_distance():
    vectors = [[1, 0], [0, 1], [1, 1], [0, 0], [-1, 0]]
    matrix = pairwise_distances(vectors)
    assert matrix.shape == (5, 5)
    for i, a in enumerate(vectors):
        for j, b in enumerate(vectors):
            assert matrix[i, j] == pytest.approx(cosine_distance(a, b), abs=1e-12)
    # Hand values: orthogonal 0.5, 45 degrees 0.1464, opposite 1, zero vector 1.
    assert matrix[0, 1] == pytest.approx(0.5)
    assert matrix[0, 2] == pytest.approx((1 - SQRT_HALF) / 2)
    assert matrix[0, 4] == pytest.approx(1.0)
    assert matrix[3].tolist() == [1.0] * 5
    assert [matrix[i, i] for i in range(5)] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert (matrix == matrix.T).all()


def test_two_orthogonal_vectors_hand_computed():
    summary = geometric_confidence([[1, 0], [0, 1]])
    assert isinstance(summary, GeometricSummary)
    assert summary.centroid == [0.5, 0.5]
    # cos([1, 0], [0.5, 0.5]) = 0.7071, d = (1 - 0.7071) / 2 = 0.1464
    assert summary.distances == pytest.approx([0.1464466, 0.1464466], abs=1e-7)
    assert summary.mean_distance == pytest.approx(0.1464466, abs=1e-7)
    assert summary.std_distance == pytest.approx(0.0, abs=1e-15)
    assert summary.confidence == pytest.approx(0.8535534, abs=1e-7)
    assert summary.outliers == []


def test_single_vector():
    assert geometric_confidence([[3, 4]]).confidence == pytest.approx(1.0)
    zero = geometric_confidence([[0, 0, 0]])
    assert zero.confidence == 0.0
    assert zero.distances == [1.0]
    assert zero.centroid == [0.0, 0.0, 0.0]


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        geometric_confidence([])


def test_zero_vector_among_others():
    summary = geometric_confidence([[1, 0], [1, 0], [0, 0]])
    # centroid [2/3, 0] points along [1, 0]: distances 0, 0 and 1 (zero vector)
    assert summary.centroid == pytest.approx([2 / 3, 0.0])
    assert summary.distances == pytest.approx([0.0, 0.0, 1.0])
    assert summary.confidence == pytest.approx(2 / 3)


def test_opposite_vectors_give_a_zero_centroid_and_zero_confidence():
    summary = geometric_confidence([[1, 0], [0, 1], [-1, 0], [0, -1]])
    assert summary.centroid == [0.0, 0.0]
    assert summary.distances == [1.0, 1.0, 1.0, 1.0]
    assert summary.confidence == 0.0
    assert summary.std_distance == 0.0
    assert summary.outliers == []


def test_outlier_detected():
    # Six copies of [1, 0] and one [0, 1]; centroid [6/7, 1/7].
    summary = geometric_confidence([[1, 0]] * 6 + [[0, 1]])
    near = (1 - 6 / math.sqrt(37)) / 2  # 0.0068030
    far = (1 - 1 / math.sqrt(37)) / 2  # 0.4178005
    mean = (6 * near + far) / 7
    std = math.sqrt(6 / 49) * (far - near)  # population std of {near x6, far}
    assert summary.centroid == pytest.approx([6 / 7, 1 / 7])
    assert summary.distances == pytest.approx([near] * 6 + [far])
    assert summary.mean_distance == pytest.approx(mean)
    assert summary.std_distance == pytest.approx(std)
    assert far > mean + 2 * std  # 0.4178 > 0.3532
    assert summary.outliers == [6]
    assert summary.confidence == pytest.approx(1 - mean)


def test_outliers_need_six_vectors():
    # The largest z-score among n points is (n - 1) / sqrt(n): 1.79 for n = 5.
    summary = geometric_confidence([[1, 0]] * 4 + [[0, 1]])
    assert summary.std_distance > 0
    assert summary.outliers == []


def test_no_outliers_when_std_is_zero():
    summary = geometric_confidence([[1, 2, 3]] * 7)
    assert summary.std_distance == 0.0
    assert summary.outliers == []
    assert summary.confidence == pytest.approx(1.0)


def test_no_outliers_below_three_vectors():
    summary = geometric_confidence([[1, 0], [1, 1]])
    assert summary.std_distance > 0
    assert summary.outliers == []


def test_pure_python_parts_work_without_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert geometric_confidence([[1, 0], [0, 1]]).confidence == pytest.approx(
        0.8535534, abs=1e-7
    )
    with pytest.raises(MissingExtraError) as info:
        pairwise_distances([[1, 0], [0, 1]])
    assert EXTRA_INSTALL_HINT in str(info.value)
    assert "numpy" in str(info.value)


@pytest.mark.slow
def test_importing_the_module_does_not_import_heavy_dependencies():
    heavy = ["numpy", "sklearn", "hdbscan", "openai", "sentence_transformers"]
    code = (
        "import sys, llm_consortium, llm_consortium.errors\n"
        f"heavy = {heavy!r}\n"
        "before = {m for m in heavy if m in sys.modules}\n"
        "import llm_consortium.geometry, llm_consortium.clustering\n"
        "import llm_consortium.embeddings\n"
        "print(sorted({m for m in heavy if m in sys.modules} - before))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
