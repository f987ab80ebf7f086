"""End to end: train_and_evaluate on the bundled digits and on mock mnist/cifar10."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import celeba
from configs import cifar10
from configs import mnist
from tests.helpers import ROOT, TINY, command_line_flags, logged_scalars, tiny
from vaegan_jax import train
from vaegan_jax.errors import WorkdirMismatchError


def _checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def test_digits_run_writes_checkpoints_samples_logs_and_resumes(tiny_digits_config, tmp_path):
  config = tiny_digits_config
  config.num_train_steps = 6
  straight = train.train_and_evaluate(config, tmp_path / 'straight')

  workdir = tmp_path / 'interrupted'
  config.num_train_steps = 4
  first = train.train_and_evaluate(config, workdir)
  assert int(first.step) == 4
  assert _checkpoint_steps(workdir) == [2, 4]
  for step in (2, 4):
    grid = np.asarray(Image.open(workdir / 'samples' / f'step_{step:06d}.png'))
    assert grid.ndim == 2 and grid.std() > 0  # Grey images, not blank.
  assert any(p.name.startswith('events.out.tfevents') for p in workdir.iterdir())
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['networks']['latent_dim'] == config.networks.latent_dim

  # The same command with more steps continues from step 4, at the same data position.
  config.num_train_steps = 6
  resumed = train.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 6
  assert _checkpoint_steps(workdir) == [2, 4, 6]
  for name in ('encoder', 'decoder', 'discriminator'):
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        getattr(straight, name).params,
        getattr(resumed, name).params,
    )
  assert (workdir / 'config.1.json').exists()  # The 4-step config is kept, not lost.

  # A config with other shapes refuses to resume, and leaves the workdir as it was.
  config.networks.latent_dim = 4
  with pytest.raises(
      WorkdirMismatchError, match='config.networks.latent_dim is 8 there and 4 here'
  ):
    train.train_and_evaluate(config, workdir)
  assert _checkpoint_steps(workdir) == [2, 4, 6]
  assert json.loads((workdir / 'config.json').read_text())['networks']['latent_dim'] == 8


def test_the_discriminator_tells_real_from_generated_within_dozens_of_steps(trained_digits):
  """With the real and generated images in one BatchNorm batch (the paper code's
  choice), Dis learns at once; with three separate batches (the seed's) its mean
  outputs stayed near the constant 1/3 that minimises its loss blind (0.40, 0.34, 0.24
  on the quickstart at step 400)."""
  logged = logged_scalars(trained_digits[0])
  d_real, d_recon, d_prior = (logged[(key, 40)] for key in ('d_real', 'd_recon', 'd_prior'))
  assert d_real > 0.6 and d_real - max(d_recon, d_prior) > 0.3, (d_real, d_recon, d_prior)
  # Its cross-entropy is well below the 1.91 nats of the best constant output against one
  # real and two fake batches (-ln(1/3) - 2 ln(2/3)).
  assert logged[('loss/discriminator', 40)] < 1.5


@pytest.mark.slow
@pytest.mark.parametrize('get_config', [mnist.get_config, cifar10.get_config, celeba.get_config])
def test_every_seed_config_s_discriminator_tells_real_from_generated(
    tfds_data_dir, tmp_path, get_config
):
  """Each shipped config's networks, loss options and learning rates, unchanged, on the
  bundled digits at the config's 64x64 (its channels tiled): after 20 steps of batch 8
  Dis tells real images from generated ones. With the seed's three separate batches
  (loss.discriminator_batches='separate') the mnist config gave D(x) 0.48, D(x~) 0.48,
  D(xp) 0.47 here, blind; with the default joint batch 0.995, 0.03, 0.03."""
  config = get_config()
  config.dataset, config.data_dir, config.crop = 'sklearn_digits', tfds_data_dir, None
  config.train_split, config.eval_split, config.cache_dataset = 'train', 'test', True
  config.batch_size, config.num_train_steps, config.num_sample_images = 8, 20, 4
  config.log_every_steps, config.checkpoint_every_steps = 10, 20
  train.train_and_evaluate(config, tmp_path)
  logged = logged_scalars(tmp_path)
  d_real, d_recon, d_prior = (logged[(key, 20)] for key in ('d_real', 'd_recon', 'd_prior'))
  assert d_real > 0.8 and d_real - max(d_recon, d_prior) > 0.5, (d_real, d_recon, d_prior)


def test_only_the_last_keep_checkpoints_are_kept(tiny_digits_config, tmp_path):
  config = tiny_digits_config
  config.num_train_steps, config.checkpoint_every_steps, config.keep_checkpoints = 8, 2, 2
  train.train_and_evaluate(config, tmp_path)
  assert _checkpoint_steps(tmp_path) == [6, 8]
  assert len(list((tmp_path / 'samples').iterdir())) == 4  # Every checkpoint's grid stays.


@pytest.mark.parametrize(
    'get_config, image_size',
    [
        pytest.param(mnist.get_config, 28, marks=pytest.mark.slow),
        pytest.param(cifar10.get_config, 32, marks=pytest.mark.slow),
        pytest.param(celeba.get_config, 64, marks=pytest.mark.slow),
    ],
)
def test_seed_configs_train_on_mock_tfds(mock_tfds, tmp_path, get_config, image_size):
  config = tiny(get_config())
  config.image_size = image_size
  config.batch_size = 8
  config.num_train_steps = 2
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 2
  assert _checkpoint_steps(tmp_path) == [2]
  grid = np.asarray(Image.open(tmp_path / 'samples' / 'step_000002.png'))
  assert grid.shape[-1] == 3 if config.num_channels == 3 else grid.ndim == 2


@pytest.mark.slow
def test_command_line_trains_and_resumes(tfds_data_dir, tmp_path):
  """The README's command, shrunk: train, then re-run to resume from the checkpoint."""
  env = None

  def run(steps):  # A relative --workdir, as in the README.
    return subprocess.run(
        [
            sys.executable,
            'train.py',
            '--config',
            'configs/digits.py',
            '--workdir',
            os.path.relpath(tmp_path, ROOT),
            *command_line_flags(
                {**TINY, 'log_every_steps': 1, 'num_train_steps': steps, 'data_dir': tfds_data_dir}
            ),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )

  first = run(2)
  assert first.returncode == 0, first.stderr[-3000:]
  output = first.stdout + first.stderr
  assert 'step 2/2 |' in output and 'img/s' in output and 'ETA' in output
  second = run(3)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resuming from the checkpoint of step 2' in second.stdout + second.stderr
  assert _checkpoint_steps(tmp_path) == [2, 3]
