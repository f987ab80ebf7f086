"""TFDS input: the bundled digits, mock mnist/cifar10, determinism, clear errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import celeba
from configs import cifar10
from configs import mnist
from tests.helpers import tiny
from vaegan_jax import datasets
from vaegan_jax import image_format
from vaegan_jax import input_pipeline
from vaegan_jax.errors import ConfigError, DatasetUnavailableError


def test_digits_builder_holds_all_of_sklearn_digits(tiny_digits_config):
  builder = datasets.get_builder(tiny_digits_config)
  assert datasets.num_examples(builder, 'train') == 1497
  assert datasets.num_examples(builder, 'test') == 300
  test = tfds.as_numpy(builder.as_dataset(split='test', batch_size=-1))
  assert test['image'].shape == (300, 8, 8, 1) and test['image'].dtype == np.uint8
  assert test['image'].max() == 255 and test['image'].min() == 0
  assert sorted(np.unique(test['label'])) == list(range(10))


def _first_batches(config, start_step, count):
  builder = datasets.get_builder(config)
  batches = input_pipeline.train_batches(
      builder,
      image_format.from_config(config),
      split=config.train_split,
      batch_size=config.batch_size,
      seed=config.seed,
      shuffle_buffer=config.shuffle_buffer,
      in_memory=config.cache_dataset,
      start_step=start_step,
  )
  return [next(batches)['image'] for _ in range(count)]


def test_digits_batches_are_scaled_and_resized(tiny_digits_config):
  (batch,) = _first_batches(tiny_digits_config, 0, 1)
  assert batch.shape == (16, 32, 32, 1) and batch.dtype == np.float32
  assert batch.min() == -1.0 and batch.max() <= 1.0 and batch.max() > 0.9


def test_data_order_is_a_function_of_seed_and_step(tiny_digits_config):
  config = tiny_digits_config
  config.batch_size = 256  # 5 steps per epoch: the window below crosses an epoch.
  straight = _first_batches(config, 0, 8)
  resumed = _first_batches(config, 3, 5)
  for a, b in zip(straight[3:], resumed):
    np.testing.assert_array_equal(a, b)
  again = _first_batches(config, 0, 2)
  np.testing.assert_array_equal(straight[0], again[0])
  assert not np.array_equal(straight[0], straight[5])  # Epochs are reshuffled.
  config.seed = 1
  assert not np.array_equal(straight[0], _first_batches(config, 0, 1)[0])


@pytest.mark.parametrize(
    'get_config, channels', [(mnist.get_config, 1), (cifar10.get_config, 3), (celeba.get_config, 3)]
)
def test_tfds_datasets_by_name(mock_tfds, get_config, channels):
  config = tiny(get_config())
  config.image_size = 32
  (batch,) = _first_batches(config, 0, 1)
  assert batch.shape == (16, 32, 32, channels)
  assert -1.0 <= batch.min() and batch.max() <= 1.0
  builder = datasets.get_builder(config)
  fixed = input_pipeline.fixed_images(builder, image_format.from_config(config), 'test', 4)
  assert fixed.shape == (4, 32, 32, channels)


def test_celeba_is_cut_to_the_paper_codes_face_box():
  image = np.zeros((218, 178, 3), np.uint8)
  image[40:188, 15:163] = 255  # The box: rows 40:188, columns 15:163.
  face = input_pipeline.preprocess(image, 64, 3, celeba.get_config().crop).numpy()
  assert face.shape == (64, 64, 3)
  np.testing.assert_allclose(face, 1.0, atol=1e-5)  # No black pixel from outside the box.
  centre = input_pipeline.preprocess(image, 64, 3).numpy()  # Without the box: black margins.
  assert centre.min() == -1.0


def test_channels_are_converted_to_the_config(mock_tfds):
  config = tiny(mnist.get_config())
  config.num_channels, config.image_size = 3, 28
  (batch,) = _first_batches(config, 0, 1)
  assert batch.shape == (16, 28, 28, 3)
  np.testing.assert_array_equal(batch[..., 0], batch[..., 2])


def test_unprepared_dataset_without_network_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, '_network_reachable', lambda timeout=5.0: False)
  config = mnist.get_config()
  config.data_dir = str(tmp_path)
  with pytest.raises(DatasetUnavailableError) as error:
    datasets.get_builder(config)
  message = str(error.value)
  assert str(tmp_path) in message and 'data_dir' in message and 'configs/digits.py' in message


def test_wrong_image_key_or_split_names_the_field(tiny_digits_config):
  config = tiny_digits_config
  config.image_key = 'picture'
  with pytest.raises(ConfigError, match=r"config.image_key='picture'.*\['image'\]"):
    datasets.get_builder(config)
  config.image_key, config.eval_split = 'image', 'validation'
  with pytest.raises(ConfigError, match=r"config.eval_split='validation'.*'test'"):
    datasets.get_builder(config)
