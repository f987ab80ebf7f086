"""A transposed convolution computed as a regular convolution plus depth-to-space.

nn.ConvTranspose lowers to a convolution over the zero-dilated input; its weight
gradient is an input-dilated convolution that XLA's CPU backend runs very slowly
(many times the forward pass: the decoder was the slowest part of a train step).
Splitting the kernel into its stride**2 output phases ("sub-pixel convolution",
Shi et al. 2016) gives the same function as one undilated convolution with
stride**2 times the output channels, followed by a depth-to-space shuffle: no
multiplications by inserted zeros, and plain convolutions in the backward pass.

Parameters ('kernel' [k, k, in, out] and 'bias') have the shapes of
nn.ConvTranspose's, and the outputs equal nn.ConvTranspose(padding='SAME')'s
(tests/test_models.py).
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _same_padding_before(kernel_size: int, stride: int) -> int:
  """Padding before the dilated input in lax.conv_transpose(padding='SAME')."""
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil((kernel_size + stride - 2) / 2))


def phase_taps(kernel_size: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
  """For one spatial dim: which kernel tap each (window offset, phase) uses.

  Output position o = stride * m + p (phase p) sums x[m + starts[p] + w] * K[taps[w, p]]
  over window offsets w, with taps == kernel_size meaning "no tap" (a zero). Each
  phase's window starts at its own first input, so the window is as narrow as the
  phase with the most taps needs (kernel 4, stride 2: 2 wide, not 3).
  Returns (taps [window, stride], starts [stride], window).
  """
  pad = _same_padding_before(kernel_size, stride)
  entries = []  # (input offset relative to m, phase, tap)
  for p in range(stride):
    first = (pad - p) % stride
    for tap in range(first, kernel_size, stride):
      entries.append(((tap - pad + p) // stride, p, tap))
  lowest = min(e[0] for e in entries)
  starts = np.array(
      [min([e[0] for e in entries if e[1] == p], default=lowest) for p in range(stride)]
  )
  window = max(offset - starts[p] for offset, p, _ in entries) + 1
  taps = np.full((window, stride), kernel_size, np.int32)
  for offset, p, tap in entries:
    taps[offset - starts[p], p] = tap
  return taps, starts, window


class SubpixelConvTranspose(nn.Module):
  """Drop-in for nn.ConvTranspose(features, kernel_size, strides, padding='SAME')."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  dtype: Any = None  # Computation dtype; None: the input's.
  # As nn.Conv's: what computes the convolution (cpu/winograd.py's, injected by
  # train_state.build_networks).
  conv_general_dilated: Callable[..., jax.Array] = jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    in_features = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, in_features, self.features))
    taps_h, starts_h, window_h = phase_taps(kh, sh)
    taps_w, starts_w, window_w = phase_taps(kw, sw)
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # Index k is the zero tap.
    phases = padded[taps_h[:, :, None, None], taps_w[None, None, :, :]]  # [wh, sh, ww, sw, in, out]
    phases = phases.transpose(0, 2, 4, 1, 3, 5).reshape(
        window_h, window_w, in_features, sh * sw * self.features
    )
    if self.dtype is not None:
      x = x.astype(self.dtype)
    batch, height, width, _ = x.shape
    # One convolution for all phases, over the span of their windows' starts: phase p's
    # outputs are its rows from starts[p] - min(starts) on.
    padding = (
        (-starts_h.min(), window_h - 1 + starts_h.max()),
        (-starts_w.min(), window_w - 1 + starts_w.max()),
    )
    if np.ptp(starts_h) or np.ptp(starts_w):
      # The output is then larger than the input; XLA:CPU computes the kernel gradient
      # of such a padded convolution ~100x slower than that of a VALID one.
      x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
      padding = ((0, 0), (0, 0))
    y = self.conv_general_dilated(
        x,
        phases.astype(x.dtype),
        window_strides=(1, 1),
        padding=padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    y = y.reshape(*y.shape[:3], sh, sw, self.features)
    y = jnp.stack(
        [y[:, s : s + height, :, p] for p, s in enumerate(starts_h - starts_h.min())], axis=3
    )
    y = jnp.stack(
        [y[:, :, s : s + width, :, p] for p, s in enumerate(starts_w - starts_w.min())], axis=4
    )
    y = y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height * sh, width * sw, self.features)
    if not self.use_bias:
      return y
    bias = self.param('bias', self.bias_init, (self.features,))
    return y + bias.astype(y.dtype)
