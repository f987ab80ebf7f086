"""Shared fixtures: tiny configs, an isolated TFDS data dir, and a compile cache.

Tests train real (tiny) networks; the persistent compilation cache lets tests,
and the subprocesses some of them start, reuse XLA executables.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from vaegan_jax import cpu_convolutions

# As every entry point does before JAX starts: tests, and the train.py processes some
# of them start (which inherit XLA_FLAGS), run the same convolution kernels, so their
# results can be compared bit for bit.
cpu_convolutions.use_eigen_convolutions()

import jax
import ml_collections
import pytest
import tensorflow as tf

from configs import digits
from vaegan_jax import input_pipeline

tf.config.set_visible_devices([], 'GPU')


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory) -> str:
  path = os.environ.get('VAEGAN_TEST_COMPILATION_CACHE') or str(
      tmp_path_factory.mktemp('jax_cache'))
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir of the tests' own (the digits are prepared there once)."""
  return str(tmp_path_factory.mktemp('tensorflow_datasets'))


# The network every test trains: compiles and steps in seconds on CPU.
TINY = {
    'networks.latent_dim': 8, 'networks.encoder_widths': (8, 16, 16), 'networks.encoder_dense_width': 32,
    'networks.decoder_widths': (16, 8, 8), 'networks.decoder_kernel_size': 4,
    'networks.discriminator_widths': (8, 8, 16, 16), 'networks.discriminator_dense_width': 16,
    'batch_size': 16, 'num_train_steps': 4, 'log_every_steps': 2, 'checkpoint_every_steps': 2,
    'num_sample_images': 16,
}


# The runs compared across device and process counts: every step's losses logged. The
# digits config has no biases in front of BatchNorm (networks.bias_before_norm): their
# true gradient is zero, so RMSProp turned the rounding noise they get, which the order
# of sums over devices changes, into full learning-rate steps.
SCALE_OUT_RUN = {'num_train_steps': 4, 'log_every_steps': 1, 'checkpoint_every_steps': 2}


def override(config: ml_collections.ConfigDict, changes: dict) -> ml_collections.ConfigDict:
  """Sets dotted fields ('networks.latent_dim') as --config.<field>=<value> would."""
  for field, value in changes.items():
    *parents, name = field.split('.')
    target = config
    for parent in parents:
      target = target[parent]
    target[name] = value
  return config


def command_line_flags(changes: dict) -> list[str]:
  """The same changes as train.py flags."""
  return [f'--config.{field}=' + (str(value).replace(' ', '') if isinstance(value, tuple)
                                  else str(value)) for field, value in changes.items()]


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to the TINY network."""
  return override(config, TINY)


@pytest.fixture
def tiny_digits_config(tfds_data_dir) -> ml_collections.ConfigDict:
  config = tiny(digits.get_config())
  config.data_dir = tfds_data_dir
  return config


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds.testing.mock_data (random pixels, real feature specs) with the download
  reachability check answered "yes", as on a machine with network access."""
  import tensorflow_datasets as tfds
  monkeypatch.setattr(input_pipeline, '_network_reachable', lambda timeout=5.0: True)
  with tfds.testing.mock_data(num_examples=40):
    yield
