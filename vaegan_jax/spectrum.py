"""How much of an image's detail lies at high spatial frequencies: a sharpness figure.

Blur (the VAE's pixel-wise likelihood) removes the high frequencies; the paper's
claim is that a learned similarity restores them. Compared with real images of the
same data, a ratio below 1 is blurrier than the data, above 1 noisier.
"""

import numpy as np


def high_frequency_fraction(images: np.ndarray, cutoff: float = 0.125) -> np.ndarray:
  """Per image [N, H, W, C], the fraction of its spectral energy (the mean removed) at
  radial frequencies above `cutoff` cycles per pixel (0.5 is Nyquist's)."""
  images = np.asarray(images, np.float64).mean(axis=-1)  # Luminance, enough for sharpness.
  images = images - images.mean(axis=(1, 2), keepdims=True)
  power = np.abs(np.fft.fft2(images)) ** 2
  fy = np.fft.fftfreq(images.shape[1])[:, None]
  fx = np.fft.fftfreq(images.shape[2])[None, :]
  high = np.sqrt(fx**2 + fy**2) > cutoff
  total = power.sum(axis=(1, 2))
  return np.where(total > 0, (power * high).sum(axis=(1, 2)) / np.maximum(total, 1e-30), 0.0)


def sharpness_ratio(samples: np.ndarray, real: np.ndarray, cutoff: float = 0.125) -> float:
  """Mean high-frequency fraction of samples over that of real images."""
  return float(
      np.mean(high_frequency_fraction(samples, cutoff))
      / np.mean(high_frequency_fraction(real, cutoff))
  )
