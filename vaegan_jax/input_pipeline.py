"""TFDS images -> preprocessed images in [-1, 1]: the training batches of a host
pipeline, and the fixed, labelled sets that figures and evaluation read.

The order of batches is a function of (seed, step) alone: each epoch is shuffled
with a seed derived from (config.seed, epoch), so a run resumed at step N sees
exactly the batches an uninterrupted run would have seen from step N on.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vaegan_jax import datasets
from vaegan_jax.errors import ConfigError
from vaegan_jax.image_format import ImageFormat


def preprocess(
    image: tf.Tensor,
    image_size: int,
    num_channels: int,
    crop: tuple[int, int, int, int] | None = None,
) -> tf.Tensor:
  """uint8 [H, W, C] -> float32 [image_size, image_size, num_channels] in [-1, 1].

  Crops to rows crop[0]:crop[1] and columns crop[2]:crop[3] (e.g. CelebA's face
  box), or without `crop` to the centre square; then resizes (antialiased when
  shrinking).
  """
  image = tf.cast(image, tf.float32)
  if image.shape[-1] != num_channels:
    image = (
        tf.image.grayscale_to_rgb(image)
        if num_channels == 3
        else tf.reduce_mean(image, axis=-1, keepdims=True)
    )
  if crop is not None:
    top, bottom, left, right = crop
    image = image[top:bottom, left:right]
  else:
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    image = tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )
  image = tf.image.resize(image, (image_size, image_size), method='bilinear', antialias=True)
  image.set_shape((image_size, image_size, num_channels))
  return tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)


def _images(
    builder: tfds.core.DatasetBuilder,
    split: str,
    image_key: str,
    in_memory: bool = False,
    decode: bool = True,
) -> tf.data.Dataset:
  """The split's images in file order: uint8 arrays, optionally decoded once into host
  memory, or (decode=False, not in memory) still encoded, for the caller to decode."""
  if in_memory:
    return tf.data.Dataset.from_tensor_slices(images_array(builder, split, image_key))
  decoders = None if decode else {image_key: tfds.decode.SkipDecoding()}
  dataset = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
  return dataset.map(lambda example: example[image_key])


def images_array(builder: tfds.core.DatasetBuilder, split: str, image_key: str) -> np.ndarray:
  """The split's decoded images in file order as one uint8 array [N, H, W, C]: needs
  images of one shape (mnist, cifar10, digits)."""
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  dataset = dataset.map(lambda example: example[image_key])
  return np.concatenate(list(dataset.batch(4096).as_numpy_iterator()))


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train_batches(
    builder: tfds.core.DatasetBuilder,
    image_format: ImageFormat,
    *,
    split: str,
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    in_memory: bool = False,
    start_step: int = 0,
    rows: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Endless host batches of a split from `start_step` on: rows[0]:rows[1] of every
  global batch of `batch_size` images (all of it by default); the decoded split kept
  in host memory if `in_memory` (config.cache_dataset).

  Every process shuffles the same global order and decodes and preprocesses only
  its own rows, so the global batches, and hence training, do not depend on the
  number of processes or devices.
  """
  first, last = rows or (0, batch_size)
  train_size = datasets.num_examples(builder, split)  # Counts when sizes are unknown.
  steps_per_epoch = train_size // batch_size
  images = _images(builder, split, image_format.key, in_memory, decode=False)
  image_feature = builder.info.features[image_format.key]

  def prepare(image):
    if image.dtype == tf.string:
      image = image_feature.decode_example(image)
    return preprocess_as(image, image_format)

  buffer = min(shuffle_buffer, train_size)
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    dataset = images.shuffle(buffer, seed=_epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    dataset = dataset.take(steps_per_epoch * batch_size).skip(skip * batch_size)
    if (first, last) != (0, batch_size):
      dataset = dataset.enumerate().filter(
          lambda i, _: (i % batch_size >= first) & (i % batch_size < last)
      )
      dataset = dataset.map(lambda _, image: image)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(last - first, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    for batch in dataset.as_numpy_iterator():
      yield {'image': batch}
    epoch, skip = epoch + 1, 0


def preprocess_as(image: tf.Tensor, image_format: ImageFormat) -> tf.Tensor:
  """preprocess to an ImageFormat's size, channels and crop."""
  return preprocess(image, image_format.size, image_format.channels, image_format.crop)


def preprocessed_images(
    builder: tfds.core.DatasetBuilder, image_format: ImageFormat, split: str
) -> tf.data.Dataset:
  """A split's images in file order, preprocessed, one by one (for streaming)."""
  dataset = _images(builder, split, image_format.key)
  return dataset.map(lambda x: preprocess_as(x, image_format))


def fixed_images(
    builder: tfds.core.DatasetBuilder, image_format: ImageFormat, split: str, count: int
) -> np.ndarray:
  """The first `count` images of a split, preprocessed."""
  dataset = preprocessed_images(builder, image_format, split).take(count)
  return next(dataset.batch(count).as_numpy_iterator())


def labelled_images(
    builder: tfds.core.DatasetBuilder,
    image_format: ImageFormat,
    split: str,
    label_key: str,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels): the first `limit` examples of a split (all by default),
  preprocessed, with their class labels `label_key` (config.eval.label_key)."""
  if label_key not in datasets.class_labels(builder):
    raise ConfigError(
        f'config.eval.label_key={label_key!r} is not a class label of '
        f'{builder.name}; its class labels: {datasets.class_labels(builder) or "none"}.'
    )
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  if limit is not None:
    dataset = dataset.take(limit)
  dataset = dataset.map(
      lambda example: (preprocess_as(example[image_format.key], image_format), example[label_key]),
      num_parallel_calls=tf.data.AUTOTUNE,
  )
  parts = list(dataset.batch(4096).as_numpy_iterator())
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
