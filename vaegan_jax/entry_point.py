"""What every command-line entry point sets up first."""

import logging as std_logging

from absl import logging
import jax
import tensorflow as tf

from vaegan_jax import cpu_convolutions
from vaegan_jax import host_memory
from vaegan_jax.errors import ConfigError

_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/')


def _quiet_library_info(record: std_logging.LogRecord) -> bool:
  """Keeps orbax's per-save and TFDS's per-read INFO chatter out of the progress output.

  Also orbax's warning that a read-only checkpoint manager (sample.py's) is read-only.
  """
  if '/orbax/' in record.pathname and 'is read only' in str(record.msg):
    return False
  return (record.levelno >= std_logging.WARNING or
          not any(name in record.pathname for name in _CHATTY_LIBRARIES))


def set_up() -> dict[str, bool]:
  """Host memory kept for reuse and XLA's Eigen convolutions on CPU (both before JAX
  starts); TensorFlow only reads data, so it must not take the GPUs JAX will use;
  quiet logs. Returns which of the first two it set, for the benchmarks to report."""
  settings = {'keeps_freed_memory': host_memory.keep_freed_memory(),
              'eigen_convolutions_flag': cpu_convolutions.use_eigen_convolutions()}
  tf.config.set_visible_devices([], 'GPU')
  logging.get_absl_handler().addFilter(_quiet_library_info)
  return settings


def initialize_distributed(multihost: bool, coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process (multi-host) run, before JAX touches any device.

  Arguments left None are detected by JAX on Cloud TPU pods, SLURM, Open MPI and
  Kubernetes; a run launched by hand gives all three.
  """
  if multihost or coordinator_address or (num_processes or 1) > 1:
    try:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (ValueError, TypeError) as e:  # What JAX raises for missing or bad arguments.
      raise ConfigError(
          f'Cannot join a multi-process run: {e} Outside a cluster JAX detects (Cloud TPU '
          'pods, SLURM, Open MPI, Kubernetes), give all of --coordinator_address=HOST:PORT '
          '(process 0\'s), --num_processes and --process_id.') from e
    logging.info('Process %d of %d; %d of the %d devices are local.', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
