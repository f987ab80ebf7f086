"""5x5 stride-2 convolutions whose input gradient XLA:CPU computes slowly.

The input gradient of a strided convolution is a convolution of the output gradient
dilated by the stride. Where the output is small against the 5x5 window (8x8 -> 4x4,
the digits' last Discriminator block), XLA:CPU computes it in a swapped form that
took 137 ms of a 1.2 s train step, three times. The same function is a 3x3 stride-1
convolution of the space-to-depth input (each 2x2 pixel block as channels) with a
zero-padded, rearranged kernel: its input gradient is a plain 3x3 convolution and a
depth-to-space shuffle, 9 ms. `conv5x5_stride2` keeps XLA's forward pass and kernel
gradient, which are fast, and takes only the input gradient through that form. The
same rearrangement feeds Winograd's 5x5 convolutions (winograd.py).
"""

import jax
from jax import lax
import jax.numpy as jnp

_NHWC = ('NHWC', 'HWIO', 'NHWC')
# SAME padding of a 5x5 window with stride 2 over an even size.
SAME_PADDING = ((1, 2), (1, 2))


def space_to_depth(x: jax.Array) -> jax.Array:
  """NHWC x of even height and width -> [n, h / 2, w / 2, 4c], each 2x2 block as channels."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def stride2_kernel(kernel: jax.Array) -> jax.Array:
  """A 5x5 HWIO kernel as the 3x3 kernel over space_to_depth's channels.

  SAME pads 1 pixel before and 2 after, so output pixel i reads input pixels 2i - 1 ..
  2i + 3: blocks i - 1, i, i + 1 of 2x2 pixels, with the first pixel of block i - 1
  unused. Padding the kernel with one zero tap in front gives each block its 2x2 taps.
  """
  c, k = kernel.shape[2:]
  kernel = jnp.pad(kernel, ((1, 0), (1, 0), (0, 0), (0, 0)))
  return kernel.reshape(3, 2, 3, 2, c, k).transpose(0, 2, 1, 3, 4, 5).reshape(3, 3, 4 * c, k)


def _direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (2, 2), SAME_PADDING, dimension_numbers=_NHWC)


def _as_3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(
      space_to_depth(x), stride2_kernel(kernel), (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC
  )


@jax.custom_vjp
def conv5x5_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (2, 2), 'SAME') for NHWC x of even height and
  width and a 5x5 HWIO kernel; its input gradient through the space-to-depth form."""
  return _direct(x, kernel)


def _forward(x, kernel):
  return _direct(x, kernel), (x, kernel)


def _backward(residuals, dy):
  x, kernel = residuals
  dx = jax.vjp(lambda x: _as_3x3(x, kernel), x)[1](dy)[0]
  d_kernel = jax.vjp(lambda kernel: _direct(x, kernel), kernel)[1](dy)[0]
  return dx, d_kernel


conv5x5_stride2.defvjp(_forward, _backward)
