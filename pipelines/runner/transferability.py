"""Transferability scores of a frozen checkpoint on a target task, from one forward pass: LogME, LEEP and NCE.

Pure numpy; nothing here knows about models. No package provides these scores (the papers' reference code is not on
PyPI), so they are written here from the papers:

- LogME (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"): the
  log marginal likelihood (evidence) of a Bayesian linear model y = Fw + noise, with prior w ~ N(0, 1/alpha) and
  noise ~ N(0, 1/beta), alpha and beta maximising it by MacKay's fixed-point iteration; per target column (each
  class one-hot), averaged over the columns and divided by the number of examples.
- LEEP (Nguyen et al., ICML 2020): the mean log-likelihood of the target labels under the source head's soft
  predictions passed through the empirical conditional P(target label | source label).
- NCE (Tran et al., ICCV 2019): the negative conditional entropy of the target labels given the source head's
  hard predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed-point iteration on t = alpha / beta: stops when t changes by less than this share (the paper's code stops at
# 1e-3 after at most 11 steps; iterating to a tighter point costs microseconds and makes the equations hold).
TOLERANCE = 1e-10
MAX_STEPS = 1000
# Added to the denominators of alpha and beta, as in the paper's code: where a target is fitted exactly (a zero
# residual, as when n <= D) or needs no weights, the evidence grows without bound and alpha or beta would too.
EPSILON = 1e-5
TINY = 1e-300


@dataclass
class Evidence:
    """LogME's fit of one target column: the maximised evidence (divided by n), and alpha, beta and the posterior
    mean m of the weights where it is reached (m in the features' own basis)."""

    evidence: float
    alpha: float
    beta: float
    m: np.ndarray


def _fit_column(u: np.ndarray, sigma: np.ndarray, vh: np.ndarray, y: np.ndarray, dim: int) -> Evidence:
    """The fixed point for one target column y, on the thin SVD F = u diag(sqrt(sigma)) vh of the features.

    With x = u'y, every quantity is a sum over the k = min(n, D) singular directions: the posterior mean
    m = beta A^-1 F'y (A = alpha I + beta F'F) has m'm = sum(sigma x^2 / (t + sigma)^2) with t = alpha / beta, and the
    residual ||Fm - y||^2 = sum(x^2 t^2 / (t + sigma)^2) plus the part of y outside the span of F."""
    n = len(y)
    x = u.T @ y
    x2 = x**2
    outside = max(float(y @ y - x2.sum()), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_STEPS):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
        residual = float((x2 * (t / (t + sigma)) ** 2).sum()) + outside
        alpha, beta = gamma / (m2 + EPSILON), max(n - gamma, TINY) / (residual + EPSILON)
        if abs(alpha / beta - t) <= TOLERANCE * t:
            break
    t = alpha / beta
    m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
    residual = float((x2 * (t / (t + sigma)) ** 2).sum()) + outside
    # log|A|: the k directions with eigenvalue alpha + beta * sigma, and D - k more where F'F is zero (alpha each).
    # The paper's code leaves the latter out when D > n; the evidence here is the formula's own value.
    log_det = float(np.log(alpha + beta * sigma).sum()) + (dim - len(sigma)) * np.log(alpha)
    evidence = (
        dim / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - log_det / 2
    )
    m = vh.T @ (np.sqrt(sigma) * x / (t + sigma))
    return Evidence(float(evidence) / n, float(alpha), float(beta), m)


def logme_fits(features: np.ndarray, targets: np.ndarray) -> list[Evidence]:
    """LogME's fit of each target column: `features` [n, D], `targets` [n, K] (one-hot classes, multi-hot labels or
    regression targets)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if f.ndim != 2 or len(f) != len(y) or len(f) < 2:
        raise ValueError(f"LogME needs [n, D] features and n targets (n >= 2); got {f.shape} and {y.shape}")
    u, singular, vh = np.linalg.svd(f, full_matrices=False)
    return [_fit_column(u, singular**2, vh, y[:, k], f.shape[1]) for k in range(y.shape[1])]


def logme(features: np.ndarray, targets: np.ndarray) -> float:
    """LogME: the mean over target columns of the maximised evidence divided by n (higher: transfers better)."""
    return float(np.mean([fit.evidence for fit in logme_fits(features, targets)]))


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """Class ids [n] as one-hot rows [n, classes]."""
    return np.eye(classes)[np.asarray(labels, dtype=int)]


def _check_predictions(source: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(source, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels):
        raise ValueError(f"need [n, Z] source predictions and n labels; got {probabilities.shape} and {labels.shape}")
    return probabilities, labels


def leep(source: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the source head's probabilities [n, Z] (rows sum to 1) and the target class ids [n]: the empirical
    joint P(y, z) = mean over examples of theta(x)_z [y_i = y], its conditional P(y | z), and the mean log of
    sum_z P(y_i | z) theta(x_i)_z (at most 0; higher: transfers better)."""
    probabilities, labels = _check_predictions(source, labels)
    joint = one_hot(labels, labels.max() + 1).T @ probabilities / len(labels)  # [Y, Z]
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), TINY)
    likelihood = (probabilities @ conditional.T)[np.arange(len(labels)), labels]
    return float(np.mean(np.log(likelihood)))


def nce(source: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z) with Z the source head's predicted class (argmax of `source` [n, Z]) and Y the target class
    ids [n], both counted over the examples (at most 0; higher: transfers better)."""
    probabilities, labels = _check_predictions(source, labels)
    joint = np.zeros((labels.max() + 1, probabilities.shape[1]))
    np.add.at(joint, (labels, probabilities.argmax(axis=1)), 1.0 / len(labels))
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), TINY)
    seen = joint > 0
    return float((joint[seen] * np.log(conditional[seen])).sum())
