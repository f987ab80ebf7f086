"""Errors caused by input the user can fix; entry points report them without a traceback."""


class UserError(Exception):
  """Bad input: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config field has an invalid value; the message names the field."""


class DatasetUnavailableError(UserError, RuntimeError):
  """The dataset is neither prepared on disk nor downloadable from here."""


class WorkdirMismatchError(UserError):
  """The workdir holds checkpoints of a model with other shapes."""


class CheckpointError(UserError):
  """No checkpoint to restore, no such step, or one that does not fit the saved config."""


class ImageReadError(UserError):
  """A user's image file that cannot be read as an image."""


class NonFiniteError(UserError, FloatingPointError):
  """A loss or gradient went NaN or Inf; the message names the step and the term."""
