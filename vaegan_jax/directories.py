"""Output folders checked before any expensive set-up, so a bad path fails in seconds."""

import os

from etils import epath

from vaegan_jax.errors import OutputFolderError


def check_writable(path: epath.PathLike, flag: str) -> epath.Path:
  """`path` as a folder that exists or can be created, and written to; nothing is created.

  Raises OutputFolderError naming the flag for a path that is a file, or under a
  folder that cannot be written (read-only filesystem, no permission).
  """
  if '://' in str(path):  # gs://, s3://: no local permissions to check; Orbax reports.
    return epath.Path(path)
  path = epath.Path(path).absolute()
  if path.exists() and not path.is_dir():
    raise OutputFolderError(
        f'--{flag}={path} is a file, not a folder: give a folder (it is ' 'created if missing).'
    )
  existing = path
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise OutputFolderError(
        f'--{flag}={path}: {existing} is a file, so the folder cannot be ' 'created there.'
    )
  if not os.access(existing, os.W_OK | os.X_OK):
    raise OutputFolderError(
        f'--{flag}={path}: {existing} cannot be written (read-only or no '
        'permission): give a folder you can write to.'
    )
  return path


def make_directory(path: epath.PathLike, flag: str) -> epath.Path:
  """Creates the folder (and its parents), or raises OutputFolderError naming the flag."""
  path = check_writable(path, flag)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OutputFolderError(
        f'--{flag}={path} cannot be created ({e.strerror or e}): give a ' 'folder you can write to.'
    ) from e
  return path
