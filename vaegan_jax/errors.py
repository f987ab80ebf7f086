"""Errors caused by input the user can fix; entry points report them without a traceback."""


class UserError(Exception):
  """Bad input: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config field has an invalid value; the message names the field."""


class DatasetUnavailableError(UserError, RuntimeError):
  """The dataset is neither prepared on disk nor downloadable from here."""


class WorkdirMismatchError(UserError):
  """The workdir holds checkpoints of a model with other shapes."""


class OutputFolderError(UserError):
  """A --workdir or --outdir that is a file or cannot be written."""


class CheckpointError(UserError):
  """No checkpoint to restore, no such step, or one that does not fit the saved config."""


class CheckpointSaveError(UserError):
  """A checkpoint could not be written (a full disk); the earlier ones are intact."""


class ImageReadError(UserError):
  """A user's image file that cannot be read as an image."""


class NonFiniteError(UserError, FloatingPointError):
  """A loss or gradient went NaN or Inf; the message names the step and the term."""


class Interrupted(UserError):
  """Ctrl-C: the run saved a checkpoint and stopped (exit status 130)."""
