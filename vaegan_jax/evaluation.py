"""Scores a model as the paper compares them: sample quality and reconstructions.

In the feature space of the dataset's own classifier (classifier.py), against real
test images (and training images where said):
  frechet/samples           Fréchet distance to config.eval.num_samples prior samples
  frechet/samples_vs_train  the same against training images
  frechet/reconstructions   to the reconstructions Dec(mu(x)) of the test images
  frechet/train_vs_test     real training vs test images: what a perfect model would
                            score with these sample sizes (the floor)
  kid/samples, kid/samples_std  the kernel distance (kid.py, unbiased) to the samples,
                            and its spread over subsets; kid/train_vs_test its floor
  samples/confidence        the classifier's mean top-class probability on samples:
                            are they recognisable digits? (real/confidence: the test
                            images')
  samples/class_entropy     entropy (nats) of the histogram of the classes it sees in
                            the samples: are all classes drawn? (ln 10 = 2.303 at most)
  samples/classifier_score  exp(E_x KL(p(y|x) || p(y))), the Inception Score's formula
                            in this classifier (10 at most for ten classes)
  reconstruction/classifier_accuracy  the class kept by the reconstructions
and in pixels and latents:
  samples/sharpness         high-frequency energy of samples over real images'
                            (spectrum.py): < 1 blurrier than the data, > 1 noisier
  reconstruction/mse        mean squared error per pixel, images in [-1, 1]
  kl                        L_prior of the test images, nats per image
and, with config.eval.inception (inception.py; clean-fid installed), as papers report:
  inception/fid, inception/kid, inception/kid_std  Inception FID and KID of the
                            samples against config.eval.inception_num_real training
                            images (inception/num_real)
A GAN (no encoder) gets the sample metrics only. Lower is better for the
distances, MSE and KL; higher for confidence, entropy, score and accuracy.
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
from vaegan_jax import datasets
from vaegan_jax import frechet
from vaegan_jax import image_format
from vaegan_jax import inception
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import kid
from vaegan_jax import spectrum

Metrics = dict[str, float]


def model_samples(model: inference.Model, num: int, rng: jax.Array) -> np.ndarray:
  """`num` images Dec(z), z ~ N(0, I), in [-1, 1]."""
  latents = np.asarray(inference.prior_latents(model, num, rng))
  return inference.map_in_chunks(lambda z: inference.decode(model, z), latents)


def class_statistics(logits: np.ndarray) -> dict[str, float]:
  """What a classifier makes of a set of images: confidence, class entropy and score."""
  probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
  probabilities /= probabilities.sum(axis=-1, keepdims=True)
  counts = np.bincount(np.argmax(logits, axis=-1), minlength=logits.shape[-1])
  histogram = counts / counts.sum()
  marginal = probabilities.mean(axis=0)
  kl = np.sum(probabilities * (np.log(probabilities + 1e-12) - np.log(marginal + 1e-12)), axis=-1)
  return {
      'confidence': float(np.mean(probabilities.max(axis=-1))),
      'class_entropy': float(-np.sum(histogram[histogram > 0] * np.log(histogram[histogram > 0]))),
      'classifier_score': float(np.exp(np.mean(kl))),
  }


def evaluate(
    model: inference.Model,
    builder: tfds.core.DatasetBuilder,
    classifier: classifier_lib.TrainedClassifier | None,
    rng: jax.Array,
    inception_scorer: inception.Scorer | None = None,
) -> Metrics:
  """The metrics of the module docstring (the classifier's only with a classifier, the
  Inception ones only with a scorer)."""
  config = model.config
  images = image_format.from_config(config)
  limit, label_key = config.eval.num_samples, config.eval.label_key
  has_classifier = classifier is not None
  if has_classifier:
    real, labels = input_pipeline.labelled_images(
        builder, images, config.eval_split, label_key, limit
    )
  else:
    real, labels = input_pipeline.fixed_images(builder, images, config.eval_split, limit), None
  samples = model_samples(model, config.eval.num_samples, rng)
  metrics = {
      'num_samples': float(len(samples)),
      'num_real': float(len(real)),
      'samples/sharpness': spectrum.sharpness_ratio(samples, real),
  }
  if has_classifier:
    real_logits, real_features = classifier_lib.apply(classifier, real)
    sample_logits, sample_features = classifier_lib.apply(classifier, samples)
    train_real, _ = input_pipeline.labelled_images(
        builder, images, config.train_split, label_key, limit
    )
    _, train_features = classifier_lib.apply(classifier, train_real)
    metrics['classifier/test_accuracy'] = classifier.test_accuracy
    metrics['frechet/samples'] = frechet.features_distance(real_features, sample_features)
    metrics['frechet/samples_vs_train'] = frechet.features_distance(train_features, sample_features)
    metrics['frechet/train_vs_test'] = frechet.features_distance(real_features, train_features)
    metrics['kid/samples'], metrics['kid/samples_std'] = kid.kernel_distance(
        real_features, sample_features
    )
    metrics['kid/train_vs_test'], _ = kid.kernel_distance(real_features, train_features)
    metrics.update({f'samples/{k}': v for k, v in class_statistics(sample_logits).items()})
    metrics.update({f'real/{k}': v for k, v in class_statistics(real_logits).items()})
  if inception_scorer is not None:
    metrics.update(inception.metrics(inception_scorer, samples))
  if model.networks.encoder is not None:
    mu, logvar = inference.map_in_chunks(lambda x: inference.encode(model, x), real)
    recons = inference.map_in_chunks(lambda z: inference.decode(model, z), mu)
    metrics['reconstruction/mse'] = float(np.mean(np.square(recons - real)))
    metrics['kl'] = float(
        np.mean(-0.5 * np.sum(1.0 + logvar - np.square(mu) - np.exp(logvar), axis=-1))
    )
    if has_classifier:
      recon_logits, recon_features = classifier_lib.apply(classifier, recons)
      metrics['frechet/reconstructions'] = frechet.features_distance(real_features, recon_features)
      metrics['reconstruction/classifier_accuracy'] = float(
          np.mean(np.argmax(recon_logits, axis=-1) == labels)
      )
  return dict(sorted(metrics.items()))


def load_classifier(
    config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> classifier_lib.TrainedClassifier | None:
  """The dataset's evaluation classifier; None (with a warning) if it has no class label."""
  label_key = config.eval.label_key
  if label_key not in datasets.class_labels(builder):
    logging.warning(
        '%s has no class label %r (config.eval.label_key): evaluating without '
        'the classifier metrics (Frechet distances, accuracies).',
        builder.name,
        label_key,
    )
    return None
  return classifier_lib.load_or_train(config, builder)


def load_inception(
    config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder
) -> inception.Scorer | None:
  """With config.eval.inception, the Inception scorer (its reference statistics computed
  and cached the first time); else None."""
  return inception.load_scorer(config, builder) if config.eval.inception else None


def write_metrics(
    workdir: epath.PathLike,
    step: int,
    metrics: Metrics,
    writer: metric_writers.MetricWriter | None = None,
) -> epath.Path:
  """WORKDIR/eval/step_<step>.json, and the scalars as eval/<name> in TensorBoard."""
  directory = epath.Path(workdir) / 'eval'
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f'step_{step:06d}.json'
  path.write_text(json.dumps({'step': step, **metrics}, indent=2) + '\n')
  if writer is not None:
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    writer.flush()
  return path
