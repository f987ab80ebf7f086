"""Errors caused by input the user can fix; entry points report them without a traceback."""


class UserError(Exception):
  """Bad input: the message says what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config field has an invalid value; the message names the field."""


class DatasetUnavailableError(UserError, RuntimeError):
  """The dataset is neither prepared on disk nor downloadable from here."""


class WorkdirMismatchError(UserError):
  """The workdir holds checkpoints of a model with other shapes."""
