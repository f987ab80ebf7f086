"""The networks: the seed's parameter counts, shapes per image size, the layer maths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tests.helpers import override
from vaegan_jax import layers
from vaegan_jax import models
from vaegan_jax import train_state


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_seed_parameter_counts():
  """Seed tables, 64x64, 1 channel, latent 128: Flax BN scale/bias are parameters."""
  config = default.get_config()
  config.image_size, config.num_channels = 64, 1
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=1)
  state = jax.eval_shape(
      lambda rng: train_state.create_train_state(rng, config, networks, optimizers),
      jax.random.PRNGKey(0),
  )
  assert _num_params(state.encoder.params) == 35_112_064
  assert _num_params(state.discriminator.params) == 10_953_409
  assert _num_params(state.decoder.params) == 5_834_753


@pytest.mark.parametrize(
    'image_size, start, strides',
    [(64, 8, (2, 2, 2)), (32, 4, (2, 2, 2)), (28, 7, (1, 2, 2)), (20, 5, (1, 2, 2))],
)
def test_decoder_plan(image_size, start, strides):
  assert models.decoder_plan(image_size, 3) == (start, strides)


@pytest.mark.parametrize('image_size, channels', [(28, 1), (32, 3), (64, 1)])
def test_shapes_per_image_size(image_size, channels):
  batch, latent = 2, 8
  config = override(
      default.get_config(),
      {
          'image_size': image_size,
          'num_channels': channels,
          'networks.latent_dim': latent,
          'networks.encoder_widths': (4, 8, 8),
          'networks.encoder_dense_width': 16,
          'networks.decoder_widths': (8, 4, 4),
          'networks.discriminator_widths': (4, 4, 8, 8),
          'networks.discriminator_dense_width': 8,
          'networks.disl_layer': 3,
      },
  )
  encoder, decoder, discriminator = train_state.build_networks(config)
  images = jnp.zeros((batch, image_size, image_size, channels))
  z = jnp.zeros((batch, latent))
  rng = jax.random.PRNGKey(0)
  (mu, logvar), _ = jax.eval_shape(lambda: encoder.init_with_output(rng, images, train=False))
  decoded, _ = jax.eval_shape(lambda: decoder.init_with_output(rng, z, train=False))
  (logits, features), _ = jax.eval_shape(
      lambda: discriminator.init_with_output(rng, images, train=False)
  )
  assert mu.shape == logvar.shape == (batch, latent)
  assert decoded.shape == images.shape
  assert logits.shape == (batch,)
  side = -(-image_size // 4)  # Third conv: after strides 1, 2, 2 with SAME padding.
  assert features.shape == (batch, side * side * 8)


def test_disl_features_before_and_after_batch_norm():
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))
  outputs = {}
  for where in models.DISL_FEATURES:
    dis = train_state.build_networks(
        override(
            default.get_config(),
            {
                'networks.discriminator_widths': (4, 4, 8, 8),
                'networks.discriminator_dense_width': 8,
                'networks.disl_layer': 2,
                'networks.disl_features': where,
                'networks.activation': 'relu',
            },
        )
    ).discriminator
    variables = dis.init(jax.random.PRNGKey(1), images, train=False)
    (_, outputs[where]), _ = dis.apply(variables, images, train=True, mutable=['batch_stats'])
  # After BatchNorm (scale 1, bias 0) and ReLU: non-negative; the raw conv is not.
  assert jnp.all(outputs['post_activation'] >= 0)
  assert jnp.any(outputs['pre_norm'] < 0)
  # Batch-normalised per channel: mean 0 before ReLU, so about half the units are 0.
  assert 0.3 < jnp.mean(outputs['post_activation'] == 0) < 0.7


def test_subpixel_phases_convolve_only_their_own_taps():
  """Kernel 4, stride 2 (the digits' decoder): each phase's 2 taps per dim start at its
  own input, so one 2x2 convolution serves all four phases, not a 3x3 one (2.25x the
  multiplications); kernel 6 keeps its 3 taps per phase."""
  taps, starts, window = layers.phase_taps(4, 2)
  assert window == 2 and list(starts) == [-1, 0]
  assert sorted(taps.ravel()) == [0, 1, 2, 3]  # Every tap once, no zero taps.
  assert layers.phase_taps(6, 2)[2] == 3


@pytest.mark.parametrize('kernel_size', [4, 5, 6])
@pytest.mark.parametrize('stride', [1, 2])
def test_subpixel_conv_transpose_equals_conv_transpose(kernel_size, stride):
  """Same function, same parameters, same gradients as nn.ConvTranspose('SAME')."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
  reference = nn.ConvTranspose(
      4, (kernel_size, kernel_size), strides=(stride, stride), padding='SAME'
  )
  subpixel = layers.SubpixelConvTranspose(4, (kernel_size, kernel_size), strides=(stride, stride))
  variables = reference.init(jax.random.PRNGKey(1), x)
  variables = jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(2), v.shape), variables)
  assert jax.tree.map(jnp.shape, subpixel.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
      jnp.shape, variables
  )
  np.testing.assert_allclose(subpixel.apply(variables, x), reference.apply(variables, x), atol=1e-5)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

  grads = jax.grad(loss(subpixel), argnums=(0, 1))(variables, x)
  expected = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), grads, expected)
