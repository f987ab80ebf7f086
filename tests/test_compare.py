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
  flags = command_line_flags(
      {
          **TINY,
          'num_train_steps': 3,
          'checkpoint_every_steps': 3,
          'data_dir': tfds_data_dir,
          'eval.classifier_dir': str(tmp_path / 'classifiers'),
          'eval.classifier_steps': 50,
          'eval.num_samples': 40,
      }
  )

  def run(*args):
    return subprocess.run(
        [
            sys.executable,
            'compare.py',
            '--workdir',
            str(workdir),
            '--grid_side',
            '3',
            *flags,
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )

  # Two runs at a time, each in a process on its own core (CI's machines have two).
  jobs = min(2, len(os.sched_getaffinity(0)))
  done = run('--seeds', '0,1', '--num_samples', '40', '--config.ema_decay=0.5', '--jobs', str(jobs))
  assert done.returncode == 0, done.stderr[-3000:]
  assert f'{jobs} at a time' in done.stderr
  results = json.loads((workdir / 'results.json').read_text())
  assert list(results) == ['vae', 'vae_disl', 'gan', 'vaegan']
  for model, runs in results.items():
    # Each seed is scored with its averaged weights and with its raw ones.
    assert [(scored['seed'], scored['ema']) for scored in runs] == [
        (0, True),
        (0, False),
        (1, True),
        (1, False),
    ]
    for scored in runs:
      assert scored['step'] == 3 and scored['metrics']['num_samples'] == 40
      assert ('reconstruction/mse' in scored['metrics']) == (model != 'gan')
    for seed in (0, 1):
      config = json.loads((workdir / model / f'seed_{seed}' / 'config.json').read_text())
      assert (config['model'], config['seed']) == (model, seed)
    # Different seeds train different networks.
    assert runs[0]['metrics']['frechet/samples'] != runs[2]['metrics']['frechet/samples']
  table = (workdir / 'results.md').read_text()
  assert table.split('\n\n')[0] in done.stdout
  rows = [line for line in table.splitlines() if line.startswith('| `')]
  names = [row.split('|')[1].strip() for row in rows]
  assert names == [f'`{m}`{suffix}' for m in results for suffix in ('', ', weights without EMA')]
  # Mean ± standard deviation over the two seeds, as recomputed from results.json.
  fd = [scored['metrics']['frechet/samples'] for scored in results['vae'] if scored['ema']]
  assert f'{np.mean(fd):.1f} ± {np.std(fd, ddof=1):.1f}' == rows[0].split('|')[2].strip()
  assert rows[4].count(' - ') == 3  # A GAN has no reconstructions.
  grid = np.asarray(Image.open(workdir / 'samples.png'))
  side = 3 * 34 + 2  # Three 32x32 images per row with 2-pixel padding.
  assert grid.shape[1] == 4 * side + 3 * 8 and grid.std() > 0

  # Bad input: an unknown model is refused before anything trains or is overwritten.
  before = (workdir / 'results.json').read_text()
  bad = run('--models', 'vae,wgan')
  assert bad.returncode != 0 and '--models=vae,wgan' in bad.stderr
  assert 'Traceback' not in bad.stderr
  bad_seeds = run('--seeds', '0,0')
  assert bad_seeds.returncode != 0 and '--seeds=0,0' in bad_seeds.stderr
  bad_jobs = run('--jobs', '-1')
  assert bad_jobs.returncode != 0 and '--jobs=-1' in bad_jobs.stderr
  assert 'Traceback' not in bad_jobs.stderr
  assert (workdir / 'results.json').read_text() == before
