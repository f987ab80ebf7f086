"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for XLA's CPU backend.

A train step of the 64x64 networks spends most of its time in convolutions, which
XLA:CPU computes directly: 9 multiply-adds per pixel and channel pair of a 3x3
kernel. Winograd's algorithm (Lavin & Gray 2016, "Fast Algorithms for Convolutional
Neural Networks") computes each 4x4 output tile from a 6x6 input tile with 36
instead of 144 multiplications: the tiles and the kernel are transformed by small
constant matrices, and the convolution becomes 36 independent matrix products over
channels. The gradients stay in that form: the input gradient is the same kind of
convolution (of the output gradient with the flipped kernel), the kernel gradient
36 matrix products with the saved input tiles.

A 5x5 convolution with stride 2 (the Encoder's and Discriminator's) is a 3x3
convolution of the space-to-depth input (each 2x2 pixel block as channels) with a
zero-padded, rearranged kernel, so it takes the same path at 36/25 of the work.

Float32 results differ from direct convolution by about 1e-5 relative (rounding in
the transforms), far below training noise; in bfloat16 they would not, so bfloat16
keeps XLA's convolutions, as do GPUs and TPUs, whose libraries choose their own
algorithms. `conv_general_dilated` is the drop-in that decides.
"""

from collections.abc import Sequence
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from vaegan_jax.cpu import shifted_products
from vaegan_jax.cpu import space_to_depth

# F(4x4, 3x3) with interpolation points 0, 1, -1, 2, -2 and infinity: input, kernel
# and output transforms (Lavin & Gray 2016, section 4.2).
_INPUT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ]
)
_KERNEL = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
_OUTPUT = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
)
_TILE = 4  # Output pixels per tile side; input tiles are _TILE + 2 wide and overlap by 2.
_POINTS = _TILE + 2

# Below this many input or output channels (of the 3x3 convolution) the transforms
# cost about what the products save, or more. Forward and both gradients, batch 64,
# 2-core CPU: 3x3 at 64x64 with 32 channels 149 ms against XLA's 101; at 32x32 with
# 64 channels 88 against 91; with 128 channels 196 against 336.
MIN_CHANNELS = 128

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _transform(matrix: np.ndarray, x: jax.Array) -> jax.Array:
  """`matrix` [p, q] applied along x's leading axis (of size q)."""
  return jnp.tensordot(jnp.asarray(matrix, x.dtype), x, axes=1)


def _num_tiles(size: int) -> int:
  return -(-size // _TILE)


def _input_tiles(x: jax.Array) -> jax.Array:
  """x [n, h, w, c] -> its transformed 6x6 tiles [36, n * tiles, c] (SAME padding)."""
  n, h, w, c = x.shape
  tiles_h, tiles_w = _num_tiles(h), _num_tiles(w)
  x = jnp.pad(x, ((0, 0), (1, tiles_h * _TILE + 1 - h), (1, tiles_w * _TILE + 1 - w), (0, 0)))
  rows = jnp.stack([x[:, i : i + _TILE * tiles_h : _TILE] for i in range(_POINTS)])
  rows = _transform(_INPUT, rows)  # [6 (row), n, tiles_h, w + pad, c]
  columns = jnp.stack([rows[:, :, :, j : j + _TILE * tiles_w : _TILE] for j in range(_POINTS)])
  tiles = _transform(_INPUT, columns)  # [6 (column), 6 (row), n, tiles_h, tiles_w, c]
  return tiles.reshape(_POINTS**2, n * tiles_h * tiles_w, c)


# The kernel transform of both dims at once, [36 (column, row), 9 (kernel row, column)]:
# one matrix product over all channel pairs (two einsum stages ran as products of
# inner size 3 and 6, several times slower).
_KERNEL_2D = np.einsum('vj,ui->vuij', _KERNEL, _KERNEL).reshape(_POINTS**2, 9)


def _kernel_tiles(kernel: jax.Array) -> jax.Array:
  """kernel [3, 3, c, k] -> [36, c, k], in _input_tiles' (column, row) order."""
  flat = kernel.reshape(9, -1)
  return jnp.dot(jnp.asarray(_KERNEL_2D, kernel.dtype), flat).reshape(_POINTS**2, *kernel.shape[2:])


def _output(products: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Transformed output tiles [36, n * tiles, k] -> the output [n, h, w, k]."""
  n, h, w = shape
  tiles_h, tiles_w = _num_tiles(h), _num_tiles(w)
  products = products.reshape(_POINTS, _POINTS, n, tiles_h, tiles_w, -1)
  y = _transform(_OUTPUT, products)  # [4 (column), 6 (row), ...]
  y = _transform(_OUTPUT, jnp.moveaxis(y, 1, 0))  # [4 (row), 4 (column), n, tiles_h, tiles_w, k]
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, tiles_h * _TILE, tiles_w * _TILE, -1)
  return y[:, :h, :w]


def _output_adjoint(dy: jax.Array) -> jax.Array:
  """The transpose of _output: dy [n, h, w, k] -> [36, n * tiles, k]."""
  n, h, w, k = dy.shape
  tiles_h, tiles_w = _num_tiles(h), _num_tiles(w)
  dy = jnp.pad(dy, ((0, 0), (0, tiles_h * _TILE - h), (0, tiles_w * _TILE - w), (0, 0)))
  dy = dy.reshape(n, tiles_h, _TILE, tiles_w, _TILE, k).transpose(2, 4, 0, 1, 3, 5)
  d = _transform(_OUTPUT.T, dy)  # [6 (row), 4 (column), ...]
  d = _transform(_OUTPUT.T, jnp.moveaxis(d, 1, 0))  # [6 (column), 6 (row), ...]
  return d.reshape(_POINTS**2, n * tiles_h * tiles_w, k)


def _products(tiles: jax.Array, kernel_tiles: jax.Array) -> jax.Array:
  return lax.dot_general(tiles, kernel_tiles, (((2,), (1,)), ((0,), (0,))))


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (1, 1), 'SAME') for NHWC x and a 3x3 HWIO kernel."""
  return _conv3x3_forward(x, kernel)[0]


def _conv3x3_forward(x, kernel):
  tiles = _input_tiles(x)
  return _output(_products(tiles, _kernel_tiles(kernel)), x.shape[:3]), (tiles, kernel)


def _conv3x3_backward(residuals, dy):
  tiles, kernel = residuals
  dx = conv3x3(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  d_kernel_tiles = lax.dot_general(tiles, _output_adjoint(dy), (((1,), (1,)), ((0,), (0,))))
  d_kernel = jnp.dot(
      jnp.asarray(_KERNEL_2D.T, kernel.dtype), d_kernel_tiles.reshape(_POINTS**2, -1)
  ).reshape(kernel.shape)
  return dx, d_kernel


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)


def conv5x5_stride2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (2, 2), 'SAME') for NHWC x of even height and
  width and a 5x5 HWIO kernel, as a 3x3 convolution of the space-to-depth input."""
  return conv3x3(space_to_depth.space_to_depth(x), space_to_depth.stride2_kernel(kernel))


def _faster_form(
    lhs_shape,
    rhs_shape,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    dtype,
    **kwargs,
):
  """What computes this convolution faster on CPU than XLA's own, or None.

  Winograd's conv3x3 or conv5x5_stride2 where it pays (float32, enough channels);
  float32 stride-1 ones with at most shifted_products.MAX_CHANNELS on a side, partly
  as matrix products; other 5x5 stride-2 convolutions take their input gradient
  through the space-to-depth form, which is exact in any dtype.
  """
  if (
      feature_group_count != 1
      or kwargs.get('batch_group_count', 1) != 1
      or kwargs.get('preferred_element_type') is not None
      or len(lhs_shape) != 4
      or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  ):
    return None
  if lax.conv_dimension_numbers(
      lhs_shape, rhs_shape, dimension_numbers
  ) != lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC):
    return None
  window, strides = tuple(rhs_shape[:2]), tuple(window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs_shape[1:3], window, strides, padding)
  padding = tuple(tuple(p) for p in padding)
  (_, height, width, channels), features = lhs_shape, rhs_shape[3]
  float32 = dtype == jnp.float32
  if window == (3, 3) and strides == (1, 1) and padding == ((1, 1), (1, 1)):
    if float32 and min(channels, features) >= MIN_CHANNELS:
      return conv3x3
  if strides == (1, 1) and float32 and min(channels, features) <= shifted_products.MAX_CHANNELS:
    return lambda x, kernel: shifted_products.conv(x, kernel, padding)
  if (
      window == (5, 5)
      and strides == (2, 2)
      and padding == space_to_depth.SAME_PADDING
      and height % 2 == 0
      and width % 2 == 0
  ):
    if float32 and min(4 * channels, features) >= MIN_CHANNELS:
      return conv5x5_stride2
    return space_to_depth.conv5x5_stride2
  return None


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    **kwargs: Any,
) -> jax.Array:
  """Drop-in for lax.conv_general_dilated (and nn.Conv's `conv_general_dilated`).

  On CPU, float32 SAME convolutions that are 3x3 with stride 1 or 5x5 with stride 2
  (even sizes), NHWC, with at least MIN_CHANNELS input and output channels (counting
  the space-to-depth input's), run by Winograd's algorithm; float32 stride-1 ones with
  few channels on a side by shifted_products.conv; the other 5x5 stride-2 ones by
  space_to_depth.conv5x5_stride2 (a faster input gradient); everything else,
  and every convolution on other platforms, by lax.conv_general_dilated.
  """
  direct = functools.partial(
      lax.conv_general_dilated,
      window_strides=window_strides,
      padding=padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      **kwargs,
  )
  faster = _faster_form(
      lhs.shape,
      rhs.shape,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      jnp.result_type(lhs, rhs),
      **kwargs,
  )
  if faster is None:
    return direct(lhs, rhs)
  return lax.platform_dependent(lhs, rhs, cpu=faster, default=direct)
