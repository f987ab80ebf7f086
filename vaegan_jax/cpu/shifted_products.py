"""Stride-1 convolutions with at most three channels on one side, for XLA's CPU backend:
the direction XLA:CPU runs slowly taken as one matrix product plus shifted sums.

XLA:CPU computes such a convolution's thin direction as many matrix-vector products:
the input gradient of the Discriminator's first layer (1 or 3 input channels) and the
forward pass of the Decoder's last (1 or 3 output channels) took 10-20 ms a call on
the digits, several times the other directions. Written per kernel tap, the channels
meet in one matrix product instead (im2col for few input channels: the shifted copies
of the input side by side; kn2row for few output channels: every tap's product at
once, then shifted into place and summed), and the shifts are elementwise copies that
XLA fuses. `conv` uses that form only where it is faster: the forward pass for few
output channels, the input gradient for few input channels; the rest stays XLA's.
Results equal direct convolution up to float rounding.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

# Up to this many channels on a side (grey and colour images) the shifted form pays.
MAX_CHANNELS = 3

_NHWC = ('NHWC', 'HWIO', 'NHWC')
Padding = tuple[tuple[int, int], tuple[int, int]]


def _taps(kernel: jax.Array) -> list[tuple[int, int]]:
  return [(i, j) for i in range(kernel.shape[0]) for j in range(kernel.shape[1])]


def shifted_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """The convolution as a matrix product over channels and shifted copies (see above)."""
  kh, kw, channels, features = kernel.shape
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  if channels <= features:  # im2col: [n, h, w, kh * kw * channels] @ [.., features].
    patches = jnp.concatenate(
        [x[:, i : i + height, j : j + width] for i, j in _taps(kernel)], axis=-1
    )
    return patches @ kernel.reshape(-1, features)
  # kn2row: all taps' products [n, H, W, kh * kw, features], shifted into place, summed.
  products = x @ kernel.transpose(2, 0, 1, 3).reshape(channels, -1)
  products = products.reshape(*products.shape[:3], kh * kw, features)
  return sum(
      products[:, i : i + height, j : j + width, t] for t, (i, j) in enumerate(_taps(kernel))
  )


def _direct(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (1, 1), padding) for NHWC x and an HWIO kernel
  with at most MAX_CHANNELS input or output channels."""
  forward = shifted_conv if kernel.shape[3] <= MAX_CHANNELS else _direct
  return forward(x, kernel, padding)


def _conv_forward(x, kernel, padding):
  return conv(x, kernel, padding), (x, kernel)


def _conv_backward(padding, residuals, dy):
  x, kernel = residuals
  # Only the input gradient of few input channels is faster shifted; XLA drops the
  # forward passes that jax.vjp traces here.
  for_input = shifted_conv if kernel.shape[2] <= MAX_CHANNELS else _direct
  dx = jax.vjp(lambda x: for_input(x, kernel, padding), x)[1](dy)[0]
  d_kernel = jax.vjp(lambda k: _direct(x, k, padding), kernel)[1](dy)[0]
  return dx, d_kernel


conv.defvjp(_conv_forward, _conv_backward)
