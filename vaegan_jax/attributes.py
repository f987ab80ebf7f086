"""Images with and without an attribute (CelebA's 'Smiling', or NAME=VALUE of any
scalar feature), for sample.py's attribute arithmetic."""

import numpy as np
import tensorflow_datasets as tfds

from vaegan_jax import input_pipeline
from vaegan_jax.errors import ConfigError
from vaegan_jax.image_format import ImageFormat


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
    image = input_pipeline.preprocess_as(example[image_format.key], image_format)
    groups[_has_attribute(example, attribute)].append(image.numpy())
  if not groups[True] or not groups[False]:
    raise ConfigError(
        f'attribute {attribute!r}: among the first {limit} examples of '
        f'{builder.name}:{split}, {len(groups[True])} have it and '
        f'{len(groups[False])} do not; both sets must be non-empty.'
    )
  return np.stack(groups[True]), np.stack(groups[False])
