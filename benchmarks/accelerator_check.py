"""The train step's figures on an accelerator, in one command that needs no TensorFlow.

  bash benchmarks/accelerator_check.sh                 # GPU or TPU: the whole set
  python benchmarks/accelerator_check.py --tiny --cases mnist:8,cifar10:4   # CPU smoke test

For the seed's 64x64 networks (configs/mnist.py: 1 channel; configs/cifar10.py: 3
channels, the architecture CelebA uses too) at batch 64 and 512, in float32 and
bfloat16: the step on images kept on the devices, --steps_per_dispatch steps per
call in one lax.scan (the path train.py takes with --config.data_on_device=true on
GPU and TPU). Per case: the first call's time (compilation included), step time,
images/s, XLA's FLOP count of one step, the TFLOP/s achieved and the fraction of
the device's peak. Then benchmarks/torch_reference.py, the seed's PyTorch loop, at
the same sizes (bfloat16 through autocast), and the ratio of images/s.

Cases run in order until --budget_s is spent; the rest are listed as skipped. The
figures go to --json and a table is printed. Needs jax, flax, optax and
ml_collections (a pure-Python wheel); TensorFlow, tensorflow-datasets and clu are
not imported.
"""

import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags
import jax
import numpy as np

from benchmarks import device_peaks
from configs import cifar10
from configs import mnist
from vaegan_jax import device_data
from vaegan_jax import device_steps
from vaegan_jax import entry_point
from vaegan_jax import sharding
from vaegan_jax import train_state
from vaegan_jax import train_step as train_step_lib

CONFIGS = {'mnist': mnist.get_config, 'cifar10': cifar10.get_config}
# --tiny: networks that compile and step in seconds on a CPU core.
TINY_NETWORKS = {
    'latent_dim': 8,
    'encoder_widths': (8, 16, 16),
    'encoder_dense_width': 32,
    'decoder_widths': (16, 8, 8),
    'discriminator_widths': (8, 8, 16, 16),
    'discriminator_dense_width': 16,
}

flags.DEFINE_list(
    'cases',
    ['mnist:64', 'mnist:512', 'cifar10:64', 'cifar10:512'],
    'CONFIG:BATCH pairs, CONFIG of ' + ', '.join(CONFIGS) + '.',
)
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes, each case in each.')
flags.DEFINE_integer('steps_per_dispatch', 10, 'Train steps per call (one lax.scan).')
flags.DEFINE_integer('dispatches', 3, 'Timed calls per case, after the first (compiling) one.')
flags.DEFINE_enum(
    'torch',
    'auto',
    ['auto', 'yes', 'no'],
    'Also time benchmarks/torch_reference.py (auto: where torch imports, not '
    'with --tiny, whose networks the reference does not have).',
)
flags.DEFINE_integer('torch_steps', 10, 'Timed steps of the PyTorch reference.')
flags.DEFINE_float('budget_s', 420.0, 'Start no case after this many seconds.')
flags.DEFINE_bool(
    'tiny',
    False,
    'Tiny networks and 32x32 images: a CPU smoke test (give ' 'small --cases batches).',
)
flags.DEFINE_string('json', None, 'Write the figures to this JSON file.')
FLAGS = flags.FLAGS


def case_config(name: str, batch_size: int, dtype: str, tiny: bool):
  config = CONFIGS[name]()
  config.batch_size, config.dtype = batch_size, dtype
  config.data_on_device, config.steps_per_dispatch = True, FLAGS.steps_per_dispatch
  if tiny:
    config.image_size = 32
    config.networks.update(TINY_NETWORKS)
  return config


def measure(name: str, config) -> dict:
  """Figures of config's train step on synthetic images kept on the devices."""
  replicated, data_sharding = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=1000)
  state = jax.jit(
      lambda rng: train_state.create_train_state(rng, config, networks, optimizers),
      out_shardings=replicated,
  )(jax.random.PRNGKey(0))
  # As load_images stores a dataset: uint8, one batch per step of a call, at the config's size.
  shape = (
      config.batch_size * config.steps_per_dispatch,
      config.image_size,
      config.image_size,
      config.num_channels,
  )
  images = device_data.put_on_devices(
      np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), replicated
  )
  run_steps = device_steps.make_train_steps(config, networks, optimizers, data_sharding, scan=True)
  count = config.steps_per_dispatch

  start = time.perf_counter()
  state = jax.block_until_ready(run_steps(state, images, count)[0])
  first_call = time.perf_counter() - start
  state = jax.block_until_ready(run_steps(state, images, count)[0])  # Warm.
  start = time.perf_counter()
  for _ in range(FLAGS.dispatches):
    state, metrics = run_steps(state, images, count)
  jax.block_until_ready(state)
  step_seconds = (time.perf_counter() - start) / (FLAGS.dispatches * count)

  batch = {
      'image': jax.device_put(np.zeros((config.batch_size, *shape[1:]), np.float32), data_sharding)
  }
  step_fn = train_step_lib.make_train_step(config, networks, optimizers)
  flops = device_peaks.flops(step_fn.lower(state, batch, jax.random.PRNGKey(1)))
  device = jax.devices()[0]
  peak = device_peaks.peak_tflops(device, bfloat16=config.dtype == 'bfloat16')
  figures = {
      'config': name,
      'batch_size': config.batch_size,
      'dtype': config.dtype,
      'image_size': config.image_size,
      'num_channels': config.num_channels,
      'steps_per_dispatch': count,
      'first_call_seconds': first_call,
      'compile_seconds': max(0.0, first_call - count * step_seconds),
      'step_seconds': step_seconds,
      'images_per_second': config.batch_size / step_seconds,
      'gflop_per_step': flops / 1e9 if flops else None,
      'achieved_tflops': flops / step_seconds / 1e12 if flops else None,
      'peak_tflops': peak * jax.device_count() if peak else None,
      'all_steps_finite': bool(np.all(np.asarray(metrics['nonfinite']) == 0)),
  }
  if flops and peak:
    figures['fraction_of_peak'] = figures['achieved_tflops'] / figures['peak_tflops']
  return figures


def torch_reference(config) -> dict:
  """benchmarks/torch_reference.py at config's sizes, or {'error': its last line}."""
  figures, error = device_peaks.torch_reference(
      config.image_size, config.num_channels, config.batch_size, FLAGS.torch_steps, config.dtype
  )
  return figures if figures is not None else {'error': error.splitlines()[-1]}


def _torch_wanted() -> bool:
  if FLAGS.torch != 'auto':
    return FLAGS.torch == 'yes'
  return not FLAGS.tiny and importlib.util.find_spec('torch') is not None


def table(rows: list[dict]) -> str:
  def number(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else '-'

  lines = [
      '| config | batch | dtype | first call s | step ms | img/s | TFLOP/s | of peak | '
      'torch img/s | jax/torch |',
      '|' + ' --- |' * 10,
  ]
  for row in rows:
    torch_ips = row.get('torch', {}).get('images_per_second')
    lines.append(
        f"| {row['config']} | {row['batch_size']} | {row['dtype']} | "
        f"{number(row['first_call_seconds'], '.1f')} | "
        f"{number(1e3 * row['step_seconds'], '.2f')} | "
        f"{number(row['images_per_second'], '.0f')} | {number(row['achieved_tflops'], '.2f')} | "
        f"{number(row.get('fraction_of_peak'), '.1%')} | {number(torch_ips, '.0f')} | "
        f"{number(row['images_per_second'] / torch_ips if torch_ips else None, '.2f')} |"
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  entry_point.set_up()
  start = time.perf_counter()
  with_torch = _torch_wanted()
  device = jax.devices()[0]
  results = {
      'devices': f'{jax.device_count()} x {device.device_kind} ({device.platform})',
      'jax': jax.__version__,
      'tiny': FLAGS.tiny,
      'cases': [],
      'skipped': [],
  }
  for case in FLAGS.cases:
    name, batch_size = case.split(':')
    for dtype in FLAGS.dtypes:
      label = f'{name} batch {batch_size} {dtype}'
      if time.perf_counter() - start > FLAGS.budget_s:
        results['skipped'].append(label)
        continue
      config = case_config(name, int(batch_size), dtype, FLAGS.tiny)
      row = measure(name, config)
      if with_torch:
        row['torch'] = torch_reference(config)
      results['cases'].append(row)
      print(
          f'{label}: {row["images_per_second"]:.0f} img/s, first call '
          f'{row["first_call_seconds"]:.1f} s',
          flush=True,
      )
  results['seconds'] = time.perf_counter() - start
  print(
      f'\n{results["devices"]}, jax {results["jax"]}, {FLAGS.steps_per_dispatch} steps per '
      f'call\n\n{table(results["cases"])}'
  )
  if results['skipped']:
    print(f'\nSkipped (over --budget_s={FLAGS.budget_s:.0f}): {", ".join(results["skipped"])}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)
    print(f'\nWrote {FLAGS.json}')


if __name__ == '__main__':
  entry_point.run(main)
