"""A write that the storage refused (a full or read-only disk) reported as one line that
names the checkpoint to resume from, whichever of the run's writers hit it first:
Orbax's checkpoints, TensorBoard's event file, the sample PNGs or the metrics' JSON.
"""

from collections.abc import Callable, Iterator, Sequence
import errno
import sys

from absl import logging
from etils import epath

from vaegan_jax.errors import CheckpointSaveError

# How the OS, TensorStore and TensorFlow word a write that the storage refused.
_STORAGE_ERRORS = (
    'No space left on device',
    'RESOURCE_EXHAUSTED',
    'Failed writing',
    'Could not flush events file',  # TensorFlow's summary writer, which drops the errno.
    'Read-only file system',
    'Permission denied',
    'Disk quota exceeded',
)


def _chain(error: BaseException | None) -> Iterator[BaseException]:
  """`error` and the errors it was raised from (clu re-raises its thread's error so)."""
  while error is not None:
    yield error
    error = error.__cause__


def is_storage_error(error: BaseException) -> bool:
  """Whether a write failed for the storage (full, read-only), not for a bug: only those
  become a one-line message; anything else keeps its traceback."""
  return any(
      isinstance(e, OSError) or any(text in str(e) for text in _STORAGE_ERRORS)
      for e in _chain(error)
  )


def _is_disk_full(error: BaseException) -> bool:
  return any(
      'No space left on device' in str(e) or getattr(e, 'errno', None) == errno.ENOSPC
      for e in _chain(error)
  )


def _reason(error: BaseException) -> str:
  if _is_disk_full(error):
    return 'the disk is full (No space left on device)'
  if any('Could not flush events file' in str(e) for e in _chain(error)):
    return 'TensorBoard could not write its event file (the disk is full or not writable)'
  text = str(error)
  return f'{type(error).__name__}: {text.splitlines()[0][:300] if text else ""}'


def failed(checkpoint_dir: epath.Path, error: BaseException, what: str) -> CheckpointSaveError:
  """The one-line error for `error`, raised by `what` ('Saving a checkpoint to DIR'):
  what to free and which complete checkpoint a re-run resumes from."""
  complete = sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit())
  latest = (
      f'step {complete[-1]}, the newest complete checkpoint'
      if complete
      else 'the start: no checkpoint is complete'
  )
  return CheckpointSaveError(
      f'{what} failed: {_reason(error)}. Free space (or fix the folder), then re-run the '
      f'same command: it resumes from {latest} (an incomplete save is never resumed from).'
  )


def close_all(checkpoint_dir: epath.Path, closers: Sequence[Callable[[], object]]) -> None:
  """Calls every closer, even after one failed, so that no writer's thread outlives the
  run; then raises the run's storage failure, if any, as one CheckpointSaveError.

  Meant for the training loop's `finally`. An exception already propagating there
  counts first, and one that is not a storage failure (a bug, Ctrl-C, a NaN) stays
  the one raised. Each writer re-raises its background thread's error at its next
  call, so one full disk is often reported by several writers: the message prefers
  one that knows the disk is full.
  """
  pending = sys.exc_info()[1]
  errors = [pending] if pending is not None else []
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      errors.append(e)
  if not errors:
    return
  storage = [e for e in errors if is_storage_error(e)]
  if storage and (pending is None or pending is storage[0]):
    chosen = next((e for e in storage if _is_disk_full(e)), storage[0])
  else:
    chosen = errors[0]  # The pending exception goes on, or a closer's bug is raised.
  for error in errors:
    if error is not chosen:
      logging.warning('Closing the run, beside the error reported: %s', error)
  if chosen in storage and not isinstance(chosen, CheckpointSaveError):
    raise failed(checkpoint_dir, chosen, f'Writing to {checkpoint_dir.parent}') from chosen
  raise chosen
