"""benchmarks/throughput.py runs and reports what it promises (its figures are not checked here)."""

import json
import os
import subprocess
import sys

from tests.conftest import TINY, command_line_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_throughput_benchmark_reports_its_figures(tfds_data_dir, compilation_cache, tmp_path):
  out = tmp_path / 'figures.json'
  flags = command_line_flags({**TINY, 'data_dir': tfds_data_dir})
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
  assert 'images_per_second' in result.stdout  # The printed table.
