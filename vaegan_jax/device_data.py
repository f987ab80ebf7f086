"""The training set in device memory: stored as uint8, put on the devices, shuffled
and preprocessed there (device_steps.py trains on it).

For datasets that fit (mnist, cifar10, the digits: tens to hundreds of MB of
uint8 pixels), the host pipeline's work per step (shuffle, decode, resize, copy
to the devices) gives way to drawing each batch from the epoch's permutation of
the stored images and preprocessing it on the devices as input_pipeline.preprocess
does on the host, so neither Python nor the host's cores limit a fast accelerator.

Like the host pipeline's, the data order is a function of (seed, step) alone, so a
resumed run sees the batches an uninterrupted one would. It is a different order
from the host pipeline's: a jax.random permutation of the whole split per epoch
rather than tf.data's shuffle buffer.
"""

import os
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax.errors import ConfigError

if TYPE_CHECKING:  # TensorFlow only where a TFDS dataset is read: the steps run without it.
  import tensorflow_datasets as tfds

# The stored images may take at most this fraction of one device's memory.
MAX_MEMORY_FRACTION = 0.25
_ORDER_STREAM = 0x5EED0DA7  # Folded into PRNGKey(config.seed): the data order's own key.
_SWITCH_OFF = '--config.data_on_device=false trains from the host pipeline instead'


def _device_memory_bytes(device: jax.Device) -> int:
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')  # CPU: host memory.


def load_images(builder: 'tfds.core.DatasetBuilder', split: str, image_key: str) -> np.ndarray:
  """A split's images (feature `image_key`), uint8 [N, H, W, C] as stored (not yet
  preprocessed).

  Raises ConfigError if the images differ in shape or would take more than
  MAX_MEMORY_FRACTION of a device's memory.
  """
  feature = builder.info.features[image_key]
  if None in feature.shape:
    raise ConfigError(
        f'config.data_on_device: the images of {builder.name} differ in shape '
        f'{feature.shape}, and the devices keep them as one array; '
        f'{_SWITCH_OFF}.'
    )
  num_images = builder.info.splits[split].num_examples if split in builder.info.splits else None
  if num_images is not None:
    size, limit = num_images * int(np.prod(feature.shape)), _device_memory_bytes(
        jax.local_devices()[0]
    )
    if size > MAX_MEMORY_FRACTION * limit:
      raise ConfigError(
          f'config.data_on_device: the {num_images} images of {builder.name}:'
          f'{split} take {size / 2**30:.1f} GiB, more than '
          f"{MAX_MEMORY_FRACTION:.0%} of a device's {limit / 2**30:.1f} GiB; {_SWITCH_OFF}."
      )
  from vaegan_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  return input_pipeline.images_array(builder, split, image_key)


def put_on_devices(images: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A copy of the images on every device of `sharding` (a replicated one)."""
  return jax.make_array_from_callback(images.shape, sharding, lambda index: images[index])


def preprocess(
    images: jax.Array,
    image_size: int,
    num_channels: int,
    crop: tuple[int, int, int, int] | None = None,
) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 [B, image_size, image_size, num_channels] in [-1, 1].

  input_pipeline.preprocess on the devices: channels tiled or averaged, the crop box
  (or the centre square), an antialiased bilinear resize, then scaling.
  """
  images = images.astype(jnp.float32)
  if images.shape[-1] != num_channels:
    images = (
        jnp.tile(images, (1, 1, 1, 3))
        if num_channels == 3
        else jnp.mean(images, axis=-1, keepdims=True)
    )
  if crop is not None:
    top, bottom, left, right = crop
    images = images[:, top:bottom, left:right]
  else:
    height, width = images.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[:, top : top + side, left : left + side]
  images = jax.image.resize(
      images,
      (images.shape[0], image_size, image_size, num_channels),
      method='linear',
      antialias=True,
  )
  return jnp.clip(images / 127.5 - 1.0, -1.0, 1.0)


def epoch_order(seed: int, epoch: jax.Array, num_images: int) -> jax.Array:
  """The order in which epoch `epoch` of a run with training seed `seed` (config.seed)
  visits the images: a permutation of range(num_images)."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), _ORDER_STREAM)
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_images)
