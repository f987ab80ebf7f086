"""The Fréchet distance between two Gaussians fitted to feature sets (FID's formula).

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

In float64 NumPy. tr((S_1 S_2)^(1/2)) is taken as the sum of the square roots of
the eigenvalues of S_1^(1/2) S_2 S_1^(1/2), a symmetric positive semi-definite
matrix with the same eigenvalues as S_1 S_2: no general matrix square root, no
complex parts to discard, and singular covariances (dead ReLU features, fewer
samples than features) are fine.
"""

import numpy as np


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of [N, D] features; the covariance is unbiased (N - 1)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'Need [N, D] features with N >= 2; got shape {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
      features.shape[1], features.shape[1]
  )


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
  """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
        f'Shapes differ: means {mu1.shape}, {mu2.shape}; covariances '
        f'{sigma1.shape}, {sigma2.shape}.'
    )
  root1 = _psd_sqrt(sigma1)
  middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  trace_sqrt = np.sum(np.sqrt(np.clip(middle, 0, None)))
  distance = np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
  return float(max(distance, 0.0))  # Rounding can leave -1e-12 for identical inputs.


def features_distance(features1: np.ndarray, features2: np.ndarray) -> float:
  """The Fréchet distance between Gaussians fitted to two [N, D] feature sets."""
  return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))
