"""The benchmarks run and report what they promise (their figures are not checked here)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY, command_line_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('pipeline', [{}, {'data_on_device': True, 'steps_per_dispatch': 2}])
def test_throughput_benchmark_reports_its_figures(tfds_data_dir, compilation_cache, tmp_path,
                                                  pipeline):
  out = tmp_path / 'figures.json'
  flags = command_line_flags({**TINY, 'data_dir': tfds_data_dir, **pipeline})
  result = subprocess.run(
      [sys.executable, 'benchmarks/throughput.py', '--config', 'configs/digits.py', *flags,
       '--steps=2', '--warmup=1', '--repeats=1', f'--json={out}'],
      cwd=ROOT, env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=compilation_cache),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(out.read_text())['jax']
  assert figures['images_per_second'] > 0 and figures['compile_seconds'] > 0
  assert figures['gflop_per_image'] > 0 and figures['peak_memory_bytes'] > 0
  assert 0 < figures['pipeline_fraction_of_synthetic']
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
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
  for layer in ('enc1', 'dis4', 'dec4', 'total'):
    assert len(rows[layer]) == 3 and all(float(ms) > 0 for ms in rows[layer])
