"""Orbax checkpoints of the TrainState and the config saved beside them.

WORKDIR/checkpoints/<step>/ holds the whole state pytree; WORKDIR/config.json the
config of the run, which sample.py reads to rebuild the networks.
"""

import json

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from vaegan_jax.errors import WorkdirMismatchError
from vaegan_jax.train_state import TrainState

CONFIG_FILE = 'config.json'
# Fields that decide the shapes of the state: a checkpoint restores only into these.
_SHAPE_FIELDS = ('image_size', 'num_channels', 'model')


def create_manager(workdir: epath.PathLike, keep: int) -> ocp.CheckpointManager:
  """Asynchronous saves, keeping the last `keep` checkpoints."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(epath.Path(workdir) / 'checkpoints', options=options)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
  """The latest checkpoint restored onto `state`'s shapes and shardings, else `state`."""
  step = manager.latest_step()
  if step is None:
    return state
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
  manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)


def _shape_fields(config_dict: dict) -> dict:
  return {k: config_dict.get(k) for k in _SHAPE_FIELDS}


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict,
                 has_checkpoint: bool) -> None:
  """Saves the config as JSON; refuses a config whose shapes differ from the checkpoints'.

  A config that differs only in other fields (more steps, another learning rate)
  replaces the saved one; the old file is kept as config.<n>.json.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  new = json.loads(config.to_json_best_effort())
  if path.exists():
    old = json.loads(path.read_text())
    if has_checkpoint:
      old_shapes, new_shapes = _flat(_shape_fields(old)), _flat(_shape_fields(new))
      changed = sorted(k for k in set(old_shapes) | set(new_shapes)
                       if old_shapes.get(k) != new_shapes.get(k))
      if changed:
        details = ', '.join(f'config.{k} is {old_shapes.get(k)!r} there and '
                            f'{new_shapes.get(k)!r} here' for k in changed)
        raise WorkdirMismatchError(
            f'{workdir} holds checkpoints of a model with other shapes ({details}). '
            'Use a new --workdir, or resume with the saved config.json.')
    if old == new:
      return
    backup = 1
    while (path.parent / f'config.{backup}.json').exists():
      backup += 1
    path.rename(path.parent / f'config.{backup}.json')
  path.write_text(json.dumps(new, indent=2) + '\n')
