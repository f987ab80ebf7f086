"""Fixtures (an isolated TFDS data dir, tiny configs, mock TFDS) and the environment
every test and every process it starts runs in.

The tests' XLA executables persist between runs in a compilation cache,
.jax_cache/ in the repository by default (VAEGAN_TEST_COMPILATION_CACHE moves it;
`rm -rf .jax_cache` clears it). It is set through the environment before JAX
starts, so the train.py and worker processes that tests start use it too.
"""

import os

from tests.helpers import ROOT

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ.get(
    'VAEGAN_TEST_COMPILATION_CACHE', os.path.join(ROOT, '.jax_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.3')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

# The tests' networks are tiny: XLA's optimisation passes cost more than they save
# (the fast tier compiles in a third less time).
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"

from vaegan_jax.cpu import convolutions as cpu_convolutions

# As every entry point does before JAX starts: tests, and the processes they start
# (which inherit XLA_FLAGS), run the same convolution kernels.
cpu_convolutions.use_eigen_convolutions()

import jax
import ml_collections
import pytest
import tensorflow as tf

from configs import digits
from tests.helpers import tiny
from vaegan_jax import datasets
from vaegan_jax import train

tf.config.set_visible_devices([], 'GPU')


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir of the tests' own (the digits are prepared there once)."""
  return str(tmp_path_factory.mktemp('tensorflow_datasets'))


@pytest.fixture
def tiny_digits_config(tfds_data_dir) -> ml_collections.ConfigDict:
  config = tiny(digits.get_config())
  config.data_dir = tfds_data_dir
  return config


@pytest.fixture(scope='session')
def trained_digits(tfds_data_dir, tmp_path_factory):
  """(workdir, final state) of a tiny digits run of 40 steps, logged and checkpointed at
  20 and 40: enough for BatchNorm's running statistics to settle and Dis to learn."""
  config = tiny(digits.get_config())
  config.data_dir = tfds_data_dir
  config.num_train_steps = 40
  # Dis at the full learning rate (the quickstart's is a tenth), so that 40 steps tell a
  # Dis that sees the difference from one that cannot (see test_train.py).
  config.optim.discriminator_lr_mult = 1.0
  config.log_every_steps = 20
  config.checkpoint_every_steps = 20
  workdir = tmp_path_factory.mktemp('trained_digits')
  state = train.train_and_evaluate(config, workdir)
  return workdir, jax.device_get(state)


@pytest.fixture
def mock_tfds(monkeypatch):
  """tfds.testing.mock_data (random pixels, real feature specs) with the download
  reachability check answered "yes", as on a machine with network access."""
  import tensorflow_datasets as tfds

  monkeypatch.setattr(datasets, '_network_reachable', lambda timeout=5.0: True)
  with tfds.testing.mock_data(num_examples=40):
    yield
