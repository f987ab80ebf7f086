"""The classifier whose features score samples (the Fréchet distance) and reconstructions.

FID's Inception network knows nothing of 8x8 digits and cannot be downloaded here,
so, as is usual for digit data, a small CNN trained on the dataset itself gives the
feature space. It is trained once per (dataset, split, image size, channels, crop,
label) with a fixed seed and cached on disk, so every run of that data is scored
by the very same network; its test accuracy is kept beside it.
"""

import dataclasses
import functools
import json
import os
import re
from typing import Any

from absl import logging
from etils import epath
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow_datasets as tfds

from vaegan_jax import datasets
from vaegan_jax import image_format
from vaegan_jax import inference
from vaegan_jax import input_pipeline

SEED = 0
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
FEATURE_WIDTH = 128
_VERSION = 1  # Bump when the architecture or training changes: old caches are then unused.


class Classifier(nn.Module):
  """Three strided 3x3 convolutions and a dense layer: the features, then the logits."""

  num_classes: int

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images
    for width in (32, 64, 64):
      x = nn.relu(nn.Conv(width, (3, 3), strides=2)(x))
    features = nn.relu(nn.Dense(FEATURE_WIDTH)(x.reshape((x.shape[0], -1))))
    return nn.Dense(self.num_classes)(features), features


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
  module: Classifier
  params: Any
  test_accuracy: float
  path: epath.Path


def default_directory() -> epath.Path:
  return epath.Path(os.path.expanduser('~/.cache/vaegan_jax/classifiers'))


def cache_name(config: ml_collections.ConfigDict) -> str:
  """What the classifier depends on, as a file name."""
  crop = '-crop' + '_'.join(map(str, config.crop)) if config.crop else ''
  name = (
      f'{config.dataset}-{config.train_split}-{config.image_size}px-{config.num_channels}ch'
      f'{crop}-{config.eval.label_key}-{config.eval.classifier_steps}steps-v{_VERSION}'
  )
  return re.sub(r'[^A-Za-z0-9_.+-]', '_', name)


def apply(classifier: TrainedClassifier, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(logits, features) of images in [-1, 1]."""
  return inference.map_in_chunks(
      functools.partial(_apply_jitted, classifier.module, classifier.params), images
  )


@functools.partial(jax.jit, static_argnums=0)
def _apply_jitted(module: Classifier, params: Any, images: jax.Array):
  return module.apply({'params': params}, images)


def accuracy(classifier: TrainedClassifier, images: np.ndarray, labels: np.ndarray) -> float:
  logits, _ = apply(classifier, images)
  return float(np.mean(np.argmax(logits, axis=-1) == labels))


def train(
    images: np.ndarray, labels: np.ndarray, num_classes: int, steps: int, seed: int = SEED
) -> tuple[Classifier, Any]:
  """Adam on cross-entropy, minibatches drawn with a fixed seed."""
  module = Classifier(num_classes)
  params = module.init(jax.random.PRNGKey(seed), jnp.asarray(images[:1]))['params']
  optimizer = optax.adam(LEARNING_RATE)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits, _ = module.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  order = np.random.default_rng(seed)
  for _ in range(steps):
    index = order.integers(0, len(images), min(BATCH_SIZE, len(images)))
    params, opt_state = step(params, opt_state, images[index], labels[index])
  return module, params


def load_or_train(
    config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> TrainedClassifier:
  """The cached classifier of config's data, trained (and cached) first if there is none.

  Raises ConfigError if the dataset has no class label config.eval.label_key.
  """
  steps = config.eval.classifier_steps
  directory = epath.Path(config.eval.classifier_dir or default_directory())
  path = directory / cache_name(config)
  classes = None
  if not (path / 'params.msgpack').exists():
    images, labels = input_pipeline.labelled_images(
        builder, image_format.from_config(config), config.train_split, config.eval.label_key
    )
    classes = datasets.num_classes(builder, config.eval.label_key)
    logging.info(
        'Training the evaluation classifier of %s (%d images, %d steps); it is ' 'cached in %s.',
        config.dataset,
        len(images),
        steps,
        path,
    )
    module, params = train(images, labels, classes, steps)
    test_images, test_labels = input_pipeline.labelled_images(
        builder, image_format.from_config(config), config.eval_split, config.eval.label_key
    )
    trained = TrainedClassifier(module, params, 0.0, path)
    test_accuracy = accuracy(trained, test_images, test_labels)
    _write(
        path,
        params,
        {
            'num_classes': classes,
            'test_accuracy': test_accuracy,
            'test_split': config.eval_split,
            'train_images': len(images),
            'steps': steps,
            'seed': SEED,
        },
    )
    logging.info(
        'Evaluation classifier: %.2f%% accuracy on %s:%s.',
        100 * test_accuracy,
        config.dataset,
        config.eval_split,
    )
  metadata = json.loads((path / 'metadata.json').read_text())
  module = Classifier(metadata['num_classes'])
  template = module.init(
      jax.random.PRNGKey(0),
      jnp.zeros((1, config.image_size, config.image_size, config.num_channels)),
  )['params']
  params = flax.serialization.from_bytes(template, (path / 'params.msgpack').read_bytes())
  return TrainedClassifier(module, params, metadata['test_accuracy'], path)


def _write(path: epath.Path, params: Any, metadata: dict) -> None:
  """Writes into a temporary folder renamed into place, so readers never see half a cache."""
  path.parent.mkdir(parents=True, exist_ok=True)
  staging = path.parent / f'.{path.name}.{os.getpid()}'
  staging.mkdir(parents=True, exist_ok=True)
  (staging / 'params.msgpack').write_bytes(flax.serialization.to_bytes(params))
  (staging / 'metadata.json').write_text(json.dumps(metadata, indent=2) + '\n')
  try:
    staging.rename(path)
  except OSError:  # Another process cached it first: theirs is the same network.
    for child in staging.iterdir():
      child.unlink()
    staging.rmdir()
