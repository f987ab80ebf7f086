"""The training set in device memory: shuffled, batched and trained on by the devices.

For datasets that fit (mnist, cifar10, the digits: tens to hundreds of MB of
uint8 pixels), the host pipeline's work per step (shuffle, decode, resize, copy
to the devices) and the one Python dispatch per step give way to one jitted call
that runs several train steps in a lax.scan (on GPU and TPU; see default_scan for
CPU). Each step takes its batch from the epoch's permutation of the stored images
and preprocesses it on the devices as input_pipeline.preprocess does on the host,
so neither Python nor the host's cores limit a fast accelerator.

Like the host pipeline's, the data order is a function of (seed, step) alone, so a
resumed run sees the batches an uninterrupted one would. It is a different order
from the host pipeline's: a jax.random permutation of the whole split per epoch
rather than tf.data's shuffle buffer.
"""

import functools
import os
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vaegan_jax import image_format
from vaegan_jax import train_step as train_step_lib
from vaegan_jax.errors import ConfigError
from vaegan_jax.train_state import Networks, Optimizers, TrainState

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


def default_scan(data_sharding: jax.sharding.Sharding) -> bool:
  """Whether several steps run in one lax.scan: on GPU and TPU, not on CPU.

  XLA:CPU compiles a convolution inside a loop without the operand transposes that
  give it Eigen's kernels (jax-ml/jax#12868): this model's step ran many times slower
  inside a loop (docs/performance.md). On CPU the steps are therefore separate calls,
  which compute the same.
  """
  return next(iter(data_sharding.device_set)).platform != 'cpu'


def make_train_steps(
    config: ml_collections.ConfigDict,
    networks: Networks,
    optimizers: Optimizers,
    data_sharding: jax.sharding.Sharding,
    scan: bool | None = None,
) -> Callable[[TrainState, jax.Array, int], tuple[TrainState, train_step_lib.Metrics]]:
  """run_steps(state, images, count): `count` train steps from state.step on.

  `images` are load_images' on the devices (put_on_devices). Step s trains on
  rows (s % steps_per_epoch) * batch_size onwards of epoch s // steps_per_epoch's
  order (the last partial batch of an epoch is dropped, as on the host), with the
  step key fold_in(state.rng, s) the host loop uses too. Returns the state after
  the last step and each step's metrics, stacked along a leading axis of `count`.
  With `scan` (default_scan: on GPU and TPU) the steps run in one jitted lax.scan,
  each distinct `count` compiled once; without, one jitted call per step. The
  state is donated.
  """
  step_fn = train_step_lib.bind_train_step(config, networks, optimizers)
  batch_size, seed = config.batch_size, config.seed
  preprocessing = image_format.from_config(config)
  if scan is None:
    scan = default_scan(data_sharding)

  def train_on_order(state: TrainState, images: jax.Array, order: jax.Array):
    """One step on its batch of the epoch's `order`."""
    position = state.step % (images.shape[0] // batch_size)
    indices = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
    batch = preprocess(
        jnp.take(images, indices, axis=0),
        preprocessing.size,
        preprocessing.channels,
        preprocessing.crop,
    )
    batch = jax.lax.with_sharding_constraint(batch, data_sharding)
    return step_fn(state, {'image': batch}, jax.random.fold_in(state.rng, state.step))

  def epoch_of(state: TrainState, images: jax.Array) -> jax.Array:
    return state.step // (images.shape[0] // batch_size)

  @functools.partial(jax.jit, donate_argnums=0)
  def one_step(state: TrainState, images: jax.Array):
    return train_on_order(
        state, images, epoch_order(seed, epoch_of(state, images), images.shape[0])
    )

  @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
  def scanned_steps(state: TrainState, images: jax.Array, count: int):
    num_images = images.shape[0]

    def body(carry, _):
      state, epoch, order = carry
      step_epoch = epoch_of(state, images)  # The order is drawn again only when it changes.
      order = jax.lax.cond(
          step_epoch == epoch, lambda: order, lambda: epoch_order(seed, step_epoch, num_images)
      )
      state, metrics = train_on_order(state, images, order)
      return (state, step_epoch, order), metrics

    epoch = epoch_of(state, images)
    (state, _, _), metrics = jax.lax.scan(
        body, (state, epoch, epoch_order(seed, epoch, num_images)), length=count
    )
    return state, metrics

  def run_steps(state: TrainState, images: jax.Array, count: int):
    if scan and count > 1:
      return scanned_steps(state, images, count)
    all_metrics = []
    for _ in range(count):
      state, metrics = one_step(state, images)
      all_metrics.append(metrics)
    return state, jax.tree.map(lambda *values: jnp.stack(values), *all_metrics)

  return run_steps
