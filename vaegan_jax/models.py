"""Encoder, Decoder (the generator) and Discriminator of the VAE-GAN.

The layer tables follow the seed PyTorch implementation (Larsen et al. 2016, 64x64):
with its settings the parameter counts are identical (tests/test_models.py).
Layers followed by BatchNorm keep their bias with `bias_before_norm` (the seed's
layers, whose parameter counts it gives), or drop it, as flax's ResNet and DCGAN
code do: BatchNorm subtracts it again, so its true gradient is zero and what it
gets is rounding noise, which RMSProp scales up to full-size steps. BatchNorm
uses momentum 0.9 / epsilon 1e-5, which is PyTorch's momentum 0.1 in Flax's
convention. Every network takes `train` and keeps BatchNorm statistics in the
`batch_stats` collection.
"""

from collections.abc import Callable, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaegan_jax.layers import SubpixelConvTranspose

ACTIVATIONS = {
    'leaky_relu': functools.partial(nn.leaky_relu, negative_slope=0.2),  # the seed
    'relu': nn.relu,  # the paper
}
DISL_FEATURES = ('post_activation', 'pre_norm')


def _batch_norm(train: bool, momentum: float, dtype: Any) -> nn.BatchNorm:
  """Statistics in float32 whatever `dtype` (Flax promotes them), the variance in two
  passes, as PyTorch does: E[x^2] - E[x]^2 loses digits where a channel's mean is
  large against its spread (the digits' flat background), and with them the
  agreement of runs that sum in another order (1 and 8 devices)."""
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=momentum,
      epsilon=1e-5,
      dtype=dtype,
      use_fast_variance=False,
  )


def decoder_plan(image_size: int, num_layers: int) -> tuple[int, tuple[int, ...]]:
  """The decoder's start resolution and the strides of its transposed convolutions.

  Upsampling happens in the last layers, as many times as `image_size` halves
  evenly (at most once per layer): 64 -> 8 then strides (2, 2, 2); 28 -> 7 then
  strides (1, 2, 2).
  """
  upsamplings = 0
  while upsamplings < num_layers and image_size % (2 ** (upsamplings + 1)) == 0:
    upsamplings += 1
  strides = (1,) * (num_layers - upsamplings) + (2,) * upsamplings
  return image_size // 2**upsamplings, strides


# |logvar| bound: exp(20) * latent_dim stays far below float32/bfloat16's maximum,
# so the KL and the reparameterisation cannot overflow; trained values are within +-10.
LOGVAR_LIMIT = 20.0


class Encoder(nn.Module):
  """x -> (mu, logvar) of the Gaussian posterior q(z|x); logvar clipped to +-LOGVAR_LIMIT."""

  # No defaults: configs/default.py's `networks` are the defaults (train_state.build_networks).
  latent_dim: int
  widths: Sequence[int]
  dense_width: int
  activation: str
  batch_norm_momentum: float
  bias_before_norm: bool  # True: the seed's biases in front of BatchNorm.
  dtype: Any = jnp.float32  # Computation; parameters and outputs stay float32.
  # What computes the convolutions, as nn.Conv's field (build_networks may pass a faster one).
  conv_general_dilated: Callable[..., jax.Array] = jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    act = ACTIVATIONS[self.activation]
    for width in self.widths:
      x = nn.Conv(
          width,
          (5, 5),
          strides=(2, 2),
          padding='SAME',
          dtype=self.dtype,
          use_bias=self.bias_before_norm,
          conv_general_dilated=self.conv_general_dilated,
      )(x)
      x = act(_batch_norm(train, self.batch_norm_momentum, self.dtype)(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.dense_width, dtype=self.dtype, use_bias=self.bias_before_norm)(x)
    x = act(_batch_norm(train, self.batch_norm_momentum, self.dtype)(x))
    mu = nn.Dense(self.latent_dim, name='mu', dtype=self.dtype)(x).astype(jnp.float32)
    logvar = nn.Dense(self.latent_dim, name='logvar', dtype=self.dtype)(x).astype(jnp.float32)
    return mu, jnp.clip(logvar, -LOGVAR_LIMIT, LOGVAR_LIMIT)


class Decoder(nn.Module):
  """z -> image in [-1, 1] (tanh); the same network is the GAN's generator.

  Its transposed convolutions (SAME padding) are computed as sub-pixel
  convolutions (layers.py): the same function and parameters, a faster gradient.
  """

  image_size: int
  num_channels: int
  widths: Sequence[int]
  kernel_size: int
  activation: str
  batch_norm_momentum: float
  bias_before_norm: bool
  dtype: Any = jnp.float32  # Computation; parameters and outputs stay float32.
  # What computes the convolutions, as nn.Conv's field (build_networks may pass a faster one).
  conv_general_dilated: Callable[..., jax.Array] = jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, z: jax.Array, train: bool) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    start, strides = decoder_plan(self.image_size, len(self.widths))
    x = nn.Dense(start * start * self.widths[0], dtype=self.dtype, use_bias=self.bias_before_norm)(
        z
    )
    x = act(_batch_norm(train, self.batch_norm_momentum, self.dtype)(x))
    x = x.reshape((z.shape[0], start, start, self.widths[0]))
    kernel = (self.kernel_size, self.kernel_size)
    for width, stride in zip(self.widths, strides):
      x = SubpixelConvTranspose(
          width,
          kernel,
          strides=(stride, stride),
          dtype=self.dtype,
          use_bias=self.bias_before_norm,
          conv_general_dilated=self.conv_general_dilated,
      )(x)
      x = act(_batch_norm(train, self.batch_norm_momentum, self.dtype)(x))
    x = SubpixelConvTranspose(
        self.num_channels,
        (5, 5),
        dtype=self.dtype,
        conv_general_dilated=self.conv_general_dilated,
    )(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """x -> (logit of "real", Dis_l(x)), Dis_l being the learned similarity features.

  `disl_layer` counts convolutions from 1; `disl_features` picks that block's
  output after BatchNorm and activation (the seed) or its raw convolution output
  before BatchNorm (the paper's code).
  """

  widths: Sequence[int]
  strides: Sequence[int]
  dense_width: int
  activation: str
  disl_layer: int
  disl_features: str
  batch_norm_momentum: float
  bias_before_norm: bool
  dtype: Any = jnp.float32  # Computation; parameters and outputs stay float32.
  # What computes the convolutions, as nn.Conv's field (build_networks may pass a faster one).
  conv_general_dilated: Callable[..., jax.Array] = jax.lax.conv_general_dilated

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    act = ACTIVATIONS[self.activation]
    features = None
    for index, (width, stride) in enumerate(zip(self.widths, self.strides)):
      # The first block has no BatchNorm, as in DCGAN and the seed: it keeps its bias.
      x = nn.Conv(
          width,
          (5, 5),
          strides=(stride, stride),
          padding='SAME',
          dtype=self.dtype,
          use_bias=self.bias_before_norm or index == 0,
          conv_general_dilated=self.conv_general_dilated,
      )(x)
      if index + 1 == self.disl_layer and self.disl_features == 'pre_norm':
        features = x
      if index > 0:
        x = _batch_norm(train, self.batch_norm_momentum, self.dtype)(x)
      x = act(x)
      if index + 1 == self.disl_layer and self.disl_features == 'post_activation':
        features = x
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.dense_width, dtype=self.dtype, use_bias=self.bias_before_norm)(x)
    x = act(_batch_norm(train, self.batch_norm_momentum, self.dtype)(x))
    logits = nn.Dense(1, dtype=self.dtype)(x)[:, 0]
    return (
        logits.astype(jnp.float32),
        features.reshape((features.shape[0], -1)).astype(jnp.float32),
    )
