"""What every command-line entry point sets up first."""

import logging as std_logging

from absl import logging
import tensorflow as tf

_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/')


def _quiet_library_info(record: std_logging.LogRecord) -> bool:
  """Keeps orbax's per-save and TFDS's per-read INFO chatter out of the progress output.

  Also orbax's warning that a read-only checkpoint manager (sample.py's) is read-only.
  """
  if '/orbax/' in record.pathname and 'is read only' in str(record.msg):
    return False
  return (record.levelno >= std_logging.WARNING or
          not any(name in record.pathname for name in _CHATTY_LIBRARIES))


def set_up() -> None:
  """TensorFlow only reads data, so it must not take the GPUs JAX will use; quiet logs."""
  tf.config.set_visible_devices([], 'GPU')
  logging.get_absl_handler().addFilter(_quiet_library_info)
