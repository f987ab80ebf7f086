"""The Fréchet distance's math, the cached classifier, and evaluate.py on trained baselines."""

import json
import os
import subprocess
import sys
import types
import urllib.error

import jax
import numpy as np
import pytest
import scipy.linalg

from configs import digits
from tests.helpers import ROOT, tiny
from vaegan_jax import classifier as classifier_lib
from vaegan_jax import clean_fid_worker
from vaegan_jax import datasets
from vaegan_jax import evaluation
from vaegan_jax import frechet
from vaegan_jax import image_format
from vaegan_jax import image_grid
from vaegan_jax import inception
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import kid
from vaegan_jax import spectrum
from vaegan_jax import train
from vaegan_jax.errors import ConfigError


def _random_covariance(rng, dim, rank=None):
  factor = rng.normal(size=(dim, rank or dim))
  return factor @ factor.T / dim


def _scipy_frechet(mu1, sigma1, mu2, sigma2):
  """The textbook formula with a general matrix square root (as pytorch-fid computes it)."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * np.real(covmean)))


@pytest.mark.parametrize('dim', [1, 3, 8])
def test_frechet_distance_matches_scipy_sqrtm(dim):
  rng = np.random.default_rng(dim)
  for _ in range(5):
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1, sigma2 = _random_covariance(rng, dim), _random_covariance(rng, dim)
    np.testing.assert_allclose(
        frechet.frechet_distance(mu1, sigma1, mu2, sigma2),
        _scipy_frechet(mu1, sigma1, mu2, sigma2),
        rtol=1e-7,
        atol=1e-9,
    )


def test_frechet_distance_of_known_gaussians():
  # Diagonal covariances: d^2 = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([3.0, 1.0, 0.0])
  expected = 9.0 + 4.0 + (1 + 1 + 2.5**2)
  assert frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
  # Symmetric, zero for a Gaussian and itself, even a singular one (rank 2 of 6).
  rng = np.random.default_rng(0)
  singular = _random_covariance(rng, 6, rank=2)
  full = _random_covariance(rng, 6)
  mu = rng.normal(size=6)
  assert frechet.frechet_distance(mu, singular, mu, singular) == pytest.approx(0, abs=1e-9)
  assert frechet.frechet_distance(mu, singular, 0 * mu, full) == pytest.approx(
      frechet.frechet_distance(0 * mu, full, mu, singular)
  )
  assert frechet.frechet_distance(mu, singular, 0 * mu, full) == pytest.approx(
      _scipy_frechet(mu, singular, 0 * mu, full), rel=1e-6
  )


def test_features_distance_estimates_the_distance_of_the_sampled_gaussians():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200_000, 2))
  y = rng.normal(size=(200_000, 2)) * np.array([2.0, 1.0]) + np.array([1.0, 0.0])
  # ||(1, 0)||^2 + (1 - 2)^2 + (1 - 1)^2 = 2.
  assert frechet.features_distance(x, y) == pytest.approx(2.0, abs=0.03)
  with pytest.raises(ValueError, match='N >= 2'):
    frechet.features_distance(x[:1], y[:1])


@pytest.fixture(scope='module')
def eval_config(tfds_data_dir, tmp_path_factory):
  config = tiny(digits.get_config())
  config.data_dir = tfds_data_dir
  config.eval.classifier_dir = str(tmp_path_factory.mktemp('classifiers'))
  config.eval.classifier_steps = 300
  config.eval.num_samples = 200
  return config


@pytest.fixture(scope='module')
def digits_classifier(eval_config):
  builder = datasets.get_builder(eval_config)
  return classifier_lib.load_or_train(eval_config, builder)


def test_classifier_is_trained_once_and_cached(eval_config, digits_classifier, monkeypatch):
  assert digits_classifier.test_accuracy > 0.85  # Of 300 test digits, after 300 steps.
  metadata = json.loads((digits_classifier.path / 'metadata.json').read_text())
  assert metadata['test_accuracy'] == digits_classifier.test_accuracy
  monkeypatch.setattr(classifier_lib, 'train', lambda *a, **k: pytest.fail('retrained'))
  builder = datasets.get_builder(eval_config)
  again = classifier_lib.load_or_train(eval_config, builder)
  images, labels = input_pipeline.labelled_images(
      builder, image_format.from_config(eval_config), 'test', 'label'
  )
  assert classifier_lib.accuracy(again, images, labels) == digits_classifier.test_accuracy


def test_a_dataset_without_the_label_is_refused(eval_config):
  config = eval_config.copy_and_resolve_references()
  config.eval.label_key = 'digit'
  builder = datasets.get_builder(config)
  with pytest.raises(ConfigError, match="label_key='digit' is not a class label.*'label'"):
    input_pipeline.labelled_images(builder, image_format.from_config(config), 'test', 'digit')
  assert evaluation.load_classifier(config, builder) is None


def _pooled_features(images: np.ndarray) -> np.ndarray:
  """A stand-in for the Inception network: the means of 4x4 blocks of uint8 RGB images."""
  assert images.dtype == np.uint8 and images.shape[-1] == 3
  n, h, w, _ = images.shape
  return images.reshape(n, h // 4, 4, w // 4, 4, 3).mean(axis=(2, 4)).reshape(n, -1)


def _train(eval_config, model, every_steps, workdir):
  """A tiny 8-step run (checkpoints at 4 and 8), evaluated during training every_steps."""
  config = eval_config.copy_and_resolve_references()
  config.model = model
  config.num_train_steps = 8
  config.checkpoint_every_steps = 4
  config.eval.every_steps = every_steps
  if every_steps:  # Inception metrics too, in a stand-in's features (no weights here).
    config.eval.inception = True
    config.eval.inception_num_real = 100
    config.eval.inception_dir = str(workdir / 'inception')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(inception, 'clean_fid_extractor', lambda mode: _pooled_features)
    train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def vaegan_run(eval_config, digits_classifier, tmp_path_factory):
  del digits_classifier  # Trained and cached first.
  return _train(eval_config, 'vaegan', 4, tmp_path_factory.mktemp('vaegan'))


@pytest.fixture(scope='module')
def gan_run(eval_config, digits_classifier, tmp_path_factory):
  del digits_classifier
  return _train(eval_config, 'gan', 0, tmp_path_factory.mktemp('gan'))


def test_training_evaluates_when_configured(vaegan_run):
  workdir = vaegan_run
  assert sorted(p.name for p in (workdir / 'eval').iterdir()) == [
      'step_000004.json',
      'step_000008.json',
  ]
  metrics = json.loads((workdir / 'eval' / 'step_000008.json').read_text())
  assert metrics['step'] == 8 and metrics['num_samples'] == 200 and metrics['num_real'] == 200
  # Eight steps of a tiny network are far from the data; real images are close to it.
  assert metrics['frechet/samples'] > 3 * metrics['frechet/train_vs_test'] > 0
  assert metrics['frechet/reconstructions'] > metrics['frechet/train_vs_test']
  assert 0 < metrics['reconstruction/mse'] < 4 and metrics['kl'] > 0
  assert metrics['inception/num_real'] == 100 and metrics['inception/fid'] > 0


def test_reconstruction_metrics_are_what_they_say(eval_config, vaegan_run, digits_classifier):
  """The reconstruction figures recomputed here from the checkpoint, image by image."""
  model = inference.load_model(vaegan_run)
  builder = datasets.get_builder(model.config)
  real, labels = input_pipeline.labelled_images(
      builder, image_format.from_config(model.config), 'test', 'label', 200
  )
  mu, logvar = inference.encode(model, real)
  recons = np.asarray(inference.decode(model, mu))
  logits, _ = classifier_lib.apply(digits_classifier, recons)
  metrics = json.loads((vaegan_run / 'eval' / 'step_000008.json').read_text())
  assert metrics['reconstruction/classifier_accuracy'] == pytest.approx(
      np.mean(np.argmax(logits, axis=-1) == labels), abs=1e-6
  )
  assert metrics['reconstruction/mse'] == pytest.approx(np.mean((recons - real) ** 2), rel=1e-4)
  kl = -0.5 * np.sum(1 + logvar - np.square(mu) - np.exp(logvar), axis=-1)
  assert metrics['kl'] == pytest.approx(float(np.mean(kl)), rel=1e-4)


def test_the_frechet_distance_tells_real_digits_from_noise(eval_config, digits_classifier):
  """Held-out digits score near the train-vs-test floor; noise and blurred digits far
  worse, and worse the further from the data."""
  builder = datasets.get_builder(eval_config)
  train_images, _ = input_pipeline.labelled_images(
      builder, image_format.from_config(eval_config), 'train', 'label', 600
  )
  test_images, _ = input_pipeline.labelled_images(
      builder, image_format.from_config(eval_config), 'test', 'label', 300
  )
  features = lambda x: classifier_lib.apply(digits_classifier, np.asarray(x, np.float32))[1]
  real = features(test_images)
  floor = frechet.features_distance(real, features(train_images[:300]))
  held_out = frechet.features_distance(real, features(train_images[300:600]))
  noise = np.random.default_rng(0).uniform(-1, 1, test_images.shape)
  blurred = jax.image.resize(
      jax.image.resize(train_images[:300], (300, 8, 8, 1), 'linear'),
      train_images[:300].shape,
      'linear',
  )
  assert held_out < 2 * floor
  assert frechet.features_distance(real, features(blurred)) > 3 * floor
  assert frechet.features_distance(real, features(noise)) > 10 * frechet.features_distance(
      real, features(blurred)
  )


def test_evaluating_a_checkpoint_matches_evaluating_in_training(
    eval_config, vaegan_run, digits_classifier
):
  workdir = vaegan_run
  model = inference.load_model(workdir)
  model.config.eval.classifier_dir = eval_config.eval.classifier_dir
  builder = datasets.get_builder(model.config)
  metrics = evaluation.evaluate(
      model, builder, digits_classifier, jax.random.PRNGKey(eval_config.seed + 2)
  )
  during = json.loads((workdir / 'eval' / 'step_000008.json').read_text())
  for name, value in metrics.items():
    assert value == pytest.approx(during[name], rel=1e-4), name


@pytest.mark.slow
def test_command_line_scores_a_gan_without_reconstruction_metrics(gan_run, eval_config, tmp_path):
  workdir = gan_run
  assert not (workdir / 'eval').exists()  # every_steps=0: not during training.
  env = None
  done = subprocess.run(
      [sys.executable, 'evaluate.py', '--workdir', str(workdir), '--num_samples', '100'],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  metrics = json.loads((workdir / 'eval' / 'step_000008.json').read_text())
  assert metrics['num_samples'] == 100
  # The sample metrics only: a GAN has no encoder to reconstruct with.
  assert {
      'frechet/samples',
      'frechet/samples_vs_train',
      'kid/samples',
      'samples/confidence',
      'samples/class_entropy',
      'samples/sharpness',
  } <= set(metrics)
  assert not any(
      k.startswith('reconstruction/') or k in ('kl', 'frechet/reconstructions') for k in metrics
  )
  assert 'frechet/samples' in done.stdout
  assert any(p.name.startswith('events.out.tfevents') for p in workdir.iterdir())

  missing = subprocess.run(
      [sys.executable, 'evaluate.py', '--workdir', str(workdir / 'nothing')],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert missing.returncode != 0 and 'error: ' in missing.stderr
  assert 'Traceback' not in missing.stderr

  # --inception where clean-fid cannot be imported (a stand-in package that fails):
  # refused with what to install, before anything is scored or written.
  hidden = _package_failing_with(tmp_path / 'no_clean_fid', 'ImportError("hidden by the test")')
  before = sorted((workdir / 'eval').iterdir())
  refused = subprocess.run(
      [sys.executable, 'evaluate.py', '--workdir', str(workdir), '--inception'],
      cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': str(hidden)},
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert refused.returncode != 0 and 'pip install -r requirements-fid.txt' in refused.stderr
  assert 'Traceback' not in refused.stderr
  assert sorted((workdir / 'eval').iterdir()) == before


def test_kernel_distance_is_unbiased_and_grows_with_the_difference():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
  same, spread = kid.kernel_distance(x, y, num_subsets=20, subset_size=200)
  assert abs(same) < 3 * spread  # Zero in expectation for one distribution, any size.
  near, _ = kid.kernel_distance(x, y + 0.2, num_subsets=20, subset_size=200)
  far, _ = kid.kernel_distance(x, y + 1.0, num_subsets=20, subset_size=200)
  assert same < near < far and near > 3 * spread
  # The estimate written out term by term, on a few rows.
  a, b = x[:5], y[:6] + 0.5
  k = lambda u, v: (u @ v / 8 + 1) ** 3
  expected = (
      sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
      + sum(k(b[i], b[j]) for i in range(6) for j in range(6) if i != j) / 30
      - 2 * sum(k(a[i], b[j]) for i in range(5) for j in range(6)) / 30
  )
  assert kid.unbiased_mmd2(a, b) == pytest.approx(expected)


def test_sharpness_sees_blur_and_noise():
  rng = np.random.default_rng(0)
  sharp = np.sign(rng.normal(size=(8, 32, 32, 1)))  # Edges everywhere.
  blurred = np.asarray(
      jax.image.resize(jax.image.resize(sharp, (8, 8, 8, 1), 'linear'), sharp.shape, 'linear')
  )
  fractions = spectrum.high_frequency_fraction(np.concatenate([sharp, blurred]))
  assert np.all(fractions[:8] > 0.7) and np.all(fractions[8:] < 0.2)
  assert spectrum.high_frequency_fraction(np.ones((1, 32, 32, 3))).tolist() == [0.0]
  assert spectrum.sharpness_ratio(blurred, sharp) < 0.3 < spectrum.sharpness_ratio(sharp, sharp)


def test_class_statistics_of_confident_and_of_collapsed_samples():
  one_hot = 50.0 * np.eye(10)[np.arange(100) % 10]  # Every class, each for certain.
  stats = evaluation.class_statistics(one_hot)
  assert stats['confidence'] == pytest.approx(1.0)
  assert stats['class_entropy'] == pytest.approx(np.log(10))
  assert stats['classifier_score'] == pytest.approx(10.0, rel=1e-4)
  collapsed = evaluation.class_statistics(50.0 * np.eye(10)[np.zeros(100, int)])
  assert collapsed['class_entropy'] == 0.0
  assert collapsed['classifier_score'] == pytest.approx(1.0)
  unsure = evaluation.class_statistics(np.zeros((100, 10)))
  assert unsure['confidence'] == pytest.approx(0.1)
  assert unsure['classifier_score'] == pytest.approx(1.0)


def test_inception_metrics_up_to_the_network(eval_config, vaegan_run, tmp_path):
  """Everything but Inception's weights, with a stand-in feature extractor: what it is
  given, the cached reference statistics, and the distances evaluate() reports."""
  config = eval_config.copy_and_resolve_references()
  config.eval.inception_num_real = 250
  config.eval.inception_dir = str(tmp_path)
  seen = []
  extractor = lambda images: seen.append(images) or _pooled_features(images)
  builder = datasets.get_builder(config)
  scorer = inception.load_scorer(config, builder, extractor, 'pooled')

  # The first 250 training digits, as uint8 PNGs of them read as RGB would hold them.
  images = image_format.from_config(config)
  train_digits = input_pipeline.fixed_images(builder, images, 'train', 250)
  np.testing.assert_array_equal(
      np.concatenate(seen), np.repeat(image_grid.to_uint8(train_digits), 3, axis=-1)
  )
  assert scorer.num_real == 250 and scorer.kid_features.shape == (250, 192)
  assert (tmp_path / inception.cache_name(config, 'pooled')).exists()
  seen.clear()
  cached = inception.load_scorer(config, builder, extractor, 'pooled')
  assert not seen  # The reference set is not read again.
  np.testing.assert_array_equal(cached.sigma, scorer.sigma)

  test_digits = input_pipeline.fixed_images(builder, images, 'test', 250)
  near = inception.metrics(scorer, test_digits)
  noise = inception.metrics(scorer, np.random.default_rng(0).uniform(-1, 1, test_digits.shape))
  expected = frechet.features_distance(
      _pooled_features(inception.as_rgb_uint8(train_digits)),
      _pooled_features(inception.as_rgb_uint8(test_digits)),
  )
  assert near['inception/fid'] == pytest.approx(expected, rel=1e-6)
  assert noise['inception/fid'] > 10 * near['inception/fid']
  assert noise['inception/kid'] > 10 * max(near['inception/kid'], near['inception/kid_std'])

  model = inference.load_model(vaegan_run)
  metrics = evaluation.evaluate(model, builder, None, jax.random.PRNGKey(0), scorer)
  assert metrics['inception/fid'] > near['inception/fid'] and metrics['inception/num_real'] == 250
  assert {'inception/kid', 'inception/kid_std'} <= set(metrics)


def _fake_clean_fid(monkeypatch, build_feature_extractor):
  """clean-fid's modules (and torch's one call) as far as clean_fid_worker.py reaches them."""
  modules = {
      'cleanfid': types.ModuleType('cleanfid'),
      'cleanfid.features': types.SimpleNamespace(build_feature_extractor=build_feature_extractor),
      'cleanfid.resize': types.SimpleNamespace(build_resizer=lambda mode: lambda x: x),
      'cleanfid.downloads_helper': types.SimpleNamespace(inception_url='https://example/i.pt'),
      'torch': types.SimpleNamespace(
          cuda=types.SimpleNamespace(is_available=lambda: False), device=str
      ),
  }
  for name, module in modules.items():
    monkeypatch.setitem(sys.modules, name, module)


def _unreachable(*args, **kwargs):
  raise urllib.error.URLError('[Errno -3] Temporary failure in name resolution')


def _cut_short(*args, **kwargs):
  raise RuntimeError('PytorchStreamReader failed reading zip archive')


def _package_failing_with(directory, error: str):
  """A `cleanfid` package in `directory` whose import raises `error`."""
  (directory / 'cleanfid').mkdir(parents=True)
  (directory / 'cleanfid' / '__init__.py').write_text(f'raise {error}\n')
  return directory


def test_without_clean_fid_or_its_weights_the_error_says_what_to_do(
    eval_config, monkeypatch, tmp_path
):
  unavailable = clean_fid_worker.Unavailable
  monkeypatch.setitem(sys.modules, 'cleanfid', None)  # Not installed.
  with pytest.raises(unavailable, match='pip install -r requirements-fid'):
    clean_fid_worker.build_extractor('clean')
  # Installed, but failing on import (as torchvision does when it is not torch's build).
  broken = _package_failing_with(
      tmp_path / 'broken', 'RuntimeError("operator torchvision::nms does not exist")'
  )
  monkeypatch.syspath_prepend(str(broken))
  monkeypatch.delitem(sys.modules, 'cleanfid')
  with pytest.raises(
      unavailable, match='cannot be imported .RuntimeError: operator torchvision::nms.*reinstall'
  ):
    clean_fid_worker.build_extractor('clean')
  _fake_clean_fid(monkeypatch, _unreachable)
  with pytest.raises(
      unavailable,
      match=r'Could not fetch .*name resolution.*download https://example/i.pt and copy it '
      'to /tmp/inception-2015-12-05.pt',
  ):
    clean_fid_worker.build_extractor('clean')
  _fake_clean_fid(monkeypatch, _cut_short)
  with pytest.raises(unavailable, match='delete that file and run again'):
    clean_fid_worker.build_extractor('clean')

  # The same message through the child process that evaluation starts.
  config = eval_config.copy_and_resolve_references()
  config.eval.inception = True
  config.eval.inception_dir = str(tmp_path / 'statistics')
  builder = datasets.get_builder(config)
  monkeypatch.setenv('PYTHONPATH', str(broken))
  with pytest.raises(
      inception.InceptionUnavailableError, match='cannot be imported .RuntimeError: operator'
  ):
    evaluation.load_inception(config, builder)
  assert not (tmp_path / 'statistics').exists()  # Nothing half written.
  config.eval.inception = False
  assert evaluation.load_inception(config, builder) is None


_FAKE_TORCH = """
import contextlib

class _Tensor:
  def __init__(self, array):
    self.array = array
  def to(self, device):
    return self
  def cpu(self):
    return self
  def numpy(self):
    return self.array

def from_numpy(array):
  return _Tensor(array)

def device(name):
  return name

no_grad = contextlib.nullcontext

class cuda:
  @staticmethod
  def is_available():
    return False
"""

_FAKE_FEATURES = """
import numpy as np

def build_feature_extractor(mode, device, use_dataparallel):
  print('clean-fid talks on stdout', flush=True)  # Must not reach the parent's answers.
  def model(batch):
    images = batch.array
    assert images.dtype == np.float32 and images.shape[1] == 3, images.shape
    print('batch', images.shape)
    return type(batch)(images.mean(axis=(2, 3)) + (images[:, :, 0, 0] == 255))
  return model
"""


def test_features_come_back_from_the_child_process(tmp_path, monkeypatch):
  """The child's whole round trip, with fake clean-fid and torch packages: images go in
  as NCHW float32 in [0, 255], features come back in order, whatever the libraries print."""
  fakes = tmp_path / 'fakes'
  for package, text in (
      ('torch', _FAKE_TORCH),
      ('cleanfid', ''),
      ('cleanfid/features', _FAKE_FEATURES),
      ('cleanfid/resize', 'def build_resizer(mode):\n  return lambda x: x\n'),
  ):
    path = fakes / (package + ('/__init__.py' if package in ('torch', 'cleanfid') else '.py'))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  monkeypatch.setenv('PYTHONPATH', str(fakes))
  extract = inception.clean_fid_extractor('clean')
  images = np.random.default_rng(0).integers(0, 256, (300, 64, 64, 3), dtype=np.uint8)
  for chunk in (images, images[:7]):  # 3.7 MB, more than a pipe holds; then a small one.
    features = extract(chunk)
    expected = chunk.astype(np.float32).mean(axis=(1, 2)) + (chunk[:, 0, 0] == 255)
    np.testing.assert_allclose(features, expected, rtol=1e-6)
