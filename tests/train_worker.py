"""Trains the tiny digits run in a process of its own, for the device and process count tests.

  python -m tests.train_worker WORKDIR DATA_DIR OUT.npz [COORDINATOR NUM_PROCESSES PROCESS_ID]
  python -m tests.train_worker WORKDIR DATA_DIR OUT.npz data_on_device

The second trains from the images kept on the devices (config.data_on_device), then
replays its steps through the host pipeline's step, fed by hand the batches that the
devices should have gathered. Saves this process's copy of every array of the final
state to OUT.npz (the replay's as 'replayed/...'); with one process, also images
decoded from fixed z sharded over all devices.
"""

import functools
import sys

from vaegan_jax.cpu import convolutions as cpu_convolutions

cpu_convolutions.use_eigen_convolutions()  # As the tests' own process runs them.

from absl import logging
import jax
import numpy as np

from configs import digits
from tests.helpers import SCALE_OUT_RUN, override, tiny
from vaegan_jax import device_data, entry_point, inference, sharding, train
from vaegan_jax import datasets
from vaegan_jax import train_state
from vaegan_jax import train_step


def flat_arrays(tree) -> dict[str, np.ndarray]:
  """{'encoder/params/Conv_0/kernel': array}: this process's copy of each (replicated) array."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
      jax.tree_util.keystr(path, simple=True, separator='/'): np.asarray(
          leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf
      )
      for path, leaf in leaves
  }


def initial_state(config, steps_per_epoch: int = 1) -> train_state.TrainState:
  """The state a run of config starts from, replicated over the devices."""
  replicated, _ = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch)
  return jax.jit(
      functools.partial(
          train_state.create_train_state, config=config, networks=networks, optimizers=optimizers
      ),
      out_shardings=replicated,
  )(jax.random.PRNGKey(config.seed))


def replay_on_device_batches(config) -> train_state.TrainState:
  """config.num_train_steps host steps, on batch rows of device_data's epoch orders."""
  builder = datasets.get_builder(config)
  stored = device_data.load_images(builder, config.train_split, config.image_key)
  steps_per_epoch = len(stored) // config.batch_size
  _, data_sharding = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch)
  state = initial_state(config, steps_per_epoch)
  step_fn = train_step.make_train_step(config, networks, optimizers)
  # Jitted as on the devices: eager and compiled preprocessing round differently.
  preprocess = jax.jit(device_data.preprocess, static_argnums=(1, 2))
  for step in range(config.num_train_steps):
    order = np.asarray(device_data.epoch_order(config.seed, step // steps_per_epoch, len(stored)))
    start = (step % steps_per_epoch) * config.batch_size
    images = preprocess(
        stored[order[start : start + config.batch_size]], config.image_size, config.num_channels
    )
    state, _ = step_fn(
        state, {'image': jax.device_put(images, data_sharding)}, jax.random.fold_in(state.rng, step)
    )
  return state


def main(workdir: str, data_dir: str, out: str, *distributed: str) -> None:
  logging.set_verbosity(logging.INFO)  # The test reads the progress lines.
  data_on_device = distributed == ('data_on_device',)
  if distributed and not data_on_device:
    coordinator, num_processes, process_id = distributed
    entry_point.initialize_distributed(True, coordinator, int(num_processes), int(process_id))
  config = override(tiny(digits.get_config()), SCALE_OUT_RUN)
  config.data_dir = data_dir
  config.data_on_device = data_on_device
  state = train.train_and_evaluate(config, workdir)
  arrays = flat_arrays(state)
  if data_on_device:
    arrays.update(
        {
            f'replayed/{key}': value
            for key, value in flat_arrays(replay_on_device_batches(config)).items()
        }
    )
  if jax.process_count() == 1:
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    z = jax.device_put(
        jax.random.normal(jax.random.PRNGKey(7), (16, config.networks.latent_dim)),
        jax.NamedSharding(mesh, jax.P('data')),
    )
    model = inference.Model(
        config,
        train_state.build_networks(config),
        train_state.eval_variables(state),
        int(state.step),
    )
    images = inference.decode(model, z)
    assert len(images.sharding.device_set) == jax.device_count()
    arrays['decoded_fixed_z'] = np.asarray(images)
  np.savez(out, **arrays)


if __name__ == '__main__':
  main(*sys.argv[1:])
