"""Inception FID and KID: the figures papers report, in clean-fid's Inception features.

The features are clean-fid's (Parmar et al. 2022, github.com/GaParmar/clean-fid):
the TensorFlow Inception-v3 of 2015-12-05 (as StyleGAN2-ADA's metrics ship it), 2048
pool features per image, fetched by clean-fid into /tmp the first time, and run in
a child process (clean_fid_worker.py). Its "clean"
mode (the default, config.eval.inception_mode) resizes each image to 299x299 with
PIL's bicubic filter in float32; "legacy_tensorflow" resizes inside the network as
the original TensorFlow FID code did (comparable with older papers' tables).

What is scored, for any dataset: config.eval.num_samples prior samples against
config.eval.inception_num_real images of config.train_split (the first ones, in
file order), both brought to uint8 exactly as a PNG of them would be: real images
through the run's own preprocessing (crop, resize to config.image_size), samples
quantised by image_grid.to_uint8. Grey images are repeated to three channels, as
reading their PNGs as RGB does. The reference's mean and covariance (and 10,000
feature rows for KID) are cached per dataset, split, size, crop, count and mode in
config.eval.inception_dir (default ~/.cache/vaegan_jax/inception). The distances
are frechet.py's and kid.py's (unbiased KID over 10 subsets of 1,000).

Installing clean-fid (and PyTorch) is optional: pip install -r requirements-fid.txt.
"""

from collections.abc import Callable, Iterator
import dataclasses
import os
import re
import subprocess
import sys
import weakref

from absl import logging
from etils import epath
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vaegan_jax import clean_fid_worker
from vaegan_jax import frechet
from vaegan_jax import image_format
from vaegan_jax import image_grid
from vaegan_jax import input_pipeline
from vaegan_jax import kid
from vaegan_jax.errors import UserError

# uint8 [N, H, W, 3] images -> float [N, D] features.
FeatureExtractor = Callable[[np.ndarray], np.ndarray]

MODES = ('clean', 'legacy_tensorflow')  # Both with the TorchScript weights of 2015-12-05.
KID_ROWS = 10_000  # Reference feature rows kept for KID: 10 subsets of 1,000.
_CHUNK = 500  # Images per batch through the pipeline and the network.
_VERSION = 1  # Bump when what the cache holds, or how it is computed, changes.


class InceptionUnavailableError(UserError):
  """clean-fid is not installed, or its Inception weights cannot be fetched."""


@dataclasses.dataclass(frozen=True)
class Scorer:
  """A feature extractor and the reference set's statistics in its features."""

  features: FeatureExtractor
  mu: np.ndarray
  sigma: np.ndarray
  kid_features: np.ndarray
  num_real: int


def default_directory() -> epath.Path:
  return epath.Path(os.path.expanduser('~/.cache/vaegan_jax/inception'))


def clean_fid_extractor(mode: str = 'clean') -> FeatureExtractor:
  """clean-fid's Inception features in `mode`, computed by a child process
  (clean_fid_worker.py: PyTorch and TensorFlow cannot share one).

  Raises InceptionUnavailableError, saying what to do, when clean-fid is missing or
  broken, or the weights cannot be fetched (no network) or read.
  """
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [package_root, env.get('PYTHONPATH')]))
  worker = subprocess.Popen(
      [sys.executable, '-m', 'vaegan_jax.clean_fid_worker', mode],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      env=env,
  )
  status = worker.stdout.readline().decode(errors='replace').strip()
  if status != 'ok':
    _stop(worker)
    raise InceptionUnavailableError(
        status or f'The clean-fid process ended with status {worker.returncode}; see above.'
    )

  def extract(images: np.ndarray) -> np.ndarray:
    try:
      clean_fid_worker.send_array(worker.stdin, np.asarray(images, np.uint8))
      features = clean_fid_worker.receive_array(worker.stdout)
    except (OSError, EOFError):  # A broken pipe, or an answer cut off.
      features = None
    if features is None:
      _stop(worker)
      raise InceptionUnavailableError(
          f'The clean-fid process ended (status {worker.returncode}) before it answered; '
          'its messages are above.'
      )
    return features

  # The child (and the GPU memory it holds) goes when the extractor does, or at exit.
  weakref.finalize(extract, _stop, worker)
  return extract


def _stop(worker: subprocess.Popen) -> None:
  try:
    worker.stdin.close()  # The child's loop ends at the end of its input.
  except OSError:  # It has gone already.
    pass
  try:
    worker.wait(timeout=30)
  except subprocess.TimeoutExpired:
    worker.kill()
    worker.wait()
  worker.stdout.close()


def as_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] -> uint8 with three channels, as their PNGs read as RGB."""
  images = image_grid.to_uint8(images)
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def cache_name(config: ml_collections.ConfigDict, extractor_name: str) -> str:
  """What the reference statistics depend on, as a file name."""
  crop = '-crop' + '_'.join(map(str, config.crop)) if config.crop else ''
  name = (
      f'{config.dataset}-{config.train_split}-{config.image_size}px-{config.num_channels}ch'
      f'{crop}-{config.eval.inception_num_real}-{extractor_name}-v{_VERSION}.npz'
  )
  return re.sub(r'[^A-Za-z0-9_.+-]', '_', name)


def _real_chunks(
    builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict
) -> Iterator[np.ndarray]:
  dataset = input_pipeline.preprocessed_images(
      builder, image_format.from_config(config), config.train_split
  )
  yield from dataset.take(config.eval.inception_num_real).batch(_CHUNK).as_numpy_iterator()


def reference_statistics(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    extractor: FeatureExtractor,
    extractor_name: str,
) -> dict[str, np.ndarray]:
  """mu, sigma, kid_features and num_real of the reference set; computed the first
  time (which, on a CPU, takes a while for tens of thousands of images), then cached."""
  directory = epath.Path(config.eval.inception_dir or default_directory())
  path = directory / cache_name(config, extractor_name)
  if path.exists():
    with path.open('rb') as f:
      return dict(np.load(f))
  logging.info(
      'Computing the Inception statistics of the first %d images of %s:%s; they are cached '
      'in %s.',
      config.eval.inception_num_real,
      config.dataset,
      config.train_split,
      path,
  )
  features = np.concatenate([extractor(as_rgb_uint8(x)) for x in _real_chunks(builder, config)])
  if len(features) < 2:
    raise UserError(
        f'{config.dataset}:{config.train_split} gave {len(features)} image(s): Inception '
        'statistics need at least 2.'
    )
  mu, sigma = frechet.gaussian_statistics(features)
  stats = {
      'mu': mu,
      'sigma': sigma,
      'kid_features': features[:KID_ROWS].astype(np.float32),
      'num_real': np.array(len(features)),
  }
  directory.mkdir(parents=True, exist_ok=True)
  staging = directory / f'.{path.name}.{os.getpid()}'  # Readers never see half a file.
  with staging.open('wb') as f:
    np.savez(f, **stats)
  staging.rename(path)
  return stats


def load_scorer(
    config: ml_collections.ConfigDict,
    builder: tfds.core.DatasetBuilder,
    extractor: FeatureExtractor | None = None,
    extractor_name: str | None = None,
) -> Scorer:
  """The scorer of config.eval.inception_mode's clean-fid features, or of `extractor`
  (named `extractor_name` in the cache) for another feature space."""
  if extractor is None:
    extractor = clean_fid_extractor(config.eval.inception_mode)
    extractor_name = f'cleanfid-{config.eval.inception_mode}'
  elif not extractor_name:
    raise ValueError('Name the extractor (extractor_name): its statistics are cached by it.')
  stats = reference_statistics(config, builder, extractor, extractor_name)
  return Scorer(
      extractor, stats['mu'], stats['sigma'], stats['kid_features'], int(stats['num_real'])
  )


def metrics(scorer: Scorer, samples: np.ndarray) -> dict[str, float]:
  """inception/fid, inception/kid (and its spread over subsets) of samples in [-1, 1]."""
  features = np.concatenate(
      [
          scorer.features(as_rgb_uint8(samples[i : i + _CHUNK]))
          for i in range(0, len(samples), _CHUNK)
      ]
  )
  mu, sigma = frechet.gaussian_statistics(features)
  kid_mean, kid_std = kid.kernel_distance(scorer.kid_features, features)
  return {
      'inception/fid': frechet.frechet_distance(scorer.mu, scorer.sigma, mu, sigma),
      'inception/kid': kid_mean,
      'inception/kid_std': kid_std,
      'inception/num_real': float(scorer.num_real),
  }
