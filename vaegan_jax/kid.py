"""The kernel inception distance (KID; Binkowski et al. 2018) between feature sets.

The squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated
without bias (the diagonal terms left out), so that, unlike the Fréchet distance,
its expectation does not depend on the number of samples. As torch-fidelity and
the paper do, it is averaged over random subsets of equal size, whose spread is
reported beside it.
"""

import numpy as np


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """The unbiased estimate of MMD^2 between the distributions of rows of x and y."""
  m, n = len(x), len(y)
  kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
  return float(
      (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
      + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
      - 2 * kxy.mean()
  )


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    num_subsets: int = 10,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
  """(mean, standard deviation) of the unbiased MMD^2 over `num_subsets` random subsets
  of min(subset_size, len(real), len(fake)) rows of each [N, D] feature set."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f'Need [N, D] feature sets of one D; got {real.shape} and {fake.shape}.')
  size = min(subset_size, len(real), len(fake))
  if size < 2:
    raise ValueError(f'Need at least 2 rows in each set; got {len(real)} and {len(fake)}.')
  rng = np.random.default_rng(seed)
  values = [
      unbiased_mmd2(
          real[rng.choice(len(real), size, replace=False)],
          fake[rng.choice(len(fake), size, replace=False)],
      )
      for _ in range(num_subsets)
  ]
  return float(np.mean(values)), float(np.std(values))
