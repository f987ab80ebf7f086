"""Restoring trained models (inference.py) and drawing the figures (sample.py)."""

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from tests.helpers import ROOT, damage_array_files, run_script
from vaegan_jax import export
from vaegan_jax import figures
from vaegan_jax import image_grid
from vaegan_jax import image_files
from vaegan_jax import inference
from vaegan_jax import train
from vaegan_jax.errors import CheckpointError, ImageReadError, OutputFolderError
from vaegan_jax.errors import WorkdirMismatchError


@pytest.fixture
def trained(trained_digits):
  return trained_digits


def _snapshot(directory):
  """Every file under a directory with its size and modification time."""
  return {
      str(p): (p.stat().st_size, p.stat().st_mtime_ns)
      for p in sorted(directory.rglob('*'))
      if p.is_file()
  }


def test_parameters_alone_and_the_whole_state_restore_as_trained(trained):
  workdir, final = trained
  model = inference.load_model(workdir, use_ema=False)
  assert model.step == 40 and not model.uses_ema
  assert inference.available_steps(workdir) == [20, 40]
  # By default the moving averages (configs/digits.py keeps them) stand in for Enc and Dec.
  averaged = inference.load_model(workdir)
  assert averaged.uses_ema
  for name in ('encoder', 'decoder'):
    jax.tree.map(np.testing.assert_array_equal, averaged.variables[name], final.ema[name])
  _, state = inference.restore_train_state(workdir)
  for name in ('encoder', 'decoder', 'discriminator'):
    expected = getattr(final, name)
    jax.tree.map(np.testing.assert_array_equal, model.variables[name]['params'], expected.params)
    jax.tree.map(
        np.testing.assert_array_equal, model.variables[name]['batch_stats'], expected.batch_stats
    )
    jax.tree.map(np.testing.assert_array_equal, getattr(state, name).opt_state, expected.opt_state)
  assert 'opt_state' not in model.variables['decoder']  # Never read for inference.
  earlier = inference.load_model(workdir, step=20)
  assert earlier.step == 20
  assert not np.array_equal(
      earlier.variables['decoder']['params']['Dense_0']['kernel'],
      model.variables['decoder']['params']['Dense_0']['kernel'],
  )


def test_evaluation_mode_uses_sane_running_statistics(trained):
  workdir, _ = trained
  model = inference.load_model(workdir)
  stats = model.variables['decoder']['batch_stats']
  for layer in stats.values():
    assert np.all(np.isfinite(layer['mean'])) and np.all(layer['var'] > 0)
  assert any(np.abs(layer['mean']).max() > 1e-3 for layer in stats.values())  # Not the init.

  z = jax.random.normal(jax.random.PRNGKey(0), (256, model.config.networks.latent_dim))
  decoder, params = model.networks.decoder, model.variables['decoder']['params']
  evaluation = inference.decode(model, z)
  training, _ = decoder.apply(
      {'params': params, 'batch_stats': stats}, z, train=True, mutable=['batch_stats']
  )
  initial_stats = {
      k: {'mean': jnp.zeros_like(v['mean']), 'var': jnp.ones_like(v['var'])}
      for k, v in stats.items()
  }
  with_initial = decoder.apply({'params': params, 'batch_stats': initial_stats}, z, train=False)
  # The running statistics describe the batches the decoder sees: its evaluation
  # outputs are close to its batch-statistics outputs, unlike with the initial ones.
  gap = float(jnp.mean(jnp.abs(evaluation - training)))
  gap_initial = float(jnp.mean(jnp.abs(with_initial - training)))
  assert gap < 0.1 and gap < gap_initial / 4, (gap, gap_initial)


def test_bad_inputs_are_refused_and_leave_the_workdir_unchanged(trained, tmp_path):
  workdir, _ = trained
  before = _snapshot(workdir)
  with pytest.raises(CheckpointError, match='has no checkpoint of step 7; its checkpoints: 20, 40'):
    inference.load_model(workdir, step=7)
  with pytest.raises(CheckpointError, match='is not the --workdir of a train.py run'):
    inference.load_model(tmp_path)
  (tmp_path / 'config.json').write_text((workdir / 'config.json').read_text())
  with pytest.raises(CheckpointError, match='has no checkpoints'):
    inference.load_model(tmp_path)

  other = tmp_path / 'other'
  shutil.copytree(workdir, other)
  config = json.loads((other / 'config.json').read_text())
  config['networks']['latent_dim'] = 4
  (other / 'config.json').write_text(json.dumps(config))
  with pytest.raises(
      CheckpointError,
      match=r'does not belong to the model of its config.json.*'
      r"\['decoder'\]\['params'\]\['Dense_0'\]\['kernel'\] has shape \(8, ",
  ):
    inference.load_model(other)

  folder = tmp_path / 'mine'
  folder.mkdir()
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / 'a.png')
  (folder / 'b.jpg').write_text('not an image')
  with pytest.raises(ImageReadError, match='b.jpg cannot be read as an image'):
    image_files.load_folder(folder, 32, 1)
  assert image_files.load_folder(folder, 32, 1, skip_unreadable=True).shape == (1, 32, 32, 1)
  assert _snapshot(workdir) == before


def test_exported_samples_are_the_model_s_samples_as_uint8_in_both_formats(trained, tmp_path):
  workdir, _ = trained
  model = inference.load_model(workdir)
  rng = jax.random.PRNGKey(5)
  images = export.quantised_samples(model, 8, rng, chunk_size=8)
  # One chunk of the same size: the very computation inference.sample runs.
  np.testing.assert_array_equal(
      images, image_grid.to_uint8(np.asarray(inference.sample(model, 8, rng)))
  )
  chunked = export.quantised_samples(model, 8, rng, chunk_size=3)  # Padded last chunk.
  assert chunked.shape == images.shape == (8, 32, 32, 1) and chunked.dtype == np.uint8

  written = export.export_samples(images, tmp_path)
  pngs = sorted((tmp_path / 'png').iterdir())
  assert [p.name for p in pngs] == [f'{i:06d}.png' for i in range(8)]
  assert sorted(written) == sorted([*pngs, tmp_path / 'samples.npz'])
  for path, image in zip(pngs, images):
    with Image.open(path) as png:
      assert png.mode == 'L'  # One channel, as the model's; tools convert it to RGB.
      np.testing.assert_array_equal(np.asarray(png), image[..., 0])  # Bit-exact.
  np.testing.assert_array_equal(np.load(tmp_path / 'samples.npz')['arr_0'], images)
  with pytest.raises(OutputFolderError, match='exists: export into a new folder'):
    export.export_samples(images[:2], tmp_path)  # Nothing of the first export is lost.


def test_a_decompression_bomb_is_refused_like_any_unreadable_image(tmp_path, monkeypatch):
  folder = tmp_path / 'mine'
  folder.mkdir()
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folder / 'a.png')
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / 'bomb.png')
  # PIL refuses more than twice this many pixels: 1600 stands for a billion-pixel header.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 700)
  with pytest.raises(
      ImageReadError,
      match=r'bomb.png cannot be read as an image \(Image size ' r'\(1600 pixels\) exceeds limit',
  ):
    image_files.load_folder(folder, 32, 1)
  assert image_files.load_folder(folder, 32, 1, skip_unreadable=True).shape == (1, 32, 32, 1)


def test_figures_have_the_promised_layout(trained):
  workdir, _ = trained
  model = inference.load_model(workdir)
  size = model.config.image_size
  cell = size + 2  # Each image and its padding.
  real = np.asarray(inference.sample(model, 4, jax.random.PRNGKey(1)))
  assert figures.samples(model, 3, jax.random.PRNGKey(0)).shape == (3 * cell + 2,) * 2 + (1,)
  assert figures.interpolations(model, real, steps=5).shape == (2 * cell + 2, 7 * cell + 2, 1)
  vector = inference.attribute_vector(model, real[:2], real[2:])
  assert figures.attribute_arithmetic(model, real[:3], vector, [1.0, 2.0]).shape == (
      3 * cell + 2,
      4 * cell + 2,
      1,
  )
  z0, z1 = jnp.ones(8), -jnp.ones(8).at[0].set(2.0)
  for method in ('linear', 'slerp'):
    path = inference.interpolate(z0, z1, 5, method)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)
  slerp = inference.interpolate(z0, z0.at[1].set(-1.0), 5, 'slerp')  # Equal norms.
  np.testing.assert_allclose(jnp.linalg.norm(slerp, axis=1), jnp.sqrt(8.0), rtol=1e-5)


@pytest.mark.slow
def test_command_line_writes_four_figures_and_reports_bad_input(trained, tmp_path):
  workdir, _ = trained
  before = _snapshot(workdir)
  env = None

  def run(*args):
    return subprocess.run(
        [sys.executable, 'sample.py', '--workdir', str(workdir), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

  done = run('--outdir', str(tmp_path / 'figures'), '--num', '4')
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ('samples', 'reconstructions', 'interpolations', 'attributes'):
    image = np.asarray(Image.open(tmp_path / 'figures' / f'{name}.png'))
    assert image.ndim == 2 and image.std() > 0, name

  exported = run('--export', str(tmp_path / 'export'), '--export_num', '12', '--seed', '3')
  assert exported.returncode == 0, exported.stderr[-3000:]
  model = inference.load_model(workdir)  # The same samples as the library exports.
  expected = export.quantised_samples(model, 12, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(np.load(tmp_path / 'export' / 'samples.npz')['arr_0'], expected)
  assert len(list((tmp_path / 'export' / 'png').iterdir())) == 12
  assert not (tmp_path / 'figures' / 'export').exists()

  bad = run('--outdir', str(tmp_path / 'bad'), '--step', '3')
  assert bad.returncode != 0
  assert 'error: ' in bad.stderr and 'no checkpoint of step 3' in bad.stderr
  assert 'Traceback' not in bad.stderr
  assert not (tmp_path / 'bad').exists()
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_command_line_refuses_bad_flags_and_images_with_a_message(trained, tmp_path):
  workdir, _ = trained
  before = _snapshot(workdir)
  outdir = tmp_path / 'figures'

  def run(*args):
    return run_script('sample.py', '--workdir', workdir, '--outdir', outdir, *args)

  def assert_refused(result, *phrases):
    assert result.returncode != 0, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'Traceback' not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
      assert phrase in last, (phrase, last)
    assert not outdir.exists()  # Nothing written.

  empty, corrupt, tiny_images = (tmp_path / name for name in ('empty', 'corrupt', 'tiny'))
  for folder in (empty, corrupt, tiny_images):
    folder.mkdir()
  (corrupt / 'a.png').write_bytes(b'not a png')
  for i in range(2):
    Image.fromarray(np.full((2, 3), 60 * i + 50, np.uint8)).save(tiny_images / f'{i}.png')

  assert_refused(run('--num', '0'), '--num=0: must be >= 1')
  assert_refused(run('--temperature', 'nan'), '--temperature=nan: must be a finite number > 0')
  assert_refused(run('--figures', 'samples,bogus'), "unknown ['bogus']", 'samples')
  assert_refused(run('--with_attribute', tmp_path), '--with_attribute and --without_attribute')
  assert_refused(run('--images', empty), 'holds no image files')
  assert_refused(run('--images', tmp_path / 'missing'), 'is not a folder of images')
  assert_refused(
      run('--images', corrupt, '--figures', 'reconstructions'),
      'a.png cannot be read as an image',
      '--skip_unreadable',
  )
  assert_refused(
      run('--images', corrupt, '--figures', 'reconstructions', '--skip_unreadable'),
      'holds no readable image',
  )

  (tmp_path / 'a_file').write_text('')
  assert_refused(run('--outdir', tmp_path / 'a_file'), 'a_file is a file, not a folder')
  damaged = tmp_path / 'damaged'
  shutil.copytree(workdir, damaged)
  damage_array_files(damaged / 'checkpoints' / '40')
  for script in ('sample.py', 'evaluate.py'):
    assert_refused(
        run_script(script, '--workdir', damaged),
        'checkpoint of step 40',
        'cannot be read',
        '--step with another checkpoint: 20',
    )

  # Images far smaller than the model's are upsampled, as training would: it draws them.
  done = run('--images', tiny_images, '--figures', 'reconstructions,interpolations', '--num', '2')
  assert done.returncode == 0, done.stderr[-3000:]
  for name in ('reconstructions', 'interpolations'):
    figure = np.asarray(Image.open(outdir / f'{name}.png'))
    assert figure.ndim == 2 and figure.std() > 0, name
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_a_moving_average_is_saved_sampled_from_and_resumed(tiny_digits_config, tmp_path):
  config = tiny_digits_config
  config.ema_decay = 0.5
  state = jax.device_get(train.train_and_evaluate(config, tmp_path))
  model, weights = inference.load_model(tmp_path), inference.load_model(tmp_path, use_ema=False)
  assert model.uses_ema and not weights.uses_ema
  for name in ('encoder', 'decoder'):
    jax.tree.map(np.testing.assert_array_equal, model.variables[name], state.ema[name])
    jax.tree.map(
        np.testing.assert_array_equal,
        weights.variables[name]['params'],
        getattr(state, name).params,
    )
  assert not np.allclose(
      model.variables['decoder']['params']['Dense_0']['kernel'],
      state.decoder.params['Dense_0']['kernel'],
  )
  assert 'discriminator' not in state.ema  # Dis is not sampled from.

  config.num_train_steps = 6
  resumed = jax.device_get(train.train_and_evaluate(config, tmp_path))
  assert int(resumed.step) == 6 and all(
      np.all(np.isfinite(x)) for x in jax.tree.leaves(resumed.ema)
  )
  config.ema_decay = 0.0  # The state would lose a part: refused, the workdir untouched.
  with pytest.raises(WorkdirMismatchError, match=r'ema_decay > 0 is True there and False here'):
    train.train_and_evaluate(config, tmp_path)
