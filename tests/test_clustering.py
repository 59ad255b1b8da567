import math
import random
import sys

import pytest

from llm_consortium.clustering import (
    Cluster,
    ClusteringResult,
    cluster,
    subdominant_ultrametric,
)
from llm_consortium.defaults import CLUSTERING_ALGORITHMS as ALGORITHMS
from llm_consortium.embeddings import EXTRA_INSTALL_HINT, MissingExtraError
from llm_consortium.geometry import pairwise_distances

# Three answers that say nearly the same thing and one that does not.
THREE_AND_ONE = [
    [1, 0.01, 0, 0, 0],
    [1, 0, 0.01, 0, 0],
    [1, 0, 0, 0.01, 0],
    [0, 0, 0, 0, 1],
]
# Same shape, but the near answers are not equidistant from each other.
THREE_AND_ONE_UNEVEN = [[1, 0, 0], [0.99, 0.01, 0], [0.98, 0.02, 0.01], [0, 0, 1]]
ORTHOGONAL = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def unit(degrees):
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians)]


# A chain: neighbours 20 degrees apart (d = 0.0302), two steps apart 40
# degrees (d = 0.1170).  With eps = 0.05 only neighbours are within eps.
CHAIN = [unit(0), unit(20), unit(40), unit(60)]
CHAIN_EPS = 0.1  # on the 1 - cos scale: one 20-degree step is 0.060, two are 0.234


def partition(labels):
    groups = {}
    for index, label in enumerate(labels):
        if label != -1:
            groups.setdefault(label, set()).add(index)
    return sorted(sorted(group) for group in groups.values())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("vectors", [THREE_AND_ONE, THREE_AND_ONE_UNEVEN])
def test_three_agree_and_one_is_noise(algorithm, vectors):
    result = cluster(vectors, algorithm, eps=0.1, min_samples=2)
    assert isinstance(result, ClusteringResult)
    assert result.algorithm == algorithm
    assert result.labels[3] == -1
    assert len(set(result.labels[:3])) == 1 and result.labels[0] >= 0
    assert len(result.clusters) == 1
    assert isinstance(result.consensus, Cluster)
    assert result.consensus.members == [0, 1, 2]
    assert result.consensus.size == 3
    assert result.consensus.label == result.labels[0]
    assert result.consensus.radius < 0.001
    assert result.all_noise is False


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_three_agree_with_min_samples_three(algorithm):
    result = cluster(THREE_AND_ONE, algorithm, eps=0.1, min_samples=3)
    assert partition(result.labels) == [[0, 1, 2]]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_all_noise_when_everything_is_far_apart(algorithm):
    result = cluster(ORTHOGONAL, algorithm, eps=0.1, min_samples=2)
    assert result.labels == [-1, -1, -1, -1]
    assert result.clusters == []
    assert result.consensus is None
    assert result.all_noise is True


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_all_noise_when_fewer_points_than_min_samples(algorithm):
    vectors = [[1, 0], [1, 0.001], [1, 0.002]]
    result = cluster(vectors, algorithm, eps=0.1, min_samples=4)
    assert result.all_noise is True
    assert result.labels == [-1, -1, -1]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_single_vector_is_noise_unless_min_samples_is_one(algorithm):
    assert cluster([[1, 2]], algorithm, eps=0.1, min_samples=2).all_noise


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_vectors_are_always_noise(algorithm):
    result = cluster([[1, 0], [1, 0.01], [0, 0]], algorithm, eps=0.1, min_samples=2)
    assert result.labels[2] == -1
    assert partition(result.labels) == [[0, 1]]
    everything_zero = cluster([[0, 0], [0, 0]], algorithm, eps=1.0, min_samples=1)
    assert everything_zero.all_noise


@pytest.mark.parametrize("algorithm", ["dbscan", "tropical"])
def test_cluster_statistics_hand_computed(algorithm):
    # 1 - cos([1,0],[1,1]) = 0.29 <= eps (and for [0,1]): one cluster through [1,1].
    result = cluster([[1, 0], [0, 1], [1, 1]], algorithm, eps=0.5, min_samples=2)
    (only,) = result.clusters
    assert only.members == [0, 1, 2]
    assert only.centroid == pytest.approx([2 / 3, 2 / 3])
    # The centroid points along [1, 1]: distances 0.1464, 0.1464, 0.
    side = (1 - math.sqrt(0.5)) / 2
    assert only.radius == pytest.approx(side)
    assert only.mean_distance == pytest.approx(2 * side / 3)
    assert only.density == pytest.approx(1 - 2 * side / 3)  # the original's: 1 - mean distance
    assert only.size == 3
    assert result.consensus == only


def test_hdbscan_statistics_use_the_same_scale():
    result = cluster(THREE_AND_ONE, "hdbscan", eps=0.1, min_samples=2)
    members = [THREE_AND_ONE[i] for i in result.consensus.members]
    expected_centroid = [sum(column) / 3 for column in zip(*members)]
    assert result.consensus.centroid == pytest.approx(expected_centroid)
    # Members are [1, 0.01, 0, 0, 0] and permutations of the 0.01; the
    # centroid is [1, 0.01/3, 0.01/3, 0.01/3, 0]; all three are equally far.
    dot = 1 + 0.01 * (0.01 / 3)
    norms = math.sqrt(1 + 0.01**2) * math.sqrt(1 + 3 * (0.01 / 3) ** 2)
    expected = (1 - dot / norms) / 2  # 1.6665e-05
    assert result.consensus.radius == pytest.approx(expected, rel=1e-6)


def test_identical_vectors_have_zero_radius_and_density_one():
    result = cluster([[1, 1]] * 3, "tropical", eps=0.1, min_samples=2)
    assert result.consensus.radius == pytest.approx(0.0, abs=1e-15)
    assert result.consensus.density == pytest.approx(1.0)


def test_consensus_prefers_the_larger_cluster():
    vectors = [[1, 0, 0], [1, 0.001, 0], [0, 1, 0], [0.02, 1, 0], [0, 1, 0.02]]
    result = cluster(vectors, "tropical", eps=0.05, min_samples=2)
    assert partition(result.labels) == [[0, 1], [2, 3, 4]]
    assert result.consensus.members == [2, 3, 4]


def test_consensus_tie_goes_to_the_tighter_cluster():
    loose = [[1, 0, 0], [0.9, 0.1, 0]]
    tight = [[0, 1, 0], [0, 1, 0.01]]
    result = cluster(loose + tight, "tropical", eps=0.05, min_samples=2)
    assert result.labels == [0, 0, 1, 1]
    assert result.clusters[0].mean_distance > result.clusters[1].mean_distance
    assert result.consensus.label == 1


def test_consensus_full_tie_goes_to_the_lower_label():
    # Mirror images: identical size and mean distance.
    vectors = [[1, 0.01, 0], [1, 0, 0], [0.01, 1, 0], [0, 1, 0]]
    result = cluster(vectors, "tropical", eps=0.05, min_samples=2)
    first, second = result.clusters
    assert first.mean_distance == second.mean_distance
    assert result.consensus.label == 0


def test_subdominant_ultrametric_hand_example():
    distances = [[0, 1, 4], [1, 0, 2], [4, 2, 0]]
    ultra = subdominant_ultrametric(distances)
    # 0 -> 2 directly costs 4; via 1 the largest step is 2.
    assert ultra.tolist() == [[0, 1, 2], [1, 0, 2], [2, 2, 0]]


def test_subdominant_ultrametric_properties():
    rng = random.Random(7)
    vectors = [[rng.gauss(0, 1) for _ in range(5)] for _ in range(9)]
    distances = pairwise_distances(vectors)
    ultra = subdominant_ultrametric(distances)
    n = len(vectors)
    for i in range(n):
        for j in range(n):
            assert ultra[i, j] <= distances[i, j]
            assert ultra[i, j] == ultra[j, i]
            for k in range(n):
                assert ultra[i, k] <= max(ultra[i, j], ultra[j, k])


def test_subdominant_ultrametric_needs_a_square_matrix():
    with pytest.raises(ValueError, match="square"):
        subdominant_ultrametric([[0, 1, 2]])


def test_chain_ultrametric_is_the_largest_step():
    distances = pairwise_distances(CHAIN)
    step = (1 - math.cos(math.radians(20))) / 2  # 0.0302
    assert distances[0, 3] == pytest.approx(0.25)  # 60 degrees apart
    assert subdominant_ultrametric(distances)[0, 3] == pytest.approx(step)


def test_tropical_chains_where_dbscan_needs_core_points():
    # Every point has at most 3 points (itself included) within eps, so with
    # min_samples=4 DBSCAN has no core point and calls everything noise; the
    # tropical closure links the chain step by step into one cluster.
    dbscan = cluster(CHAIN, "dbscan", eps=CHAIN_EPS, min_samples=4)
    tropical = cluster(CHAIN, "tropical", eps=CHAIN_EPS, min_samples=4)
    assert dbscan.all_noise
    assert dbscan.labels == [-1, -1, -1, -1]
    assert tropical.labels == [0, 0, 0, 0]
    assert tropical.consensus.members == [0, 1, 2, 3]
    # The ends are 1 - cos 60 = 0.5 apart, far beyond eps: the chain is what joins them.
    assert 2 * pairwise_distances(CHAIN)[0, 3] > CHAIN_EPS


def test_tropical_and_dbscan_agree_on_the_chain_with_min_samples_three():
    dbscan = cluster(CHAIN, "dbscan", eps=CHAIN_EPS, min_samples=3)
    tropical = cluster(CHAIN, "tropical", eps=CHAIN_EPS, min_samples=3)
    assert partition(dbscan.labels) == partition(tropical.labels) == [[0, 1, 2, 3]]


@pytest.mark.parametrize("min_samples", [1, 2, 3])
def test_tropical_equals_dbscan_partition_for_small_min_samples(min_samples):
    rng = random.Random(min_samples)
    for _ in range(20):
        vectors = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(10)]
        eps = rng.uniform(0.02, 0.3)
        dbscan = cluster(vectors, "dbscan", eps=eps, min_samples=min_samples)
        tropical = cluster(vectors, "tropical", eps=eps, min_samples=min_samples)
        assert partition(dbscan.labels) == partition(tropical.labels)


def test_algorithm_name_is_case_insensitive():
    assert cluster(THREE_AND_ONE, " DBSCAN ", eps=0.1).algorithm == "dbscan"


def test_unknown_algorithm_names_the_valid_ones():
    with pytest.raises(ValueError, match="dbscan, hdbscan, tropical"):
        cluster(THREE_AND_ONE, "kmeans")


@pytest.mark.parametrize(
    ("eps", "min_samples"),
    [
        (0, 2),
        (-0.1, 2),
        (2.5, 2),
        (float("nan"), 2),
        ("0.1", 2),
        (0.1, 0),
        (0.1, 2.5),
        (0.1, True),
    ],
)
def test_invalid_parameters(eps, min_samples):
    with pytest.raises(ValueError):
        cluster(THREE_AND_ONE, "dbscan", eps=eps, min_samples=min_samples)


def test_empty_and_ragged_input():
    with pytest.raises(ValueError):
        cluster([], "tropical")
    with pytest.raises(ValueError):
        cluster([[1, 0], [1, 0, 0]], "tropical")


def test_hdbscan_falls_back_to_the_hdbscan_package(monkeypatch):
    import hdbscan
    import sklearn.cluster

    calls = []
    real = hdbscan.HDBSCAN

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.delattr(sklearn.cluster, "HDBSCAN")
    monkeypatch.setattr(hdbscan, "HDBSCAN", spy)
    result = cluster(THREE_AND_ONE_UNEVEN, "hdbscan", eps=0.1, min_samples=3)
    assert partition(result.labels) == [[0, 1, 2]]
    # The hdbscan package's min_samples does not count the point itself.
    assert calls == [
        {
            "metric": "precomputed",
            "min_cluster_size": 3,
            "min_samples": 2,
            "cluster_selection_epsilon": 0.1,
            "allow_single_cluster": True,
        }
    ]


def test_hdbscan_without_either_implementation(monkeypatch):
    import sklearn.cluster

    monkeypatch.delattr(sklearn.cluster, "HDBSCAN")
    monkeypatch.setitem(sys.modules, "hdbscan", None)
    with pytest.raises(ImportError) as info:
        cluster(THREE_AND_ONE, "hdbscan", eps=0.1)
    assert isinstance(info.value, MissingExtraError)
    assert EXTRA_INSTALL_HINT in str(info.value)


def test_dbscan_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with pytest.raises(MissingExtraError, match="scikit-learn") as info:
        cluster(THREE_AND_ONE, "dbscan", eps=0.1)
    assert EXTRA_INSTALL_HINT in str(info.value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clustering_without_numpy(monkeypatch, algorithm):
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(MissingExtraError) as info:
        cluster(THREE_AND_ONE, algorithm, eps=0.1)
    assert EXTRA_INSTALL_HINT in str(info.value)


@pytest.mark.parametrize("min_samples", [1, 2, 3])
def test_cluster_eps_keeps_exactly_what_sklearn_cosine_dbscan_keeps(min_samples):
    # --cluster-eps 0.35 means what it meant with the original, which ran
    # sklearn's DBSCAN(metric="cosine") on the raw embeddings.
    from sklearn.cluster import DBSCAN

    rng = random.Random(35 + min_samples)
    for _ in range(20):
        vectors = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(9)]
        ours = cluster(vectors, "dbscan", eps=0.35, min_samples=min_samples)
        theirs = DBSCAN(metric="cosine", eps=0.35, min_samples=min_samples).fit(vectors).labels_
        assert partition(ours.labels) == partition(theirs.tolist())
