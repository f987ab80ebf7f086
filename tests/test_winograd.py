"""The CPU convolutions (vaegan_jax/cpu/winograd.py, space_to_depth.py,
shifted_products.py) compute XLA's convolutions, gradients too."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from vaegan_jax import layers
from vaegan_jax import train_state
from vaegan_jax.cpu import shifted_products
from vaegan_jax.cpu import space_to_depth
from vaegan_jax.cpu import winograd

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _direct(stride: int):
  return lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), 'SAME', dimension_numbers=_NHWC
  )


def _inputs(x_shape, kernel_shape, dtype=jnp.float32):
  x_key, kernel_key = jax.random.split(jax.random.PRNGKey(0))
  fan_in = np.prod(kernel_shape[:3])
  return (
      jax.random.normal(x_key, x_shape, dtype),
      jax.random.normal(kernel_key, kernel_shape, dtype) / np.sqrt(fan_in).astype(dtype),
  )


def _assert_same_function(conv, reference, x, kernel, atol=2e-5):
  """Same outputs and the same gradients with respect to both arguments."""
  np.testing.assert_allclose(jax.jit(conv)(x, kernel), reference(x, kernel), atol=atol)
  loss = lambda f: lambda x, kernel: jnp.sum(jnp.sin(f(x, kernel)))
  grads = jax.jit(jax.grad(loss(conv), argnums=(0, 1)))(x, kernel)
  expected = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
  for grad, want in zip(grads, expected):
    np.testing.assert_allclose(grad, want, atol=atol * float(jnp.max(jnp.abs(want))))


# Sizes that are not multiples of the 4x4 tiles, and ones that are.
@pytest.mark.parametrize('height, width', [(5, 7), (8, 4), (1, 2)])
def test_conv3x3_equals_convolution(height, width):
  x, kernel = _inputs((2, height, width, 6), (3, 3, 6, 5))
  _assert_same_function(winograd.conv3x3, _direct(1), x, kernel)


@pytest.mark.parametrize('height, width', [(8, 12), (2, 6)])
def test_conv5x5_stride2_equals_convolution(height, width):
  x, kernel = _inputs((2, height, width, 3), (5, 5, 3, 7))
  _assert_same_function(winograd.conv5x5_stride2, _direct(2), x, kernel)


@pytest.mark.parametrize('height, width', [(8, 8), (4, 10)])
def test_space_to_depth_conv5x5_stride2_equals_convolution(height, width):
  x, kernel = _inputs((3, height, width, 4), (5, 5, 4, 6))
  _assert_same_function(space_to_depth.conv5x5_stride2, _direct(2), x, kernel)


def test_small_strided_convolutions_get_an_undilated_input_gradient():
  """The digits' last Dis block (8x8 -> 4x4, 64 channels): XLA:CPU computed its input
  gradient as a dilated convolution 15x slower than the whole forward pass."""
  x, kernel = _inputs((2, 8, 8, 64), (5, 5, 64, 64))
  conv = functools.partial(
      winograd.conv_general_dilated, window_strides=(2, 2), padding='SAME', dimension_numbers=_NHWC
  )
  hlo = jax.jit(jax.grad(lambda x: jnp.sum(conv(x, kernel) ** 2))).lower(x).compile().as_text()
  convolutions = [line for line in hlo.splitlines() if ' convolution(' in line]
  assert convolutions and not any('_dilate=' in line for line in convolutions)
  _assert_same_function(conv, _direct(2), x, kernel)


# One input channel (Dis's first layer on grey images), one output channel (Dec's last),
# three of either (colour), and an asymmetric padding.
@pytest.mark.parametrize(
    'kernel_size, channels, features, padding',
    [
        (5, 1, 6, ((2, 2), (2, 2))),
        (5, 7, 1, ((2, 2), (2, 2))),
        (3, 3, 5, ((1, 1), (1, 1))),
        (5, 6, 3, ((1, 3), (0, 2))),
    ],
)
def test_shifted_products_conv_equals_convolution(kernel_size, channels, features, padding):
  x, kernel = _inputs((3, 8, 6, channels), (kernel_size, kernel_size, channels, features))
  reference = lambda x, kernel: jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=_NHWC
  )
  _assert_same_function(
      lambda x, kernel: shifted_products.conv(x, kernel, padding), reference, x, kernel
  )


def test_few_channel_convolutions_take_the_shifted_form():
  """conv_general_dilated picks shifted_products for float32 stride-1 convolutions with at
  most three channels on a side, and leaves the others (and bfloat16) to XLA."""
  conv = functools.partial(
      winograd.conv_general_dilated, window_strides=(1, 1), padding='SAME', dimension_numbers=_NHWC
  )
  for channels, features, dtype, shifted in (
      (1, 16, jnp.float32, 'input gradient'),
      (32, 3, jnp.float32, 'forward'),
      (4, 16, jnp.float32, None),
      (1, 16, jnp.bfloat16, None),
  ):
    x, kernel = _inputs((2, 8, 8, channels), (5, 5, channels, features), dtype)
    input_gradient = jax.grad(lambda x: jnp.sum(conv(x, kernel).astype(jnp.float32) ** 2))
    forward = _convolutions_compiled(conv, x, kernel)
    convolutions = {
        'forward': forward,
        'input gradient': _convolutions_compiled(input_gradient, x) - forward,
    }
    assert convolutions == {direction: int(direction != shifted) for direction in convolutions}, (
        channels,
        features,
        dtype,
    )
    _assert_same_function(conv, _direct(1), x, kernel, atol=2e-5 if dtype == jnp.float32 else 2e-2)


def _convolutions_compiled(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().as_text().count(' convolution(')


@pytest.mark.slow
@pytest.mark.parametrize(
    'kernel_size, stride, channels, features, size, dtype, padding, winograd_runs',
    [
        (3, 1, 128, 128, 8, jnp.float32, 'SAME', True),
        (5, 2, 32, 128, 8, jnp.float32, 'SAME', True),  # 4 * 32 space-to-depth channels.
        (3, 1, 64, 128, 8, jnp.float32, 'SAME', False),  # Too few channels to pay.
        (5, 2, 16, 128, 8, jnp.float32, 'SAME', False),
        (5, 2, 32, 128, 7, jnp.float32, 'SAME', False),  # Odd size: SAME pads 2 and 2.
        (3, 1, 128, 128, 8, jnp.bfloat16, 'SAME', False),  # Too coarse for the transforms.
        (3, 1, 128, 128, 8, jnp.float32, 'VALID', False),
        (3, 2, 128, 128, 8, jnp.float32, 'SAME', False),
    ],
)
def test_conv_general_dilated_uses_winograd_only_where_it_applies(
    kernel_size, stride, channels, features, size, dtype, padding, winograd_runs
):
  """As nn.Conv calls it; XLA's own convolution where Winograd does not apply."""
  x, kernel = _inputs(
      (1, size, size, channels), (kernel_size, kernel_size, channels, features), dtype
  )
  conv = nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=stride,
      padding=padding,
      use_bias=False,
      dtype=dtype,
      conv_general_dilated=winograd.conv_general_dilated,
  )
  reference = nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=stride,
      padding=padding,
      use_bias=False,
      dtype=dtype,
  )
  variables = {'params': {'kernel': kernel}}
  assert _convolutions_compiled(lambda x: conv.apply(variables, x), x) == (
      0 if winograd_runs else 1
  )
  y, expected = conv.apply(variables, x), reference.apply(variables, x)
  if winograd_runs:  # Outputs of about unit scale; the transforms' rounding, ~1e-5.
    np.testing.assert_allclose(y, expected, atol=1e-4)
  else:
    np.testing.assert_array_equal(y, expected)


@pytest.mark.slow
def test_subpixel_conv_transpose_with_winograd_equals_conv_transpose():
  """The decoder's layers: a 6x6 stride-2 transposed convolution is a 3x3 one with 4x the
  features (128 here), which Winograd computes."""
  x, _ = _inputs((2, 4, 4, 128), (1, 1, 1, 1))
  reference = nn.ConvTranspose(32, (6, 6), strides=(2, 2), padding='SAME')
  subpixel = layers.SubpixelConvTranspose(
      32, (6, 6), strides=(2, 2), conv_general_dilated=winograd.conv_general_dilated
  )
  variables = reference.init(jax.random.PRNGKey(1), x)
  assert _convolutions_compiled(lambda x: subpixel.apply(variables, x), x) == 0
  np.testing.assert_allclose(subpixel.apply(variables, x), reference.apply(variables, x), atol=1e-4)


@pytest.mark.slow
def test_seed_networks_agree_with_and_without_winograd():
  """cpu_winograd=False is the escape hatch: the same networks on XLA's convolutions.

  The Decoder's and Discriminator's convolutions are of all three kinds the Encoder has
  too (3x3 with 4x the features, 5x5 stride 2, and ones too small for Winograd).
  """
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 1), minval=-1, maxval=1)
  latents = jax.random.normal(jax.random.PRNGKey(1), (2, 128))
  networks = train_state.build_networks(default.get_config())  # The seed's 64x64 networks.
  for network, inputs in ((networks.decoder, latents), (networks.discriminator, images)):
    variables = jax.jit(functools.partial(network.init, train=False))(jax.random.PRNGKey(2), inputs)
    compiled = {
        use: jax.jit(functools.partial(network.clone(conv_general_dilated=conv).apply, train=False))
        .lower(variables, inputs)
        .compile()
        for use, conv in (
            (True, winograd.conv_general_dilated),
            (False, jax.lax.conv_general_dilated),
        )
    }
    assert compiled[True].as_text().count(' convolution(') < compiled[False].as_text().count(
        ' convolution('
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
        compiled[True](variables, inputs),
        compiled[False](variables, inputs),
    )
