"""Throughput of the jitted train step: compile time, step time, images/s, FLOPs, memory.

  python benchmarks/throughput.py --config configs/cifar10.py
  python benchmarks/throughput.py --config configs/mnist.py --torch   # and the PyTorch reference

Times the step on synthetic batches already on the devices, then with the real
input pipeline (when the dataset is at hand): the host's tf.data, one step per call,
or with --config.data_on_device=true the images kept on the devices and
--config.steps_per_dispatch steps per call. On whatever devices JAX sees (CPU,
GPU, TPU). FLOPs come from XLA's cost analysis of the compiled step. With --torch,
benchmarks/torch_reference.py runs the same architecture, batch and image size
afterwards on the same machine and the ratio of images/s is printed.
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from benchmarks import device_peaks
from configs import default
from vaegan_jax import config_checks
from vaegan_jax.cpu import convolutions as cpu_convolutions
from vaegan_jax import datasets
from vaegan_jax import device_data
from vaegan_jax import device_steps
from vaegan_jax import entry_point
from vaegan_jax import sharding
from vaegan_jax import step_runner
from vaegan_jax import train_state
from vaegan_jax import train_step as train_step_lib
from vaegan_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'A config file with get_config().', lock_config=True
)
flags.DEFINE_integer('steps', 10, 'Timed steps per measurement.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling (and of the pipeline).')
flags.DEFINE_integer('repeats', 2, 'Measurements of each kind (the best is reported).')
flags.DEFINE_bool('pipeline', True, 'Also time the step fed by the real input pipeline.')
flags.DEFINE_bool('torch', False, 'Then run benchmarks/torch_reference.py and print the ratio.')
flags.DEFINE_integer('torch_steps', 3, 'Timed steps of the PyTorch reference.')
flags.DEFINE_float(
    'peak_tflops',
    0.0,
    "The devices' peak TFLOP/s (per device), to print "
    'the fraction achieved; 0: from a table of known GPUs and TPUs.',
)
flags.DEFINE_string('json', None, 'Also write the figures to this JSON file.')
flags.mark_flags_as_required(['config'])


def _peak_tflops(device: jax.Device, bfloat16: bool) -> float | None:
  return FLAGS.peak_tflops or device_peaks.peak_tflops(device, bfloat16)


def _time_steps(run, state, calls: int, steps_per_call: int = 1):
  """(state, seconds per step) over `calls` calls of run(state, i) -> state, waiting for
  the last to finish."""
  start = time.perf_counter()
  for i in range(calls):
    state = run(state, i)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / (calls * steps_per_call)


def _peak_memory_bytes(compiled) -> tuple[int | None, str]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'], 'device peak in use'
  memory = compiled.memory_analysis()
  if memory is None:
    return None, 'unknown'
  total = (
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes
  )
  return total, 'XLA memory analysis: arguments + outputs + temporaries'


def benchmark(config) -> dict:
  """Figures of config's train step on this machine's devices."""
  config_checks.validate_config(config)
  replicated, data_sharding = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=1000)
  state = jax.jit(
      lambda rng: train_state.create_train_state(rng, config, networks, optimizers),
      out_shardings=replicated,
  )(jax.random.PRNGKey(config.seed))
  step_fn = train_step_lib.make_train_step(config, networks, optimizers)
  shape = (config.batch_size, config.image_size, config.image_size, config.num_channels)
  images = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  synthetic = {'image': jax.device_put(images, data_sharding)}
  base_rng = jax.random.PRNGKey(1)

  start = time.perf_counter()
  compiled = step_fn.lower(state, synthetic, base_rng).compile()
  compile_seconds = time.perf_counter() - start
  on_synthetic = lambda state, i: compiled(state, synthetic, jax.random.fold_in(base_rng, i))[0]
  state, first_step_seconds = _time_steps(on_synthetic, state, 1)
  state, _ = _time_steps(on_synthetic, state, FLAGS.warmup)

  pipeline, pipeline_figures = None, {}
  if FLAGS.pipeline:
    try:
      builder = datasets.get_builder(config)
      pipeline, state, calls_per_measurement, steps_per_call, pipeline_figures = _pipeline(
          config, builder, networks, optimizers, state, compiled, base_rng
      )
    except UserError as e:
      pipeline_figures = {'pipeline': f'not measured: {e}'}
    else:
      state, _ = _time_steps(pipeline, state, max(1, FLAGS.warmup // steps_per_call))
  # Synthetic and pipeline-fed steps alternate, best of `repeats` each: a side-by-side
  # ratio that a busy machine's drift does not bias.
  step_seconds, pipeline_seconds = [], []
  for _ in range(FLAGS.repeats):
    state, seconds = _time_steps(on_synthetic, state, FLAGS.steps)
    step_seconds.append(seconds)
    if pipeline is not None:
      state, seconds = _time_steps(pipeline, state, calls_per_measurement, steps_per_call)
      pipeline_seconds.append(seconds)
  step_seconds = min(step_seconds)
  device = jax.devices()[0]
  flops_per_device = device_peaks.flops(compiled)
  flops = flops_per_device * jax.device_count() if flops_per_device else None
  peak = _peak_tflops(device, bfloat16=config.dtype == 'bfloat16')
  memory, memory_kind = _peak_memory_bytes(compiled)
  figures = {
      'config': {
          'dataset': config.dataset,
          'image_size': config.image_size,
          'num_channels': config.num_channels,
          'batch_size': config.batch_size,
          'dtype': config.dtype,
          'model': config.model,
          'cpu_winograd': config.cpu_winograd,
          'data_on_device': config.data_on_device,
          'steps_per_dispatch': config.steps_per_dispatch,
      },
      'devices': f'{jax.device_count()} x {device.device_kind} ({device.platform})',
      'params': {
          name: sum(x.size for x in jax.tree.leaves(getattr(state, name).params))
          for name in train_state.used_networks(config)
      },
      'compile_seconds': compile_seconds,
      'first_step_seconds_after_compile': first_step_seconds,
      'step_seconds': step_seconds,
      'images_per_second': config.batch_size / step_seconds,
      'gflop_per_step': flops / 1e9 if flops else None,
      'gflop_per_image': flops / 1e9 / config.batch_size if flops else None,
      'achieved_tflops': flops / step_seconds / 1e12 if flops else None,
      'peak_tflops_per_device': peak,
      'peak_memory_bytes': memory,
      'peak_memory_kind': memory_kind,
  }
  if device.platform == 'cpu':  # Whether the Eigen convolutions are in effect.
    figures['ynnpack_convolutions'] = cpu_convolutions.count_ynnpack_convolutions(
        compiled.as_text()
    )
  if flops and peak:
    figures['fraction_of_peak'] = figures['achieved_tflops'] / (peak * jax.device_count())

  figures.update(pipeline_figures)
  if pipeline_seconds:
    figures['pipeline_step_seconds'] = min(pipeline_seconds)
    figures['pipeline_images_per_second'] = config.batch_size / min(pipeline_seconds)
    figures['pipeline_fraction_of_synthetic'] = step_seconds / min(pipeline_seconds)
  return figures


def _images_per_second(batches, batch_size: int, count: int) -> float:
  """How fast `batches` deliver images to the devices, with no step to feed: the most
  images/s that any device could train on from them."""
  jax.block_until_ready(next(batches))  # Start-up (tf.data's threads, the file reads).
  start = time.perf_counter()
  for _ in range(count):
    jax.block_until_ready(next(batches))
  return count * batch_size / (time.perf_counter() - start)


def _pipeline(config, builder, networks, optimizers, state, compiled_step, base_rng):
  """(run(state, i) -> state, state, calls per measurement, steps per call, figures): the
  train step fed by the input pipeline config.data_on_device selects, ready to time
  (the on-device one has run once: its compile time is a figure)."""
  replicated, data_sharding = sharding.data_parallel_shardings()
  if not config.data_on_device:
    rows = sharding.process_rows(data_sharding, config.batch_size)
    host_batches = lambda: step_runner.host_batches(config, builder, data_sharding, 0, rows)
    batches = host_batches()
    run = lambda state, i: compiled_step(state, next(batches), jax.random.fold_in(base_rng, i))[0]
    return (
        run,
        state,
        FLAGS.steps,
        1,
        {
            'pipeline': 'host (tf.data), one step per call',
            'pipeline_alone_images_per_second': _images_per_second(
                host_batches(), config.batch_size, count=4 * FLAGS.steps
            ),
        },
    )

  images = device_data.put_on_devices(
      device_data.load_images(builder, config.train_split, config.image_key), replicated
  )
  steps_per_call = config.steps_per_dispatch
  scan = device_steps.default_scan(data_sharding)
  run_steps = device_steps.make_train_steps(config, networks, optimizers, data_sharding, scan)
  run = lambda state, i: run_steps(state, images, steps_per_call)[0]
  start = time.perf_counter()
  state = jax.block_until_ready(run(state, 0))
  figures = {
      'pipeline': f'on the devices, {steps_per_call} steps per call'
      f'{" (lax.scan)" if scan and steps_per_call > 1 else ""}',
      'pipeline_first_call_seconds': time.perf_counter() - start,
      'pipeline_images_bytes': images.nbytes,
  }
  return run, state, max(1, round(FLAGS.steps / steps_per_call)), steps_per_call, figures


def _torch_reference(config) -> dict:
  figures, error = device_peaks.torch_reference(
      config.image_size, config.num_channels, config.batch_size, FLAGS.torch_steps
  )
  if figures is None:
    raise SystemExit(
        'error: the PyTorch reference failed (is torch installed? pip install -r '
        f'requirements-bench.txt):\n{error[-2000:]}'
    )
  return figures


def _print(figures: dict) -> None:
  for key, value in figures.items():
    if isinstance(value, float):
      value = f'{value:.4g}'
    print(f'{key:36s} {value}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  settings = entry_point.set_up()
  config = FLAGS.config
  # The reference hard-codes the seed's networks: those of configs/default.py.
  changed = sorted(k for k, v in default.get_config().networks.items() if config.networks[k] != v)
  if FLAGS.torch and config.model != 'vaegan':
    sys.exit(f'error: --torch compares the VAE/GAN only; this config trains a {config.model!r}.')
  if FLAGS.torch and changed:
    sys.exit(
        'error: --torch compares the seed architecture only (configs/mnist.py, '
        f'cifar10.py); this config changes config.networks.{", config.networks.".join(changed)}.'
    )
  try:
    figures = {'jax': {**settings, **benchmark(config)}}
  except UserError as e:
    sys.exit(f'error: {e}')
  _print(figures['jax'])
  if FLAGS.torch:
    figures['torch'] = _torch_reference(config)
    figures['jax_over_torch_images_per_second'] = (
        figures['jax']['images_per_second'] / figures['torch']['images_per_second']
    )
    print()
    _print({f'torch {k}': v for k, v in figures['torch'].items()})
    print(
        f'\nJAX / PyTorch images/s: {figures["jax_over_torch_images_per_second"]:.2f}x '
        '(synthetic batches, same batch and image size)'
    )
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(figures, f, indent=2)


if __name__ == '__main__':
  app.run(main)
