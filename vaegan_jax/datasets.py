"""Which TFDS dataset a run reads: its builder, prepared when it can be, checked against
the config's image feature and splits; its sizes and class labels."""

import socket

import ml_collections
import tensorflow_datasets as tfds

from vaegan_jax import digits
from vaegan_jax.errors import ConfigError, DatasetUnavailableError

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


def class_labels(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The names of the dataset's class-label features."""
  return [
      name
      for name, feature in builder.info.features.items()
      if isinstance(feature, tfds.features.ClassLabel)
  ]


def num_classes(builder: tfds.core.DatasetBuilder, label_key: str) -> int:
  return builder.info.features[label_key].num_classes
