"""Orbax checkpoints of the TrainState and the config saved beside them.

WORKDIR/checkpoints/<step>/ holds the whole state pytree; WORKDIR/config.json the
config of the run, which sample.py reads to rebuild the networks.
"""

import json

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from vaegan_jax.errors import CheckpointError, WorkdirMismatchError
from vaegan_jax.train_state import TrainState

CONFIG_FILE = 'config.json'
# Fields that decide the shapes of the state: a checkpoint restores only into these.
_SHAPE_FIELDS = ('image_size', 'num_channels', 'model', 'networks')
_UNREADABLE = 'checkpoints_unreadable'  # Where a damaged checkpoint is moved by a fallback.


def create_manager(workdir: epath.PathLike, keep: int) -> ocp.CheckpointManager:
  """Asynchronous saves, keeping the last `keep` checkpoints."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=True)
  # Orbax needs an absolute path; the README's commands pass relative ones.
  return ocp.CheckpointManager(epath.Path(workdir).absolute() / 'checkpoints', options=options)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState,
                   fallback: bool = False) -> TrainState:
  """The latest checkpoint restored onto `state`'s shapes and shardings, else `state`.

  Orbax writes a checkpoint to a temporary directory and renames it when complete,
  so a save cut off by a crash is never listed. A listed checkpoint that cannot be
  read (a truncated or damaged file) stops the run, or with `fallback` is moved to
  WORKDIR/checkpoints_unreadable/ (never deleted) and the next newest is tried.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax and TensorStore raise many kinds for a damaged file.
      path = manager.directory / str(step)
      reason = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
      if not fallback:
        earlier = [s for s in manager.all_steps() if s < step]
        then = (f'resume from the previous checkpoint (step {max(earlier)})' if earlier
                else 'start over')
        raise CheckpointError(
            f'The checkpoint of step {step} ({path}) cannot be read ({reason}). To {then}, '
            're-run with --config.checkpoint_fallback=True: the unreadable checkpoint is '
            f'moved to {_UNREADABLE}/ beside checkpoints/, not deleted.') from e
      aside = _move_aside(path)
      logging.warning('The checkpoint of step %d cannot be read (%s); moved it to %s and '
                      'trying the previous one.', step, reason, aside)
      manager.reload()
  return state


def _move_aside(path: epath.Path) -> epath.Path:
  directory = path.parent.parent / _UNREADABLE
  directory.mkdir(exist_ok=True)
  target, copy = directory / path.name, 1
  while target.exists():
    target, copy = directory / f'{path.name}.{copy}', copy + 1
  path.rename(target)
  return target


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
  manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)


def _shape_fields(config_dict: dict) -> dict:
  fields = {k: config_dict.get(k) for k in _SHAPE_FIELDS}
  fields['ema_decay > 0'] = config_dict.get('ema_decay', 0) > 0  # Whether the state has `ema`.
  return fields


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def read_config_json(path: epath.PathLike) -> dict:
  """A saved config.json as a dict, in today's field names."""
  saved = json.loads(epath.Path(path).read_text())
  if isinstance(saved.get('model'), dict):  # Runs from before config.model chose the model.
    saved['networks'], saved['model'] = saved['model'], 'vaegan'
  saved['networks'].setdefault('bias_before_norm', True)  # Earlier runs always had them.
  saved.setdefault('ema_decay', 0.0)
  loss = saved.get('loss', {})
  if 'concat_batches' in loss:  # One switch for Dis and Dec before they were apart.
    batches = 'joint' if loss.pop('concat_batches') else 'separate'
    loss.setdefault('discriminator_batches', batches)
    loss.setdefault('decoder_batches', batches)
  return saved


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict,
                 has_checkpoint: bool, write: bool = True) -> None:
  """Saves the config as JSON; refuses a config whose shapes differ from the checkpoints'.

  A config that differs only in other fields (more steps, another learning rate)
  replaces the saved one; the old file is kept as config.<n>.json. Every process
  checks; only those with `write` (process 0) write, after all have read.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  new = json.loads(config.to_json_best_effort())
  old = read_config_json(path) if path.exists() else None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('config.json read')
  if old is not None and has_checkpoint:
    old_shapes, new_shapes = _flat(_shape_fields(old)), _flat(_shape_fields(new))
    changed = sorted(k for k in set(old_shapes) | set(new_shapes)
                     if old_shapes.get(k) != new_shapes.get(k))
    if changed:
      details = ', '.join(f'config.{k} is {old_shapes.get(k)!r} there and '
                          f'{new_shapes.get(k)!r} here' for k in changed)
      raise WorkdirMismatchError(
          f'{workdir} holds checkpoints of a model with other shapes ({details}). '
          'Use a new --workdir, or resume with the saved config.json.')
  if not write or old == new:
    return
  if old is not None:
    backup = 1
    while (path.parent / f'config.{backup}.json').exists():
      backup += 1
    path.rename(path.parent / f'config.{backup}.json')
  path.write_text(json.dumps(new, indent=2) + '\n')
