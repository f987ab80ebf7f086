"""compare.py: the four models trained and scored from one command, as the README runs it."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import pytest

from tests.helpers import ROOT, TINY, command_line_flags

pytestmark = pytest.mark.slow  # Trains and scores all four models in a subprocess.


def test_compare_trains_and_scores_all_four_models(tfds_data_dir, tmp_path):
  workdir = tmp_path / 'compare'
  env = None
  flags = command_line_flags({
      **TINY, 'num_train_steps': 3, 'checkpoint_every_steps': 3, 'data_dir': tfds_data_dir,
      'eval.classifier_dir': str(tmp_path / 'classifiers'), 'eval.classifier_steps': 50,
      'eval.num_samples': 64})

  def run(*args):
    return subprocess.run([sys.executable, 'compare.py', '--workdir', str(workdir),
                           '--grid_side', '3', *flags, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)

  done = run()
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert list(results) == ['vae', 'vae_disl', 'gan', 'vaegan']
  for model, result in results.items():
    assert result['step'] == 3
    config = json.loads((workdir / model / 'config.json').read_text())
    assert config['model'] == model
    scored = json.loads((workdir / model / 'eval' / 'step_000003.json').read_text())
    assert {k: v for k, v in scored.items() if k != 'step'} == result['metrics']
    assert ('reconstruction/mse' in result['metrics']) == (model != 'gan')
  table = (workdir / 'results.md').read_text()
  assert table.split('\n\n')[0] in done.stdout
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  assert [row.split('|')[1].strip() for row in rows] == ['`vae`', '`vae_disl`', '`gan`',
                                                          '`vaegan`']
  assert rows[2].count(' - ') == 4  # A GAN has no reconstructions and no KL.
  grid = np.asarray(Image.open(workdir / 'samples.png'))
  side = 3 * 34 + 2  # Three 32x32 images per row with 2-pixel padding.
  assert grid.shape[1] == 4 * side + 3 * 8 and grid.std() > 0

  # Bad input: an unknown model is refused before anything trains or is overwritten.
  before = (workdir / 'results.json').read_text()
  bad = run('--models', 'vae,wgan')
  assert bad.returncode != 0 and '--models=vae,wgan' in bad.stderr
  assert 'Traceback' not in bad.stderr
  assert (workdir / 'results.json').read_text() == before
