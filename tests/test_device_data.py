"""The training set kept on the devices (config.data_on_device): the host's
preprocessing, an order that is a function of seed and step, the same training in
one call or several, and clear errors where it cannot be used."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from configs import digits
from configs import mnist
from tests.helpers import tiny
from vaegan_jax import datasets
from vaegan_jax import device_data
from vaegan_jax import device_steps
from vaegan_jax import input_pipeline
from vaegan_jax import nonfinite
from vaegan_jax import progress
from vaegan_jax import train
from vaegan_jax import sharding
from vaegan_jax import step_runner
from vaegan_jax import train_state
from vaegan_jax import train_step as train_step_lib
from vaegan_jax.errors import ConfigError, NonFiniteError


@pytest.mark.parametrize(
    'shape, image_size, channels, crop',
    [
        ((8, 8, 1), 32, 1, None),  # The digits, upsampled.
        ((28, 28, 1), 64, 3, None),  # mnist tiled to colour.
        ((32, 32, 3), 28, 1, None),  # cifar10 averaged to grey and shrunk (antialiased).
        ((40, 30, 3), 16, 3, None),  # Not square: the centre square.
        ((218, 178, 3), 64, 3, (40, 188, 15, 163)),  # celeb_a's face box.
    ],
)
def test_preprocessing_on_the_devices_matches_the_host_pipeline(shape, image_size, channels, crop):
  images = np.random.default_rng(0).integers(0, 256, (3, *shape), dtype=np.uint8)
  on_host = np.stack(
      [
          input_pipeline.preprocess(tf.constant(image), image_size, channels, crop).numpy()
          for image in images
      ]
  )
  on_devices = np.asarray(device_data.preprocess(images, image_size, channels, crop))
  assert on_devices.shape == on_host.shape == (3, image_size, image_size, channels)
  np.testing.assert_allclose(on_devices, on_host, atol=2e-5)


def test_each_epoch_visits_every_image_once_in_an_order_of_its_own():
  first, second, again = (np.asarray(device_data.epoch_order(0, epoch, 100)) for epoch in (0, 1, 0))
  np.testing.assert_array_equal(np.sort(first), np.arange(100))
  np.testing.assert_array_equal(np.sort(second), np.arange(100))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, np.asarray(device_data.epoch_order(1, 0, 100)))


def _assert_same_losses(metrics, expected, start=0):
  """Every step's losses (which depend on its batch, and on the parameters the earlier
  steps trained) agree. Parameters are not compared one by one: RMSProp's first steps
  turn rounding noise in near-zero gradients into steps of the learning rate's size."""
  for key in (
      'loss/encoder',
      'loss/decoder',
      'loss/discriminator',
      'kl',
      'llike',
      'd_real',
      'd_recon',
      'd_prior',
  ):
    np.testing.assert_allclose(
        metrics[key], np.asarray(expected[key])[start:], rtol=1e-4, atol=1e-5, err_msg=key
    )


@pytest.mark.slow
def test_scanned_steps_train_on_their_batches_of_the_epoch(mock_tfds):
  """Three steps over 40 mock images in batches of 16 (two steps per epoch), taken by
  hand from the epochs' orders and fed to the host's step, against the last two in a
  lax.scan on the devices (what GPUs and TPUs run; the calls of one step that CPUs
  run are the training tests' and test_scale_out's)."""
  config = tiny(mnist.get_config())
  config.image_size = 28
  config.data_on_device = True
  _, data_sharding = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=2)
  init = jax.jit(
      functools.partial(
          train_state.create_train_state, config=config, networks=networks, optimizers=optimizers
      )
  )
  stored = device_data.load_images(datasets.get_builder(config), 'train', 'image')
  assert stored.shape == (40, 28, 28, 1) and stored.dtype == np.uint8
  images = jax.device_put(stored)

  state = init(jax.random.PRNGKey(0))
  host_step = train_step_lib.make_train_step(config, networks, optimizers)
  by_hand = []
  for step in range(3):
    if step == 1:
      after_first_step = jax.tree.map(jnp.copy, state)  # The step donates its state.
    order = np.asarray(device_data.epoch_order(config.seed, step // 2, 40))
    rows = order[(step % 2) * 16 : (step % 2 + 1) * 16]
    batch = {'image': device_data.preprocess(stored[rows], 28, 1)}
    state, metrics = host_step(state, batch, jax.random.fold_in(state.rng, step))
    by_hand.append(metrics)
  by_hand = jax.tree.map(lambda *values: np.stack(values), *by_hand)
  assert not np.allclose(by_hand['d_real'][0], by_hand['d_real'][1:])  # Other batches.

  run_steps = device_steps.make_train_steps(config, networks, optimizers, data_sharding, scan=True)
  # A scan from inside an epoch into the next, as most dispatches but a run's first start.
  state, metrics = run_steps(after_first_step, images, 2)
  assert int(state.step) == 3 and metrics['loss/decoder'].shape == (2,)
  _assert_same_losses(metrics, by_hand, start=1)


@pytest.mark.slow
def test_a_run_from_the_devices_checkpoints_at_its_intervals_and_resumes(
    tiny_digits_config, tmp_path
):
  config = tiny_digits_config
  config.data_on_device = True
  config.steps_per_dispatch = 3  # Cut to 2 by the log and checkpoint intervals.
  config.num_train_steps = 4
  straight = train.train_and_evaluate(config, tmp_path / 'straight')
  assert sorted(p.name for p in (tmp_path / 'straight' / 'checkpoints').iterdir()) == ['2', '4']

  config.num_train_steps = 2
  train.train_and_evaluate(config, tmp_path / 'resumed')
  config.num_train_steps = 4
  resumed = train.train_and_evaluate(config, tmp_path / 'resumed')
  for a, b in zip(
      jax.tree.leaves(jax.device_get(straight)), jax.tree.leaves(jax.device_get(resumed))
  ):
    np.testing.assert_array_equal(a, b)  # Bit-identical on CPU.


@pytest.mark.parametrize('step, expected', [(0, 3), (3, 1), (4, 3), (8, 2), (9, 1)])
def test_a_dispatch_stops_at_the_next_log_checkpoint_or_end(step, expected):
  # 3 steps per dispatch; logs every 4 steps, checkpoints every 8, no evaluation.
  assert step_runner.steps_until_boundary(step, 10, 3, [4, 8, 0]) == expected


def test_a_log_step_reached_by_the_first_dispatch_alone_shows_no_speed():
  line = progress.progress_line(10, 20, {'kl': 1.5}, None, None)
  assert line == 'step 10/20 | kl 1.5 | first steps, compilation included'
  assert progress.progress_line(20, 40, {'kl': 1.5}, 64.0, 1.0).endswith('64.0 img/s | ETA 0m20s')


class _Manager:

  def all_steps(self):
    return [2, 4]


def test_a_non_finite_step_inside_a_dispatch_is_named():
  metrics = {
      'nonfinite': np.array([0.0, 1.0, 0.0]),
      'nonfinite/kl': np.array([0.0, 1.0, 0.0]),
      'nonfinite/llike': np.zeros(3),
  }
  with pytest.raises(
      NonFiniteError,
      match=r'^Step 5: non-finite KL \(L_prior\)\. .*' r'latest checkpoint is step 4',
  ):
    nonfinite.check_finite(6, metrics, 'stop', _Manager())
  nonfinite.check_finite(6, metrics, 'skip', _Manager())  # Warns and goes on.


def test_what_cannot_run_from_the_devices_is_refused_before_anything_is_written(
    tiny_digits_config, tmp_path, monkeypatch
):
  config = tiny_digits_config
  config.steps_per_dispatch = 4
  with pytest.raises(
      ConfigError, match=r'steps_per_dispatch=4: needs ' r'--config.data_on_device=true'
  ):
    train.train_and_evaluate(config, tmp_path / 'run')

  config.data_on_device = True
  monkeypatch.setattr(device_data, 'MAX_MEMORY_FRACTION', 1e-9)
  with pytest.raises(
      ConfigError,
      match=r'data_on_device: the 1497 images of sklearn_digits:'
      r'train take .* GiB, more than 0% of a device.*'
      r'--config.data_on_device=false trains from the host pipeline',
  ):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()


def test_images_of_different_shapes_are_refused(mock_tfds, tmp_path):
  config = tiny(digits.get_config())
  config.dataset, config.eval_split, config.data_on_device = 'tf_flowers', 'train', True
  with pytest.raises(
      ConfigError,
      match=r'the images of tf_flowers differ in shape '
      r'\(None, None, 3\).*--config.data_on_device=false',
  ):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()
