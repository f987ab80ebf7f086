"""Config files and their validation: bad values fail early, naming the field."""

import json
import subprocess
import sys

import pytest

from configs import celeba
from configs import cifar10
from configs import cifar10_tpu
from configs import default
from configs import digits
from configs import mnist
from vaegan_jax import checkpointing
from vaegan_jax import config_checks
from vaegan_jax.errors import ConfigError
from tests.helpers import ROOT


@pytest.mark.parametrize('module', [default, digits, mnist, cifar10, cifar10_tpu, celeba])
def test_configs_are_valid(module):
  config_checks.validate_config(module.get_config())


@pytest.mark.parametrize(
    'module, dataset, channels', [(mnist, 'mnist', 1), (cifar10, 'cifar10', 3)]
)
def test_seed_configs_use_the_seed_setup(module, dataset, channels):
  config = module.get_config()
  assert (config.dataset, config.num_channels) == (dataset, channels)
  assert (config.image_size, config.batch_size) == (64, 64)
  assert config.optim.learning_rate == 3e-4
  assert config.optim.discriminator_lr_mult == 0.1
  assert config.networks.latent_dim == 128 and config.networks.encoder_dense_width == 2048


@pytest.mark.parametrize(
    'field, value',
    [
        ('dataset', 'no_such_dataset'),
        ('image_size', 30),
        ('image_size', 8),
        ('num_channels', 2),
        ('batch_size', 0),
        ('optim.learning_rate', -0.1),
        ('optim.learning_rate', float('inf')),
        ('ema_decay', 1.0),
        ('optim.rmsprop_decay', 1.0),
        ('loss.discriminator_fakes', 'everything'),
        ('loss.decoder_gan_loss', 'wasserstein'),
        ('loss.gamma', -1.0),
        ('loss.pixel_beta', -0.5),
        ('networks.disl_layer', 5),
        ('networks.activation', 'gelu'),
        ('networks.encoder_widths', ()),
        ('num_sample_images', 10),
        ('checkpoint_every_steps', 0),
        ('on_nonfinite', 'ignore'),
        ('image_key', ''),
        ('crop', (40, 188, 15)),
        ('crop', (188, 40, 15, 163)),
        ('model', 'wgan'),
        ('eval.num_samples', 1),
        ('eval.label_key', ''),
        ('eval.inception_mode', 'tensorflow'),
        ('eval.inception_num_real', 1),
    ],
)
def test_invalid_values_name_the_field(field, value):
  config = digits.get_config()
  parent, _, key = field.rpartition('.')
  (config[parent] if parent else config)[key] = value
  with pytest.raises(ConfigError, match=f'config.{field}='):
    config_checks.validate_config(config)


def test_a_run_saved_before_pixel_beta_reads_back_with_the_weight_it_trained_with(tmp_path):
  saved = json.loads(digits.get_config().to_json_best_effort())
  del saved['loss']['pixel_beta']  # One beta weighted both likelihoods then.
  saved['loss']['beta'] = 0.3
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loss = checkpointing.read_config_json(tmp_path / 'config.json')['loss']
  assert (loss['beta'], loss['pixel_beta']) == (0.3, 0.3)


@pytest.mark.slow
def test_command_line_rejects_bad_override_before_compiling(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          'train.py',
          '--config',
          'configs/digits.py',
          '--workdir',
          str(tmp_path / 'run'),
          '--config.optim.learning_rate=-1',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode != 0
  assert 'config.optim.learning_rate=-1' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'run').exists()  # Nothing was written.


@pytest.mark.slow
def test_command_line_reports_a_bad_config_file_or_workdir_in_one_line(tmp_path):
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'as_dict.py').write_text('def get_config():\n  return {"model": "vae"}\n')
  (tmp_path / 'a_file').write_text('')
  cases = [
      (['--config', tmp_path / 'missing.py'], 'error: --config: ', 'missing.py'),
      (['--config', tmp_path / 'syntax.py'], 'error: --config: ', 'syntax.py:1: invalid syntax'),
      (
          ['--config', tmp_path / 'as_dict.py'],
          'error: --config: get_config() returned a dict',
          'configs/default.get_config()',
      ),
      (
          ['--config', 'configs/digits.py', '--config.bogus=1'],
          "error: --config: no such config field 'bogus'",
          'configs/default.py',
      ),
      (
          ['--config', 'configs/digits.py', '--workdir', tmp_path / 'a_file'],
          f'error: --workdir={tmp_path / "a_file"} is a file, not a folder',
          '',
      ),
  ]
  for args, start, phrase in cases:
    args = args if '--workdir' in args else [*args, '--workdir', tmp_path / 'run']
    result = subprocess.run(
        [sys.executable, 'train.py', *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(start) and phrase in last, (args, last)
  assert not (tmp_path / 'run').exists()
