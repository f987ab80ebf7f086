"""TFDS images -> shuffled batches in [-1, 1] on the devices.

The order of batches is a function of (seed, step) alone: each epoch is shuffled
with a seed derived from (config.seed, epoch), so a run resumed at step N sees
exactly the batches an uninterrupted run would have seen from step N on.
"""

import collections
from collections.abc import Iterator
import itertools
import socket

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vaegan_jax import digits
from vaegan_jax.errors import ConfigError, DatasetUnavailableError
from vaegan_jax.image_format import ImageFormat

_DOWNLOAD_HOST = ('storage.googleapis.com', 443)  # Where TFDS fetches most data from.


def _network_reachable(timeout: float = 5.0) -> bool:
  try:
    socket.create_connection(_DOWNLOAD_HOST, timeout=timeout).close()
    return True
  except OSError:
    return False


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder of config.dataset, preparing it if it can.

  Without network, TFDS would retry downloads for minutes; a quick reachability
  check turns that into an immediate error that says how to proceed.
  """
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  if not builder.is_prepared():
    if builder.name != digits.NAME and not _network_reachable():
      raise DatasetUnavailableError(
          f'TFDS dataset {config.dataset!r} is not prepared in {builder.data_dir} and '
          f'{_DOWNLOAD_HOST[0]} cannot be reached to download it. Either prepare it on a '
          'machine with network access (tfds.builder(name).download_and_prepare()), copy '
          'the tensorflow_datasets folder here and pass --config.data_dir=PATH (or set '
          'TFDS_DATA_DIR); or train offline on the bundled digits: '
          'python train.py --config configs/digits.py --workdir runs/digits'
      )
    try:
      builder.download_and_prepare()
    except Exception as e:  # TFDS raises many kinds; all mean the same to the user.
      builder = tfds.builder(config.dataset, data_dir=config.data_dir)
      if builder.is_prepared():  # Another run prepared it at the same time.
        _check_fields(builder, config.image_key, config.train_split, config.eval_split)
        return builder
      raise DatasetUnavailableError(
          f'Could not download and prepare TFDS dataset {config.dataset!r} in '
          f'{builder.data_dir}: {e}'
      ) from e
  _check_fields(builder, config.image_key, config.train_split, config.eval_split)
  return builder


def _check_fields(
    builder: tfds.core.DatasetBuilder, image_key: str, train_split: str, eval_split: str
):
  features = builder.info.features
  if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
    images = [k for k, v in features.items() if isinstance(v, tfds.features.Image)]
    raise ConfigError(
        f'config.image_key={image_key!r} is not an image feature of '
        f'{builder.name}; its image features: {images}'
    )
  for field, split in (('train_split', train_split), ('eval_split', eval_split)):
    if builder.info.splits and split not in builder.info.splits:
      raise ConfigError(
          f'config.{field}={split!r} is not a split of {builder.name}; '
          f'its splits: {list(builder.info.splits)}'
      )


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  if split in builder.info.splits:
    return builder.info.splits[split].num_examples
  # Sizes are unknown for builders without metadata (tfds.testing.mock_data): count.
  return int(builder.as_dataset(split=split).reduce(0, lambda count, _: count + 1))


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


def process_rows(sharding: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
  """[start, stop): the rows of each global batch that this process's devices hold."""
  rows = sorted(
      {
          (index[0].start or 0, index[0].stop or batch_size)
          for index in sharding.addressable_devices_indices_map((batch_size,)).values()
      }
  )
  start, stop = rows[0][0], rows[-1][1]
  if sum(b - a for a, b in rows) != stop - start:
    raise ValueError(f'This process holds non-contiguous rows {rows} of the global batch.')
  return start, stop


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
  train_size = num_examples(builder, split)  # Counts when sizes are unknown.
  steps_per_epoch = train_size // batch_size
  images = _images(builder, split, image_format.key, in_memory, decode=False)
  image_feature = builder.info.features[image_format.key]

  def prepare(image):
    if image.dtype == tf.string:
      image = image_feature.decode_example(image)
    return _preprocess(image, image_format)

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


def _preprocess(image: tf.Tensor, image_format: ImageFormat) -> tf.Tensor:
  return preprocess(image, image_format.size, image_format.channels, image_format.crop)


def fixed_images(
    builder: tfds.core.DatasetBuilder, image_format: ImageFormat, split: str, count: int
) -> np.ndarray:
  """The first `count` images of a split, preprocessed."""
  dataset = _images(builder, split, image_format.key).take(count)
  dataset = dataset.map(lambda x: _preprocess(x, image_format))
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
  if label_key not in class_labels(builder):
    raise ConfigError(
        f'config.eval.label_key={label_key!r} is not a class label of '
        f'{builder.name}; its class labels: {class_labels(builder) or "none"}.'
    )
  dataset = builder.as_dataset(split=split, shuffle_files=False)
  if limit is not None:
    dataset = dataset.take(limit)
  dataset = dataset.map(
      lambda example: (_preprocess(example[image_format.key], image_format), example[label_key]),
      num_parallel_calls=tf.data.AUTOTUNE,
  )
  parts = list(dataset.batch(4096).as_numpy_iterator())
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def class_labels(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The names of the dataset's class-label features."""
  return [
      name
      for name, feature in builder.info.features.items()
      if isinstance(feature, tfds.features.ClassLabel)
  ]


def num_classes(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
  return builder.info.features[label_key].num_classes


def _has_attribute(example: dict, attribute: str) -> bool:
  name, _, value = attribute.partition('=')
  found = example.get(name, example.get('attributes', {}).get(name))
  return bool(found) if not value else str(found) == value


def images_by_attribute(
    builder: tfds.core.DatasetBuilder,
    image_format: ImageFormat,
    split: str,
    attribute: str,
    limit: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Preprocessed images of the first `limit` examples of a split, with and without an attribute.

  `attribute` is a boolean feature (celeb_a's 'Smiling', looked up in 'attributes'
  too) or NAME=VALUE for any scalar feature ('label=1').
  """
  name = attribute.partition('=')[0]
  features = builder.info.features
  known = [k for k, v in features.items() if not isinstance(v, tfds.features.Image)]
  if 'attributes' in features:
    known += list(features['attributes'].keys())
  if name not in known:
    raise ConfigError(
        f'attribute {attribute!r}: {builder.name} has no feature {name!r}; '
        f'its features: {known}'
    )
  groups = {True: [], False: []}
  examples = builder.as_dataset(split=split, shuffle_files=False).take(limit)
  for example in examples.as_numpy_iterator():
    image = _preprocess(example[image_format.key], image_format)
    groups[_has_attribute(example, attribute)].append(image.numpy())
  if not groups[True] or not groups[False]:
    raise ConfigError(
        f'attribute {attribute!r}: among the first {limit} examples of '
        f'{builder.name}:{split}, {len(groups[True])} have it and '
        f'{len(groups[False])} do not; both sets must be non-empty.'
    )
  return np.stack(groups[True]), np.stack(groups[False])


def prefetch_to_device(
    batches: Iterator[dict[str, np.ndarray]],
    sharding: jax.sharding.Sharding,
    batch_size: int,
    size: int = 2,
) -> Iterator[dict[str, jax.Array]]:
  """Global arrays of `batch_size` rows from this process's rows of each batch, the
  next `size` copied to the devices while the current one trains."""
  queue = collections.deque()

  def enqueue(n: int):
    for batch in itertools.islice(batches, n):
      queue.append(
          jax.tree.map(
              lambda x: jax.make_array_from_process_local_data(
                  sharding, x, (batch_size, *x.shape[1:])
              ),
              batch,
          )
      )

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
