"""Orbax checkpoints of the TrainState and the config saved beside them.

WORKDIR/checkpoints/<step>/ holds the whole state pytree; WORKDIR/config.json the
config of the run, which sample.py reads to rebuild the networks.
"""

from collections.abc import Iterator
import contextlib
import json

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp

from vaegan_jax import full_disk
from vaegan_jax.errors import CheckpointError, CheckpointSaveError, WorkdirMismatchError
from vaegan_jax.train_state import TrainState

CONFIG_FILE = 'config.json'
# Fields that decide the shapes of the state: a checkpoint restores only into these.
_SHAPE_FIELDS = ('image_size', 'num_channels', 'model', 'networks')
_UNREADABLE = 'checkpoints_unreadable'  # Where a damaged checkpoint is moved by a fallback.
_SET_ASIDE = 'checkpoints_set_aside'  # Where a rewind (config.restore_step) moves newer ones.


def create_manager(workdir: epath.PathLike, keep: int) -> ocp.CheckpointManager:
  """Asynchronous saves, keeping the last `keep` checkpoints."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=True
  )
  # Orbax needs an absolute path; the README's commands pass relative ones.
  return ocp.CheckpointManager(
      epath.Path(workdir).absolute() / 'checkpoints',
      options=options,
      item_handlers=ocp.StandardCheckpointHandler(),
  )


def restore_latest(
    manager: ocp.CheckpointManager, state: TrainState, fallback: bool = False, restore_step: int = 0
) -> TrainState:
  """The latest checkpoint (the newest at most `restore_step`, if > 0) restored onto
  `state`'s shapes and shardings, else `state`.

  Orbax writes a checkpoint to a temporary directory and renames it when complete,
  so a save cut off by a crash is never listed. A listed checkpoint that cannot be
  read (a truncated or damaged file) stops the run, or with `fallback` is moved to
  WORKDIR/checkpoints_unreadable/ (never deleted) and the next newest is tried. A
  readable checkpoint of other shapes (another model) is never moved: it stops the run.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  for step in sorted(manager.all_steps(), reverse=True):
    if restore_step > 0 and step > restore_step:
      continue
    try:
      metadata = manager.item_metadata(step)
      if metadata is None:  # Orbax's answer when the item's metadata file is missing.
        raise FileNotFoundError(f'no metadata in {manager.directory / str(step)}')
      _check_shapes(metadata, abstract, manager.directory / str(step))
      return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except WorkdirMismatchError:
      raise
    except Exception as e:  # Orbax and TensorStore raise many kinds for a damaged file.
      path = manager.directory / str(step)
      reason = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
      if not fallback:
        earlier = [s for s in manager.all_steps() if s < step]
        then = (
            f'resume from the previous checkpoint (step {max(earlier)})'
            if earlier
            else 'start over'
        )
        raise CheckpointError(
            f'The checkpoint of step {step} ({path}) cannot be read ({reason}). To {then}, '
            're-run with --config.checkpoint_fallback=True: the unreadable checkpoint is '
            f'moved to {_UNREADABLE}/ beside checkpoints/, not deleted.'
        ) from e
      aside = _move_aside(path, _UNREADABLE)
      logging.warning(
          'The checkpoint of step %d cannot be read (%s); moved it to %s and '
          'trying the previous one.',
          step,
          reason,
          aside,
      )
      manager.reload()
  if restore_step > 0:
    raise CheckpointError(
        f'--config.restore_step={restore_step}: no checkpoint of that step or '
        f'before in {manager.directory}; its checkpoints: '
        f'{", ".join(map(str, sorted(manager.all_steps()))) or "none"}.'
    )
  return state


def rewind_marker(manager: ocp.CheckpointManager, restore_step: int) -> epath.Path:
  """The file that records a rewind to `restore_step`: re-running the same command (after
  a preemption, say) must resume, not rewind again."""
  return manager.directory.parent / _SET_ASIDE / f'rewound_to_{restore_step}'


def set_aside_after(
    manager: ocp.CheckpointManager, step: int, restore_step: int
) -> list[epath.Path]:
  """Moves the checkpoints newer than `step` to WORKDIR/checkpoints_set_aside/ (never
  deleted), so that a run rewound to `step` saves its own steps there again, and
  records the rewind (rewind_marker)."""
  newer = [s for s in sorted(manager.all_steps()) if s > step]
  moved = [_move_aside(manager.directory / str(s), _SET_ASIDE) for s in newer]
  if moved:
    manager.reload()
  marker = rewind_marker(manager, restore_step)
  marker.parent.mkdir(exist_ok=True)
  marker.write_text(f'Rewound to step {step}; moved aside: {[p.name for p in moved]}\n')
  return moved


def _check_shapes(metadata, abstract: TrainState, path: epath.Path) -> None:
  """Raises WorkdirMismatchError if the checkpoint's arrays are not the state's shapes.

  Compared as multisets of shapes, which need no agreement on how leaves are named.
  """
  saved = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(metadata))
  expected = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(abstract))
  if saved != expected:
    only_saved = [s for s in saved if s not in expected][:3]
    only_expected = [s for s in expected if s not in saved][:3]
    raise WorkdirMismatchError(
        f"The checkpoint {path} holds a model of other shapes than this config's "
        f'({len(saved)} arrays there, {len(expected)} here; shapes only there: '
        f'{only_saved}, only here: {only_expected}). Was config.json deleted or replaced? '
        'Resume with the config of the run that wrote it, or use a new --workdir.'
    )


def _move_aside(path: epath.Path, where: str) -> epath.Path:
  directory = path.parent.parent / where
  directory.mkdir(exist_ok=True)
  target, copy = directory / path.name, 1
  while target.exists():
    target, copy = directory / f'{path.name}.{copy}', copy + 1
  path.rename(target)
  return target


def save(manager: ocp.CheckpointManager, state: TrainState) -> None:
  """Starts an asynchronous save of `state`; raises CheckpointSaveError if this save or
  the previous one (still in flight until now) failed."""
  with _save_errors_reported(manager):  # Orbax re-raises a background save's error here.
    manager.save(int(state.step), args=ocp.args.StandardSave(state), force=True)


def wait_until_saved(manager: ocp.CheckpointManager) -> None:
  """Waits for a save in flight; raises CheckpointSaveError if it failed."""
  with _save_errors_reported(manager):
    manager.wait_until_finished()


@contextlib.contextmanager
def _save_errors_reported(manager: ocp.CheckpointManager) -> Iterator[None]:
  """A storage failure (full disk) as CheckpointSaveError; any other error as it is."""
  try:
    yield
  except Exception as e:
    if full_disk.is_storage_error(e):
      raise _save_failed(manager, e) from e
    raise


def _save_failed(manager: ocp.CheckpointManager, error: Exception) -> CheckpointSaveError:
  directory = epath.Path(manager.directory)
  return full_disk.failed(directory, error, f'Saving a checkpoint to {directory}')


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
  path = epath.Path(path)
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    backups = sorted(p.name for p in path.parent.glob('config.*.json'))
    raise CheckpointError(
        f'{path} is damaged (not valid JSON: {e}). Move it aside (mv {path} {path}.damaged) '
        "and re-run train.py with the run's --config and --workdir: it checks that config "
        'against the checkpoints and writes config.json again'
        f'{f" (earlier configs of the run: {chr(44).join(backups)})" if backups else ""}.'
    ) from e
  if not isinstance(saved, dict):
    raise CheckpointError(
        f'{path} is not a saved config (a JSON object); restore it or use a ' 'new --workdir.'
    )
  if isinstance(saved.get('model'), dict):  # Runs from before config.model chose the model.
    saved['networks'], saved['model'] = saved['model'], 'vaegan'
  saved['networks'].setdefault('bias_before_norm', True)  # Earlier runs always had them.
  # Fields added since: what those runs did.
  for field, value in (
      ('ema_decay', 0.0),
      ('crop', None),
      ('dtype', 'float32'),
      ('cpu_winograd', True),
      ('data_on_device', False),
      ('steps_per_dispatch', 1),
      ('restore_step', 0),
  ):
    saved.setdefault(field, value)
  for field, value in (
      ('inception', False),
      ('inception_mode', 'clean'),
      ('inception_num_real', 50_000),
      ('inception_dir', None),
  ):
    saved.get('eval', {}).setdefault(field, value)
  loss = saved.get('loss', {})
  if 'concat_batches' in loss:  # One switch for Dis and Dec before they were apart.
    batches = 'joint' if loss.pop('concat_batches') else 'separate'
    loss.setdefault('discriminator_batches', batches)
    loss.setdefault('decoder_batches', batches)
  if 'beta' in loss:  # One beta weighted both likelihoods before pixel_beta.
    loss.setdefault('pixel_beta', loss['beta'])
  return saved


def check_config(
    workdir: epath.PathLike, config: ml_collections.ConfigDict, has_checkpoint: bool
) -> None:
  """Refuses a config whose shapes differ from those of the workdir's checkpoints (as its
  config.json records them). Every process checks, before anything is written."""
  path = epath.Path(workdir) / CONFIG_FILE
  old = read_config_json(path) if path.exists() else None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('config.json read')
  if old is None or not has_checkpoint:
    return
  new = json.loads(config.to_json_best_effort())
  old_shapes, new_shapes = _flat(_shape_fields(old)), _flat(_shape_fields(new))
  changed = sorted(
      k for k in set(old_shapes) | set(new_shapes) if old_shapes.get(k) != new_shapes.get(k)
  )
  if changed:
    details = ', '.join(
        f'config.{k} is {old_shapes.get(k)!r} there and ' f'{new_shapes.get(k)!r} here'
        for k in changed
    )
    raise WorkdirMismatchError(
        f'{workdir} holds checkpoints of a model with other shapes ({details}). '
        'Use a new --workdir, or resume with the saved config.json.'
    )


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Saves the config as JSON, once the run has restored (or has nothing to restore).

  A config that differs in fields check_config allows (more steps, another learning
  rate) replaces the saved one; the old file is kept as config.<n>.json.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  new = json.loads(config.to_json_best_effort())
  if path.exists():
    if read_config_json(path) == new:
      return
    backup = 1
    while (path.parent / f'config.{backup}.json').exists():
      backup += 1
    path.rename(path.parent / f'config.{backup}.json')
  path.write_text(json.dumps(new, indent=2) + '\n')
