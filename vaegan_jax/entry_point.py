"""What every command-line entry point sets up first."""

import logging as std_logging
import os
import sys
import threading
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from vaegan_jax.cpu import convolutions as cpu_convolutions
from vaegan_jax.cpu import host_memory
from vaegan_jax.errors import ConfigError, Interrupted, UserError

_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/')


def _quiet_library_info(record: std_logging.LogRecord) -> bool:
  """Keeps orbax's per-save and TFDS's per-read INFO chatter out of the progress output.

  Also orbax's warning that a read-only checkpoint manager (sample.py's) is read-only.
  """
  if '/orbax/' in record.pathname and 'is read only' in str(record.msg):
    return False
  return record.levelno >= std_logging.WARNING or not any(
      name in record.pathname for name in _CHATTY_LIBRARIES
  )


def _is_closed_event_loop_noise(error: BaseException | None) -> bool:
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def ignore_closed_event_loop_noise() -> None:
  """Drops the "Event loop is closed" tracebacks of a checkpoint read cut short.

  When one array of a checkpoint cannot be read, Orbax gives up and closes its event
  loop while TensorStore still reads the others; each of those reads then reports, from
  its own thread, that it cannot wake the closed loop. The error is the first failure,
  which the scripts report in one line; these come after it, in any order. Every other
  unraisable error still reaches the previous hook.
  """
  previous = sys.unraisablehook

  def hook(unraisable) -> None:
    if not _is_closed_event_loop_noise(unraisable.exc_value):
      previous(unraisable)

  sys.unraisablehook = hook


def set_up() -> dict[str, bool]:
  """Host memory kept for reuse and XLA's Eigen convolutions on CPU (both before JAX
  starts); TensorFlow only reads data, so it must not take the GPUs JAX will use;
  quiet logs. Returns which of the first two it set, for the benchmarks to report."""
  ignore_closed_event_loop_noise()
  settings = {
      'keeps_freed_memory': host_memory.keep_freed_memory(),
      'eigen_convolutions_flag': cpu_convolutions.use_eigen_convolutions(),
  }
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:  # The accelerator check runs without it.
    pass
  else:
    tf.config.set_visible_devices([], 'GPU')
  logging.get_absl_handler().addFilter(_quiet_library_info)
  return settings


def initialize_distributed(
    multihost: bool,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
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
          "(process 0's), --num_processes and --process_id."
      ) from e
    logging.info(
        'Process %d of %d; %d of the %d devices are local.',
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _config_error(error: Exception) -> str:
  if isinstance(error, SyntaxError):
    return f'{error.filename}:{error.lineno}: {error.msg}'
  if isinstance(error, AttributeError):  # An override of a field the config lacks.
    return f'no such config field {str(error).strip(chr(34) + chr(39))!r} (see configs/default.py)'
  return ' '.join(str(error).split())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config file or field reported in one line."""
  try:
    remaining = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      config = flags.FLAGS.config
      # A file that failed to load leaves a stand-in that holds the error.
      loading_error = getattr(config, '__dict__', {}).get('_error')
      if isinstance(loading_error, Exception):
        raise loading_error
      if config is not None and not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            f'get_config() returned a {type(config).__name__}, not an '
            'ml_collections.ConfigDict: build it from configs/default.get_config()'
        )
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --helpfull to list the flags.')
  except Exception as e:  # Whatever the user's config file raises while it is loaded.
    sys.exit(f'error: --config: {_config_error(e)}')
  return remaining


def _exit(message: str, status: int) -> None:
  """Exits with `message` as the last line.

  Orbax's reader and writer tasks, cut short by the error, would otherwise print their
  tracebacks and "never awaited" warnings after it, some of them only while the
  interpreter shuts down; so the process ends with os._exit, which skips that shutdown.
  Every output of the run is flushed and closed by then (the training loop's finally).
  """
  sys.unraisablehook = lambda unraisable: None
  threading.excepthook = lambda args: None
  std_logging.getLogger('asyncio').disabled = True  # "Task exception was never retrieved".
  try:
    logging.flush()
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
  finally:  # Even if a closed pipe refuses the message.
    os._exit(status)


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) for the scripts: flags parsed by parse_flags, a UserError reported as
  one line (exit status 1), Ctrl-C as one line (exit status 130)."""

  def guarded(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
    try:
      main(argv)
    except Interrupted as e:
      _exit(str(e), 130)
    except UserError as e:
      _exit(f'error: {e}', 1)
    except KeyboardInterrupt:
      _exit('Interrupted (Ctrl-C).', 130)

  app.run(guarded, flags_parser=parse_flags)
