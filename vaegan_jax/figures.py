"""The paper's figures (section 4) as uint8 image arrays: samples, reconstructions,
interpolations and latent attribute arithmetic."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax import image_grid
from vaegan_jax import inference


def samples(
    model: inference.Model, side: int, rng: jax.Array, temperature: float = 1.0
) -> np.ndarray:
  """A side x side grid of Dec(z), z ~ N(0, temperature^2 I)."""
  images = inference.sample(model, side * side, rng, temperature)
  return image_grid.grid(np.asarray(images), columns=side)


def reconstructions(model: inference.Model, images: np.ndarray) -> np.ndarray:
  """Real images (left) beside their reconstructions Dec(mu(x)) (right)."""
  recons = np.asarray(inference.reconstruct(model, images))
  return image_grid.side_by_side([image_grid.grid(images), image_grid.grid(recons)])


def interpolations(
    model: inference.Model, images: np.ndarray, steps: int, method: str = 'linear'
) -> np.ndarray:
  """A row per pair of consecutive images: x_a, decodes from mu(x_a) to mu(x_b), x_b."""
  mu, _ = inference.encode(model, images[: len(images) // 2 * 2])
  rows = []
  for a in range(0, len(mu), 2):
    path = inference.decode(model, inference.interpolate(mu[a], mu[a + 1], steps, method))
    rows += [images[a : a + 1], np.asarray(path), images[a + 1 : a + 2]]
  return image_grid.grid(np.concatenate(rows), columns=steps + 2)


def attribute_arithmetic(
    model: inference.Model, images: np.ndarray, vector: jax.Array, scales: Sequence[float]
) -> np.ndarray:
  """A row per image: x, Dec(mu(x)), then Dec(mu(x) + s * vector) for each scale s.

  As the paper's Figure 5, with the vector the mean latent difference between
  images with and without an attribute.
  """
  mu, _ = inference.encode(model, images)
  columns = [images, np.asarray(inference.decode(model, mu))]
  columns += [np.asarray(inference.decode(model, mu + s * vector)) for s in scales]
  per_row = jnp.stack(columns, axis=1)  # [N, columns, H, W, C]
  return image_grid.grid(
      np.asarray(per_row.reshape((-1,) + images.shape[1:])), columns=len(columns)
  )
