"""The similarity measures of the sanity checks against hand-computed values (and SciPy /
scikit-image where installed); the metrics are undefined for a constant map."""

import numpy as np
import pytest

from gradcam_widget.checks import sanity, similarity


def test_rank_averages_ties():
    assert similarity.rank([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert similarity.rank([[3.0, 1.0], [1.0, 1.0]]).tolist() == [4, 2, 2, 2]


def test_spearman_with_ties_matches_the_hand_example():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): covariance 4.5, variances 4.5 and 5
    assert similarity.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(
        3 / np.sqrt(10), abs=1e-12
    )
    assert similarity.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(similarity.spearman([1, 1, 1], [1, 2, 3]))  # no ranking in a constant map
    with pytest.raises(ValueError, match="same non-empty shape"):
        similarity.spearman([1, 2], [1, 2, 3])


def test_spearman_matches_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = np.round(rng.uniform(size=(20, 20)) * 5), np.round(rng.uniform(size=(20, 20)) * 3)
    assert similarity.spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])


def test_ssim_hand_values():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(40, 40))
    assert similarity.ssim(image, image) == pytest.approx(1.0)
    # constant maps: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert similarity.ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6), data_range=1.0) == (
        pytest.approx(expected)
    )
    # the inverted map (1 - x) and, for a zero-mean pattern, the negated map: negative
    assert similarity.ssim(image, 1.0 - image) < 0
    checkerboard = np.indices((24, 24)).sum(axis=0) % 2 * 2.0 - 1.0
    assert similarity.ssim(checkerboard, -checkerboard) < -0.9
    with pytest.raises(ValueError, match="odd"):
        similarity.ssim(image, image, window=10)


def test_ssim_matches_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(48, 48))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    theirs = metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert similarity.ssim(a, b, data_range=1.0) == pytest.approx(theirs, abs=1e-9)


def test_hog_features_and_similarity():
    rng = np.random.default_rng(2)
    image = rng.uniform(size=(64, 64))
    assert similarity.hog_similarity(image, image) == pytest.approx(1.0)
    assert abs(similarity.hog_similarity(image, rng.uniform(size=(64, 64)))) < 0.2
    assert np.isnan(similarity.hog_similarity(image, np.zeros((64, 64))))  # no gradient at all
    edge = np.zeros((32, 32))
    edge[16:] = 1.0  # a horizontal edge: vertical gradients, 90 degrees = the centre of bin 4
    features = similarity.hog_features(edge, cell=8)
    assert features.shape == ((4 - 1) * (4 - 1) * 4 * 9,)
    per_bin = features.reshape(-1, 9).sum(axis=0)
    assert per_bin[4] > 0 and np.count_nonzero(per_bin) == 1


def test_compare_of_identical_maps_is_one():
    rng = np.random.default_rng(3)
    signed = rng.normal(size=(32, 32)).astype(np.float32)
    scores = similarity.compare((np.abs(signed), signed), (np.abs(signed), signed))
    assert set(scores) == set(similarity.METRICS)
    assert all(value == pytest.approx(1.0) for value in scores.values())


# ---------------------------------------------------------------------------------------
# Blocks


def test_every_metric_but_the_signed_rank_is_undefined_for_a_constant_map():
    zeros = np.zeros((32, 32))
    noise = np.random.default_rng(0).uniform(0, 1, (32, 32))
    for pair in (((zeros, zeros), (zeros, zeros)), ((noise, noise - 0.5), (zeros, zeros))):
        scores = similarity.compare(*pair)
        assert np.isnan(scores["spearman_abs"]) and np.isnan(scores["ssim"])
        assert np.isnan(scores["hog"])


def test_the_measures_are_still_offered_by_sanity():
    for name in ("METRICS", "compare", "hog_features", "hog_similarity", "rank", "spearman",
                 "ssim"):  # fmt: skip
        assert getattr(sanity, name) is getattr(similarity, name)
