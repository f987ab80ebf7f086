"""A trained model from a workdir: restore it, encode, decode and sample.

What sample.py uses, and what a notebook imports:

  model = inference.load_model('runs/digits')
  images = inference.sample(model, 16, jax.random.PRNGKey(0))
  mu, logvar = inference.encode(model, real_images)

The networks are rebuilt from the workdir's config.json and the checkpoint is
read with Orbax onto this machine's first device, whatever number of devices
trained it. Only what inference needs (parameters and BatchNorm statistics, and
their moving averages where the run kept them: config.ema_decay) is read unless
the whole training state is asked for. Nothing in the workdir is ever written.
"""

import dataclasses
import functools
from typing import Any, Callable

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vaegan_jax import checkpointing
from vaegan_jax import train_state
from vaegan_jax.errors import CheckpointError


def map_in_chunks(
    fn: Callable[[np.ndarray], Any], inputs: np.ndarray, chunk_size: int = 500
) -> Any:
  """fn over `inputs` in chunks of one size (the last one zero-padded), its outputs
  (arrays or tuples of them) concatenated on the host: a jitted fn compiles once."""
  outputs = []
  for start in range(0, len(inputs), chunk_size):
    chunk = np.asarray(inputs[start : start + chunk_size])
    padded = np.concatenate(
        [chunk, np.zeros((chunk_size - len(chunk), *chunk.shape[1:]), chunk.dtype)]
    )
    outputs.append(
        jax.tree.map(lambda y, n=len(chunk): np.asarray(y)[:n], jax.device_get(fn(padded)))
    )
  return jax.tree.map(lambda *ys: np.concatenate(ys), *outputs)


@dataclasses.dataclass(frozen=True)
class Model:
  """The networks of a run and their variables ({'params', 'batch_stats'} per network):
  the moving averages of Enc's and Dec's where `uses_ema`, else the weights."""

  config: ml_collections.ConfigDict
  networks: train_state.Networks
  variables: dict[str, dict[str, Any]]
  step: int
  uses_ema: bool = False


def load_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
  """The config a run saved in its workdir (config.json)."""
  path = epath.Path(workdir) / checkpointing.CONFIG_FILE
  if not path.exists():
    raise CheckpointError(
        f'{path} does not exist: {workdir} is not the --workdir of a train.py run.'
    )
  return ml_collections.ConfigDict(checkpointing.read_config_json(path))


def from_train_state(
    config: ml_collections.ConfigDict, state: train_state.TrainState, use_ema: bool = True
) -> Model:
  """The Model of a training state in memory (e.g. to evaluate during training)."""
  # This process's copy of the replicated state, so evaluation runs on one local device.
  local = jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0)), train_state.eval_variables(state, use_ema)
  )
  return Model(
      config=config,
      networks=train_state.build_networks(config),
      variables=local,
      step=int(state.step),
      uses_ema=use_ema and state.ema is not None,
  )


def _read_only_manager(workdir: epath.PathLike) -> ocp.CheckpointManager:
  directory = epath.Path(workdir).absolute() / 'checkpoints'  # Orbax needs absolute paths.
  if not directory.is_dir():
    raise CheckpointError(
        f'{workdir} has no checkpoints ({directory} does not exist). '
        f'Train first: python train.py --config ... --workdir {workdir}'
    )
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManager(
      directory, options=options, item_handlers=ocp.PyTreeCheckpointHandler()
  )


def available_steps(workdir: epath.PathLike) -> list[int]:
  """The steps of the complete checkpoints in workdir, oldest first."""
  with _read_only_manager(workdir) as manager:
    return sorted(manager.all_steps())


def _pick_step(manager: ocp.CheckpointManager, workdir, step: int | None) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    raise CheckpointError(
        f'{workdir} has no complete checkpoint yet. Train first: '
        f'python train.py --config ... --workdir {workdir}'
    )
  if step is None:
    return steps[-1]
  if step not in steps:
    raise CheckpointError(
        f'{workdir} has no checkpoint of step {step}; its checkpoints: '
        f'{", ".join(map(str, steps))}.'
    )
  return step


def _abstract_state(
    config: ml_collections.ConfigDict, networks: train_state.Networks, device: jax.Device
) -> train_state.TrainState:
  """Shapes and dtypes of the run's TrainState, placed on `device`."""
  optimizers = train_state.build_optimizers(config, steps_per_epoch=1)
  shapes = jax.eval_shape(
      functools.partial(
          train_state.create_train_state, config=config, networks=networks, optimizers=optimizers
      ),
      jax.random.PRNGKey(0),
  )
  sharding = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def _check_shapes(metadata: Any, expected: Any, workdir) -> None:
  """Raises CheckpointError naming the arrays whose shapes differ from config.json's."""
  saved = {
      jax.tree_util.keystr(path): leaf
      for path, leaf in jax.tree_util.tree_flatten_with_path(metadata)[0]
  }
  mismatches = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]:
    name = jax.tree_util.keystr(path)
    found = saved.get(name)
    if found is None:
      mismatches.append(f'{name} is missing from the checkpoint')
    elif tuple(found.shape) != tuple(leaf.shape):
      mismatches.append(
          f'{name} has shape {tuple(found.shape)} in the checkpoint and '
          f'{tuple(leaf.shape)} by config.json'
      )
  if mismatches:
    listed = '; '.join(mismatches[:3]) + ('; ...' if len(mismatches) > 3 else '')
    raise CheckpointError(
        f'The checkpoint in {workdir} does not belong to the model of its config.json '
        f'({len(mismatches)} arrays differ: {listed}). Was config.json replaced? Restore '
        'the config.json of the run that wrote these checkpoints.'
    )


def _as_dict(tree: Any) -> Any:
  """A TrainState-like tree's variables as the nested dict Orbax stores (for partial
  restores): {network: {'params', 'batch_stats'}}, and 'ema' where it has one."""
  variables = {
      name: train_state.network_variables(getattr(tree, name))
      for name in train_state.NETWORKS
      if getattr(tree, name) is not None
  }
  if tree.ema is not None:
    variables['ema'] = tree.ema
  return variables


def _restore(workdir: epath.PathLike, step: int | None, variables_only: bool):
  """(config, networks, restored tree, step): the whole TrainState, or only the
  {network: {'params', 'batch_stats'}} dict (Orbax then reads nothing else)."""
  config = load_config(workdir)
  networks = train_state.build_networks(config)
  abstract = _abstract_state(config, networks, jax.devices()[0])
  item = _as_dict(abstract) if variables_only else abstract
  with _read_only_manager(workdir) as manager:
    step = _pick_step(manager, workdir, step)
    try:
      metadata = manager.item_metadata(step)
      if metadata is None:
        raise ValueError('no metadata')
    except Exception as e:  # Orbax and TensorStore raise many kinds for a damaged file.
      raise _unreadable(manager, workdir, step, e) from e
    _check_shapes(metadata, _as_dict(abstract), workdir)
    try:
      restored = manager.restore(
          step,
          args=ocp.args.PyTreeRestore(
              item=item,
              restore_args=ocp.checkpoint_utils.construct_restore_args(item),
              partial_restore=variables_only,
          ),
      )
    except Exception as e:
      raise _unreadable(manager, workdir, step, e) from e
  return config, networks, restored, step


def _unreadable(
    manager: ocp.CheckpointManager, workdir, step: int, error: Exception
) -> CheckpointError:
  others = [s for s in sorted(manager.all_steps()) if s != step]
  reason = f'{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ""}'
  return CheckpointError(
      f'The checkpoint of step {step} in {workdir} cannot be read ({reason}); it is damaged '
      'or incomplete. '
      + (
          f'Pass --step with another checkpoint: {", ".join(map(str, others))}.'
          if others
          else 'It is the only one: train again.'
      )
  )


def restore_train_state(
    workdir: epath.PathLike, step: int | None = None
) -> tuple[ml_collections.ConfigDict, train_state.TrainState]:
  """The whole training state (with optimizer states) of a checkpoint, on one device."""
  config, _, state, _ = _restore(workdir, step, variables_only=False)
  return config, state


def load_model(workdir: epath.PathLike, step: int | None = None, use_ema: bool = True) -> Model:
  """Parameters and BatchNorm statistics of a checkpoint (the latest if step is None):
  of Enc and Dec their moving averages, where the run kept them and `use_ema`.

  Optimizer states are not read: Orbax restores only the requested subtree.
  """
  config, networks, restored, step = _restore(workdir, step, variables_only=True)
  ema = restored.pop('ema', None)
  uses_ema = use_ema and ema is not None
  if uses_ema:
    restored.update(ema)
  return Model(config=config, networks=networks, variables=restored, step=step, uses_ema=uses_ema)


@functools.partial(jax.jit, static_argnums=0)
def _encode(encoder, variables, images):
  return encoder.apply(variables, images, train=False)


@functools.partial(jax.jit, static_argnums=0)
def _decode(decoder, variables, z):
  return decoder.apply(variables, z, train=False)


def encode(model: Model, images: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """Enc(x) in evaluation mode: the posterior's (mu, logvar) for images in [-1, 1]."""
  if model.networks.encoder is None:
    raise ValueError(
        f'A {model.config.model!r} model has no encoder: it cannot encode or '
        'reconstruct images, only sample.'
    )
  return _encode(model.networks.encoder, model.variables['encoder'], jnp.asarray(images))


def decode(model: Model, z: jax.Array) -> jax.Array:
  """Dec(z) in evaluation mode (BatchNorm running statistics): images in [-1, 1]."""
  return _decode(model.networks.decoder, model.variables['decoder'], jnp.asarray(z))


def prior_latents(model: Model, num: int, rng: jax.Array, temperature: float = 1.0) -> jax.Array:
  """z ~ N(0, temperature^2 I)."""
  return temperature * jax.random.normal(rng, (num, model.config.networks.latent_dim))


def sample(model: Model, num: int, rng: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Dec(z) for `num` prior latents."""
  return decode(model, prior_latents(model, num, rng, temperature))


def reconstruct(model: Model, images: np.ndarray) -> jax.Array:
  """Dec(mu(x)): the deterministic reconstruction."""
  mu, _ = encode(model, images)
  return decode(model, mu)


def interpolate(
    z_start: jax.Array, z_end: jax.Array, num: int, method: str = 'linear'
) -> jax.Array:
  """`num` latents from z_start to z_end (inclusive), on the line or by slerp.

  Slerp keeps the norm of Gaussian latents, where the middle of a line is
  atypically short.
  """
  t = jnp.linspace(0.0, 1.0, num)[:, None]
  if method == 'linear':
    return (1 - t) * z_start + t * z_end
  if method != 'slerp':
    raise ValueError(f'method={method!r}: expected "linear" or "slerp".')
  cosine = jnp.dot(z_start, z_end) / (jnp.linalg.norm(z_start) * jnp.linalg.norm(z_end))
  omega = jnp.arccos(jnp.clip(cosine, -1.0, 1.0))
  if float(jnp.sin(omega)) < 1e-6:  # (Anti)parallel: slerp is undefined, the line is fine.
    return (1 - t) * z_start + t * z_end
  return (jnp.sin((1 - t) * omega) * z_start + jnp.sin(t * omega) * z_end) / jnp.sin(omega)


def attribute_vector(
    model: Model, with_attribute: np.ndarray, without_attribute: np.ndarray
) -> jax.Array:
  """Mean latent (mu) of images with an attribute minus that of images without it."""
  return jnp.mean(encode(model, with_attribute)[0], axis=0) - jnp.mean(
      encode(model, without_attribute)[0], axis=0
  )
