"""Checks every config field before anything is built or compiled.

Each failure raises ConfigError with a message that names the field, its value
and what would be valid, e.g. "config.optim.learning_rate=-0.1: must be > 0".
"""

import math
from typing import Any, Callable

import jax
import ml_collections
import tensorflow_datasets as tfds

from vaegan_jax import digits  # Registers 'sklearn_digits' with TFDS.
from vaegan_jax import inception
from vaegan_jax import models
from vaegan_jax import train_state
from vaegan_jax.errors import ConfigError

_CHOICES = {
    'model': tuple(train_state.MODELS),
    'networks.activation': tuple(models.ACTIVATIONS),
    'networks.disl_features': models.DISL_FEATURES,
    'loss.discriminator_fakes': ('reconstructions', 'prior', 'both'),
    'loss.decoder_gan_loss': ('saturating', 'non_saturating'),
    'loss.discriminator_batches': ('joint', 'separate'),
    'loss.decoder_batches': ('joint', 'separate'),
    'num_channels': (1, 3),
    'on_nonfinite': ('stop', 'skip'),
    'dtype': ('float32', 'bfloat16'),
}


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  value = config
  for part in field.split('.'):
    try:
      value = value[part]
    except (KeyError, TypeError):
      raise ConfigError(
          f"The config has no field {field}: build it from configs/default.py's "
          'get_config(), as the configs in configs/ do.'
      ) from None
  return value


def _require(
    config: ml_collections.ConfigDict, field: str, ok: Callable[[Any], bool], what: str
) -> None:
  value = _get(config, field)
  try:
    valid = ok(value)
  except TypeError:
    valid = False
  if not valid:
    raise ConfigError(f'config.{field}={value!r}: {what}.')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _positive_ints(value: Any) -> bool:
  return len(value) > 0 and all(_is_int(v) and v > 0 for v in value)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid field; returns None if all are valid."""
  known = tfds.list_builders(with_community_datasets=False)
  _require(
      config,
      'dataset',
      lambda v: v.split('/')[0].split(':')[0] in known,
      f'not a TFDS dataset; try {digits.NAME!r} (bundled, offline), mnist or cifar10',
  )
  _require(
      config,
      'image_size',
      lambda v: _is_int(v) and v >= 16 and v % 4 == 0,
      'must be a multiple of 4 and at least 16, e.g. 28, 32 or 64',
  )
  for field, choices in _CHOICES.items():
    _require(config, field, lambda v, c=choices: v in c, f'must be one of {choices}')
  _require(config, 'batch_size', lambda v: _is_int(v) and v >= 1, 'must be an integer >= 1')
  devices = jax.device_count()
  fits = max(devices, config.batch_size // devices * devices)
  _require(
      config,
      'batch_size',
      lambda v: v % devices == 0,
      f'must be divisible by the number of devices ({devices}): the global batch is '
      f'split evenly over them. Use e.g. --config.batch_size={fits}',
  )
  _require(
      config,
      'crop',
      lambda v: v is None
      or (len(v) == 4 and all(_is_int(x) and x >= 0 for x in v) and v[0] < v[1] and v[2] < v[3]),
      'must be None (centre square) or (top, bottom, left, right) pixel bounds with '
      'top < bottom and left < right',
  )
  _require(config, 'shuffle_buffer', lambda v: _is_int(v) and v >= 1, 'must be >= 1')

  for field in (
      'networks.latent_dim',
      'networks.encoder_dense_width',
      'networks.discriminator_dense_width',
      'networks.decoder_kernel_size',
  ):
    _require(config, field, lambda v: _is_int(v) and v >= 1, 'must be an integer >= 1')
  for field in (
      'networks.encoder_widths',
      'networks.decoder_widths',
      'networks.discriminator_widths',
      'networks.discriminator_strides',
  ):
    _require(config, field, _positive_ints, 'must be a non-empty sequence of integers >= 1')
  layers = len(config.networks.discriminator_widths)
  _require(
      config,
      'networks.discriminator_strides',
      lambda v: len(v) == layers,
      f'needs one stride per discriminator width ({layers})',
  )
  _require(
      config,
      'networks.disl_layer',
      lambda v: _is_int(v) and 1 <= v <= layers,
      f'counts discriminator convolutions from 1, so it must be in 1..{layers}',
  )
  _require(config, 'networks.batch_norm_momentum', lambda v: 0 <= v < 1, 'must be in [0, 1)')

  for field in ('loss.gamma', 'loss.beta', 'loss.pixel_beta'):
    _require(config, field, lambda v: v >= 0, 'must be >= 0')
  _require(config, 'loss.equilibrium', lambda v: v > 0, 'must be > 0')
  _require(config, 'loss.margin', lambda v: v >= 0, 'must be >= 0')

  _require(
      config, 'optim.learning_rate', lambda v: 0 < v < float('inf'), 'must be a finite number > 0'
  )
  _require(config, 'ema_decay', lambda v: 0 <= v < 1, 'must be in [0, 1) (0: no moving average)')
  for name in ('encoder', 'decoder', 'discriminator'):
    _require(config, f'optim.{name}_lr_mult', lambda v: v >= 0, 'must be >= 0')
  _require(config, 'optim.rmsprop_decay', lambda v: 0 <= v < 1, 'must be in [0, 1)')
  _require(config, 'optim.rmsprop_eps', lambda v: v > 0, 'must be > 0')
  _require(config, 'optim.lr_decay_per_epoch', lambda v: 0 < v <= 1, 'must be in (0, 1]')

  _require(config, 'num_train_steps', _is_int, 'must be an integer (<= 0: use num_epochs)')
  if config.num_train_steps <= 0:
    _require(config, 'num_epochs', lambda v: v > 0, 'must be > 0 when num_train_steps is not set')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    _require(config, field, lambda v: _is_int(v) and v >= 1, 'must be an integer >= 1')
  _require(
      config,
      'num_sample_images',
      lambda v: _is_int(v) and v >= 1 and math.isqrt(v) ** 2 == v,
      'must be a square number (the grids are square), e.g. 64',
  )
  _require(config, 'seed', _is_int, 'must be an integer')
  _require(
      config,
      'restore_step',
      lambda v: _is_int(v) and v >= 0,
      'must be an integer >= 0 (0: the latest checkpoint)',
  )
  _require(config, 'steps_per_dispatch', lambda v: _is_int(v) and v >= 1, 'must be an integer >= 1')
  _require(
      config,
      'steps_per_dispatch',
      lambda v: v == 1 or config.data_on_device is True,
      'needs --config.data_on_device=true: the host pipeline feeds one step per call',
  )
  for field in (
      'cache_dataset',
      'data_on_device',
      'checkpoint_fallback',
      'loss.equilibrium_gating',
      'optim.eps_in_sqrt',
      'networks.bias_before_norm',
      'cpu_winograd',
  ):
    _require(config, field, lambda v: isinstance(v, bool), 'must be True or False')
  _require(
      config,
      'eval.every_steps',
      lambda v: _is_int(v) and v >= 0,
      'must be an integer >= 0 (0: evaluate only with evaluate.py)',
  )
  _require(
      config, 'eval.classifier_steps', lambda v: _is_int(v) and v >= 1, 'must be an integer >= 1'
  )
  _require(
      config,
      'eval.num_samples',
      lambda v: _is_int(v) and v >= 2,
      'must be an integer >= 2 (a Frechet distance needs a covariance)',
  )
  _require(config, 'eval.inception', lambda v: isinstance(v, bool), 'must be True or False')
  _require(
      config,
      'eval.inception_mode',
      lambda v: v in inception.MODES,
      f'must be one of {", ".join(inception.MODES)} (clean-fid\'s modes)',
  )
  _require(
      config,
      'eval.inception_num_real',
      lambda v: _is_int(v) and v >= 2,
      'must be an integer >= 2 (a Frechet distance needs a covariance)',
  )
  for field in ('image_key', 'train_split', 'eval_split', 'eval.label_key'):
    _require(config, field, lambda v: isinstance(v, str) and v, 'must be a non-empty string')
