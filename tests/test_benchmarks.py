"""The benchmarks run and report what they promise (their figures are not checked here)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import digits
from tests.helpers import ROOT, TINY, command_line_flags, override, tiny
from vaegan_jax import train_state

pytestmark = pytest.mark.slow  # Subprocesses that compile the seed-size networks.


@pytest.mark.parametrize('pipeline', [{}, {'data_on_device': True, 'steps_per_dispatch': 2}])
def test_throughput_benchmark_reports_its_figures(tfds_data_dir, tmp_path, pipeline):
  out = tmp_path / 'figures.json'
  flags = command_line_flags({**TINY, 'data_dir': tfds_data_dir, **pipeline})
  result = subprocess.run(
      [
          sys.executable,
          'benchmarks/throughput.py',
          '--config',
          'configs/digits.py',
          *flags,
          '--steps=2',
          '--warmup=1',
          '--repeats=1',
          f'--json={out}',
      ],
      cwd=ROOT,
      env=None,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(out.read_text())['jax']
  # The figures are consistent with each other and with the model they timed.
  assert figures['images_per_second'] == pytest.approx(16 / figures['step_seconds'])
  assert figures['gflop_per_image'] == pytest.approx(figures['gflop_per_step'] / 16)
  assert figures['achieved_tflops'] == pytest.approx(
      figures['gflop_per_step'] / 1e3 / figures['step_seconds']
  )
  params = figures['params']
  config = override(tiny(digits.get_config()), {})
  networks = train_state.build_networks(config)
  expected = {
      name: sum(
          x.size
          for x in jax.tree.leaves(
              jax.eval_shape(
                  lambda n=getattr(networks, name), i=inputs: n.init(
                      jax.random.PRNGKey(0), i, train=False
                  )
              )['params']
          )
      )
      for name, inputs in (
          ('encoder', jnp.zeros((1, 32, 32, 1))),
          ('decoder', jnp.zeros((1, 8))),
          ('discriminator', jnp.zeros((1, 32, 32, 1))),
      )
  }
  assert params == expected
  # Parameters, RMSProp state and a batch are all in memory at once during the step.
  assert figures['peak_memory_bytes'] >= 4 * 2 * sum(params.values()) + 4 * 16 * 32 * 32
  # A flop count below the convolutions' multiply-adds alone would be wrong: Enc's first
  # layer alone, forward, is 16 x 16x16 outputs x 8 channels x 25 taps.
  assert figures['gflop_per_image'] * 1e9 > 2 * 16 * 16 * 8 * 25
  assert figures['compile_seconds'] > figures['step_seconds'] > 0
  assert 0 < figures['pipeline_fraction_of_synthetic'] < 2
  if pipeline:
    assert figures['pipeline'] == 'on the devices, 2 steps per call'  # No lax.scan on CPU.
    assert figures['pipeline_images_bytes'] == 1497 * 8 * 8
  else:
    assert figures['pipeline'] == 'host (tf.data), one step per call'
    assert figures['pipeline_alone_images_per_second'] > 0
  assert 'images_per_second' in result.stdout  # The printed table.
  # On CPU: which convolutions ran (the tiny networks' are all XLA's own anyway).
  user_flag = '--xla_cpu_experimental_ynn_fusion_type' in os.environ.get('XLA_FLAGS', '')
  assert figures['eigen_convolutions_flag'] is not user_flag
  assert figures['ynnpack_convolutions'] == 0


def test_convolution_benchmark_times_every_layer():
  result = subprocess.run(
      [sys.executable, 'benchmarks/convolutions.py', '--batch_size=2', '--repeats=1'],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
  for layer in ('enc1', 'dis4', 'dec4', 'total'):
    assert len(rows[layer]) == 3 and all(float(ms) > 0 for ms in rows[layer])
  layers = [name for name in rows if name != 'total' and len(rows[name]) == 3]
  for column in range(3):  # The total is the sum of the layers' times.
    assert float(rows['total'][column]) == pytest.approx(
        sum(float(rows[name][column]) for name in layers), abs=0.05 * len(layers) + 0.05
    )


def test_accelerator_check_runs_without_tensorflow(tmp_path):
  """The GPU image has no TensorFlow, tensorflow-datasets or clu: here they are hidden
  (tests/without_tensorflow), and the check must still run, on the scanned on-device
  steps it times on a GPU."""
  env = {
      **os.environ,
      'PYTHON': sys.executable,
      'PYTHONPATH': os.path.join(ROOT, 'tests', 'without_tensorflow'),
  }
  result = subprocess.run(
      [
          'bash',
          'benchmarks/accelerator_check.sh',
          str(tmp_path),
          '--tiny',
          '--cases=mnist:4,cifar10:4',
          '--dtypes=bfloat16',
          '--steps_per_dispatch=2',
          '--dispatches=1',
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads((tmp_path / 'accelerator_check.json').read_text())
  assert [
      (case['config'], case['num_channels'], case['batch_size'], case['dtype'])
      for case in figures['cases']
  ] == [('mnist', 1, 4, 'bfloat16'), ('cifar10', 3, 4, 'bfloat16')]
  for case in figures['cases']:
    assert case['all_steps_finite'] and case['steps_per_dispatch'] == 2
    assert case['images_per_second'] > 0 and case['gflop_per_step'] > 0
    assert case['compile_seconds'] >= 0
  assert figures['skipped'] == []
  table = (tmp_path / 'accelerator_check.txt').read_text()
  assert '| cifar10 | 4 | bfloat16 |' in table
