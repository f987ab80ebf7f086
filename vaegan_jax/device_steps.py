"""Several train steps per call on the training images kept on the devices
(device_data.py): one jitted lax.scan on GPU and TPU, so that the one Python dispatch
per step does not limit a fast accelerator; separate calls on CPU (default_scan).
TensorFlow-free, like the step, so an accelerator image without it can run them.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from vaegan_jax import device_data
from vaegan_jax import image_format
from vaegan_jax import train_step as train_step_lib
from vaegan_jax.train_state import Networks, Optimizers, TrainState


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

  `images` are device_data.load_images' on the devices (put_on_devices). Step s trains on
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
    batch = device_data.preprocess(
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
        state, images, device_data.epoch_order(seed, epoch_of(state, images), images.shape[0])
    )

  @functools.partial(jax.jit, static_argnums=2, donate_argnums=0)
  def scanned_steps(state: TrainState, images: jax.Array, count: int):
    num_images = images.shape[0]

    def body(carry, _):
      state, epoch, order = carry
      step_epoch = epoch_of(state, images)  # The order is drawn again only when it changes.
      order = jax.lax.cond(
          step_epoch == epoch,
          lambda: order,
          lambda: device_data.epoch_order(seed, step_epoch, num_images),
      )
      state, metrics = train_on_order(state, images, order)
      return (state, step_epoch, order), metrics

    epoch = epoch_of(state, images)
    (state, _, _), metrics = jax.lax.scan(
        body, (state, epoch, device_data.epoch_order(seed, epoch, num_images)), length=count
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
