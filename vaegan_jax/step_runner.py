"""How the loop runs its train steps: from the host pipeline one per call, or from the
images kept on the devices several per call, up to the next log, checkpoint or eval."""

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vaegan_jax import device_data
from vaegan_jax import device_steps
from vaegan_jax import image_format
from vaegan_jax import input_pipeline
from vaegan_jax import sharding
from vaegan_jax import train_state
from vaegan_jax import train_step as train_step_lib


def steps_until_boundary(
    step: int, num_steps: int, steps_per_dispatch: int, periods: list[int]
) -> int:
  """How many steps to run from `step` in one dispatch: `steps_per_dispatch`, or fewer
  to stop at the run's end or the next multiple of one of `periods` (the steps that
  log, checkpoint or evaluate; 0 for never)."""
  boundary = min([num_steps] + [(step // p + 1) * p for p in periods if p])
  return max(1, min(steps_per_dispatch, boundary - step))


def host_batches(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    data_sharding: jax.sharding.Sharding,
    start_step: int = 0,
    rows: tuple[int, int] | None = None,
):
  """The host pipeline's batches of config.train_split from `start_step` on, this
  process's `rows` of each, prefetched to the devices as global arrays."""
  batches = input_pipeline.train_batches(
      builder,
      image_format.from_config(config),
      split=config.train_split,
      batch_size=config.batch_size,
      seed=config.seed,
      shuffle_buffer=config.shuffle_buffer,
      in_memory=config.cache_dataset,
      start_step=start_step,
      rows=rows,
  )
  return sharding.prefetch_to_device(batches, data_sharding, config.batch_size)


def make_step_runner(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    stored_images: np.ndarray | None,
    networks: train_state.Networks,
    optimizers: train_state.Optimizers,
    start_step: int,
    rows: tuple[int, int],
    base_rng: jax.Array,
):
  """run_steps(state, step, count) -> (state, metrics): `count` train steps from `step`.

  From `stored_images` kept on the devices (config.data_on_device, device_data.py),
  several steps per call; or from the host pipeline, one step per call (`count` is 1).
  """
  replicated, data_sharding = sharding.data_parallel_shardings()
  if stored_images is not None:
    images = device_data.put_on_devices(stored_images, replicated)
    scan = device_steps.default_scan(data_sharding)
    logging.info(
        'Keeping the %d training images (%.1f MB) on the devices; %s.',
        images.shape[0],
        images.nbytes / 1e6,
        f'up to {config.steps_per_dispatch} steps per call'
        if scan
        else 'one step per call on CPU (XLA:CPU runs convolutions in loops slowly)',
    )
    run_steps = device_steps.make_train_steps(config, networks, optimizers, data_sharding, scan)
    return lambda state, step, count: run_steps(state, images, count)

  batches = host_batches(config, builder, data_sharding, start_step, rows)
  step_fn = train_step_lib.make_train_step(config, networks, optimizers)

  def host_step(state, step, count):
    assert count == 1, count
    return step_fn(state, next(batches), jax.random.fold_in(base_rng, step))

  return host_step
