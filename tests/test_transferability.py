"""LogME, LEEP and NCE against hand-computed values and against the papers' own equations."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.runner.transferability import EPSILON, leep, logme, logme_fits, nce, one_hot


def dense_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> tuple[float, np.ndarray]:
    """The paper's evidence L(alpha, beta) / n with dense matrices: A = alpha I + beta F'F, m = beta A^-1 F'y."""
    n, dim = features.shape
    a = alpha * np.eye(dim) + beta * features.T @ features
    m = beta * np.linalg.solve(a, features.T @ y)
    evidence = (
        dim / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((features @ m - y) ** 2)
        - alpha / 2 * m @ m
        - np.linalg.slogdet(a)[1] / 2
    )
    return evidence / n, m


def test_logme_by_hand():
    # F = [[1], [1]], y = [3, 1]: the fixed point solves 3t^2 + 4t - 4 = 0 for t = alpha / beta, so t = 2/3,
    # alpha = 1/3, beta = 1/2, m = 1.5; the evidence is (-2 log 2 - log 2 pi - 1) / 2. (Up to the 1e-5 that the
    # paper's code adds to the denominators of alpha and beta.)
    fit = logme_fits(np.array([[1.0], [1.0]]), np.array([3.0, 1.0]))[0]
    assert fit.alpha == pytest.approx(1 / 3, rel=1e-4)
    assert fit.beta == pytest.approx(1 / 2, rel=1e-4)
    assert fit.m == pytest.approx([1.5], rel=1e-4)
    assert fit.evidence == pytest.approx((-2 * np.log(2) - np.log(2 * np.pi) - 1) / 2, rel=1e-4)


@pytest.mark.parametrize("n, dim", [(40, 6), (8, 12)])  # more examples than features, and fewer
def test_logme_satisfies_the_fixed_point_and_the_dense_evidence(n, dim):
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, dim))
    # Two targets the features explain, and one of pure noise (its alpha is large: it needs no weights).
    explained = [features @ rng.normal(size=dim) + rng.normal(size=n) for _ in range(2)]
    targets = np.stack([*explained, rng.normal(size=n)], axis=1)
    fits = logme_fits(features, targets)
    sigma = np.linalg.eigvalsh(features.T @ features).clip(0)
    for k, fit in enumerate(fits):
        y = targets[:, k]
        evidence, m = dense_evidence(features, y, fit.alpha, fit.beta)
        assert fit.evidence == pytest.approx(evidence, rel=1e-9)
        assert fit.m == pytest.approx(m, rel=1e-7, abs=1e-10)
        # At convergence: gamma = sum(beta s / (alpha + beta s)), alpha = gamma / m'm, beta = (n - gamma) / ||Fm - y||^2,
        # each denominator plus the 1e-5 that the paper's code adds (which bounds alpha for the noise target).
        gamma = np.sum(fit.beta * sigma / (fit.alpha + fit.beta * sigma))
        assert fit.alpha == pytest.approx(gamma / (m @ m + EPSILON), rel=1e-8)
        assert fit.beta == pytest.approx((n - gamma) / (np.sum((features @ m - y) ** 2) + EPSILON), rel=1e-8)
    assert logme(features, targets) == pytest.approx(np.mean([fit.evidence for fit in fits]))


def test_logme_prefers_features_that_carry_the_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    noise = rng.normal(size=(200, 8))
    informative = noise + 3 * one_hot(labels, 3) @ rng.normal(size=(3, 8))
    assert logme(informative, one_hot(labels, 3)) > logme(noise, one_hot(labels, 3))


def test_leep_and_nce_by_hand():
    # Source classes 0, 0, 1, 1 for target labels 0, 0, 1, 0: P(y | z=0) = (1, 0), P(y | z=1) = (1/2, 1/2), so
    # the examples' likelihoods are 1, 1, 1/2, 1/2 and LEEP = -log(2) / 2; NCE = sum P(y, z) log P(y | z), the same.
    source = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 0, 1, 0])
    assert leep(source, labels) == pytest.approx(-np.log(2) / 2)
    assert nce(source, labels) == pytest.approx(-np.log(2) / 2)
    # Soft predictions: P(y, z) = [[0.45, 0.05], [0.05, 0.45]] for two examples per class, so P(y | z) is 0.9 on
    # the diagonal and each example's likelihood 0.9 * 0.9 + 0.1 * 0.1 = 0.82.
    soft = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert leep(soft, np.array([0, 0, 1, 1])) == pytest.approx(np.log(0.82))
    assert nce(soft, np.array([0, 0, 1, 1])) == pytest.approx(0.0)  # the hard predictions name each label


def test_scores_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="LogME needs"):
        logme(np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="source predictions"):
        leep(np.ones((3, 2)) / 2, np.array([0, 1]))
