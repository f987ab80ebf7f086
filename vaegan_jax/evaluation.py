"""Scores a model as the paper compares them: sample quality and reconstructions.

In the feature space of the dataset's own classifier (classifier.py):
  frechet/samples          real test images vs config.eval.num_samples prior samples
  frechet/reconstructions  real test images vs their reconstructions Dec(mu(x))
  frechet/train_vs_test    real training vs real test images: what a perfect model
                           would score with these sample sizes (the floor)
  reconstruction/classifier_accuracy  the class kept by the reconstructions
and in pixels and latents:
  reconstruction/mse       mean squared error per pixel, images in [-1, 1]
  kl                       L_prior of the test images, nats per image
A GAN (no encoder) gets the sample metrics only. Lower is better for all but the
accuracies.
"""

import json

from absl import logging
from clu import metric_writers
from etils import epath
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from vaegan_jax import classifier as classifier_lib
from vaegan_jax import frechet
from vaegan_jax import inference
from vaegan_jax import input_pipeline

Metrics = dict[str, float]


def model_samples(model: inference.Model, num: int, rng: jax.Array) -> np.ndarray:
  """`num` images Dec(z), z ~ N(0, I), in [-1, 1]."""
  latents = np.asarray(inference.prior_latents(model, num, rng))
  return inference.map_in_chunks(lambda z: inference.decode(model, z), latents)


def evaluate(model: inference.Model, builder: tfds.core.DatasetBuilder,
             classifier: classifier_lib.TrainedClassifier | None,
             rng: jax.Array) -> Metrics:
  """The metrics of the module docstring (the classifier's only with a classifier)."""
  config = model.config
  limit = config.eval.num_samples
  has_classifier = classifier is not None
  if has_classifier:
    real, labels = input_pipeline.labelled_images(builder, config, config.eval_split, limit)
  else:
    real, labels = input_pipeline.fixed_images(builder, config, limit), None
  samples = model_samples(model, config.eval.num_samples, rng)
  metrics = {'num_samples': float(len(samples)), 'num_real': float(len(real))}
  if has_classifier:
    _, real_features = classifier_lib.apply(classifier, real)
    _, sample_features = classifier_lib.apply(classifier, samples)
    train_real, _ = input_pipeline.labelled_images(builder, config, config.train_split, limit)
    _, train_features = classifier_lib.apply(classifier, train_real)
    metrics['classifier/test_accuracy'] = classifier.test_accuracy
    metrics['frechet/samples'] = frechet.features_distance(real_features, sample_features)
    metrics['frechet/train_vs_test'] = frechet.features_distance(real_features, train_features)
  if model.networks.encoder is not None:
    mu, logvar = inference.map_in_chunks(lambda x: inference.encode(model, x), real)
    recons = inference.map_in_chunks(lambda z: inference.decode(model, z), mu)
    metrics['reconstruction/mse'] = float(np.mean(np.square(recons - real)))
    metrics['kl'] = float(np.mean(-0.5 * np.sum(
        1.0 + logvar - np.square(mu) - np.exp(logvar), axis=-1)))
    if has_classifier:
      recon_logits, recon_features = classifier_lib.apply(classifier, recons)
      metrics['frechet/reconstructions'] = frechet.features_distance(real_features,
                                                                     recon_features)
      metrics['reconstruction/classifier_accuracy'] = float(
          np.mean(np.argmax(recon_logits, axis=-1) == labels))
  return dict(sorted(metrics.items()))


def load_classifier(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
                    ) -> classifier_lib.TrainedClassifier | None:
  """The dataset's evaluation classifier; None (with a warning) if it has no class label."""
  label_key = config.eval.label_key
  if label_key not in input_pipeline.class_labels(builder):
    logging.warning('%s has no class label %r (config.eval.label_key): evaluating without '
                    'the classifier metrics (Frechet distances, accuracies).', builder.name,
                    label_key)
    return None
  return classifier_lib.load_or_train(config, builder)


def write_metrics(workdir: epath.PathLike, step: int, metrics: Metrics,
                  writer: metric_writers.MetricWriter | None = None) -> epath.Path:
  """WORKDIR/eval/step_<step>.json, and the scalars as eval/<name> in TensorBoard."""
  directory = epath.Path(workdir) / 'eval'
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f'step_{step:06d}.json'
  path.write_text(json.dumps({'step': step, **metrics}, indent=2) + '\n')
  if writer is not None:
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    writer.flush()
  return path
