"""Trains the paper's four models on the same data and budget and scores them side by side.

  python compare.py --workdir runs/compare
  python compare.py --workdir runs/compare_mnist --config configs/mnist.py \
      --config.num_train_steps=5000

Larsen et al. (2016, Figure 3 and Table 1) compare a VAE (pixel-wise likelihood),
VAE_Dis_l (the learned similarity, no GAN term for Dec), a GAN and the VAE/GAN.
Each model trains from the same config (only config.model differs) in
WORKDIR/<model> (re-running resumes or, when done, only re-scores), then is
scored by evaluation.py. Writes WORKDIR/results.md (a markdown table),
results.json, and samples.png (a grid of prior samples per model, the same
latents for all).
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from vaegan_jax import entry_point
from vaegan_jax import evaluation
from vaegan_jax import image_grid
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import train
from vaegan_jax import train_state
from vaegan_jax.errors import ConfigError, UserError

flags.DEFINE_string('workdir', None, 'Where each model trains (WORKDIR/<model>) and the '
                    'results go.')
config_flags.DEFINE_config_file('config', 'configs/digits.py', 'The config every model '
                                'trains with; config.model is set per model.', lock_config=True)
flags.DEFINE_list('models', list(train_state.MODELS), 'Which models, in table order.')
flags.DEFINE_integer('grid_side', 6, 'Samples per row and column of each grid in samples.png.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS

# (metric, column title, format); "lower is better" unless the title says otherwise.
COLUMNS = (('frechet/samples', 'FD samples', '.2f'),
           ('frechet/reconstructions', 'FD reconstructions', '.2f'),
           ('reconstruction/mse', 'recon. MSE', '.4f'),
           ('reconstruction/classifier_accuracy', 'recon. class kept (higher better)', '.1%'),
           ('kl', 'KL (nats)', '.1f'))


def markdown_table(results: dict[str, dict]) -> str:
  """One row per model; '-' where a metric does not apply (a GAN has no encoder)."""
  header = ['model', *(title for _, title, _ in COLUMNS), 'train time']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for model, result in results.items():
    metrics = result['metrics']
    cells = [f'`{model}`'] + [format(metrics[key], fmt) if key in metrics else '-'
                              for key, _, fmt in COLUMNS]
    cells.append(f'{result["train_seconds"] / 60:.1f} min')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path) -> float:
  """Trains (or resumes) one model; returns the seconds spent, this run's and earlier ones'."""
  record = workdir / 'train_seconds.json'
  spent = json.loads(record.read_text())['seconds'] if record.exists() else 0.0
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  spent += time.perf_counter() - start
  record.write_text(json.dumps({'seconds': spent}) + '\n')
  return spent


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  entry_point.set_up()
  workdir = epath.Path(FLAGS.workdir)
  unknown = [m for m in FLAGS.models if m not in train_state.MODELS]
  try:
    if unknown or not FLAGS.models:
      raise ConfigError(f'--models={",".join(FLAGS.models)}: each must be one of '
                        f'{", ".join(train_state.MODELS)}.')
    results, panels = {}, []
    for model in FLAGS.models:
      config = FLAGS.config.copy_and_resolve_references()
      config.model = model
      logging.info('=== %s ===', model)
      seconds = _train(config, workdir / model)
      trained = inference.load_model(workdir / model)
      builder = input_pipeline.get_builder(trained.config)
      classifier = evaluation.load_classifier(trained.config, builder)
      metrics = evaluation.evaluate(trained, builder, classifier, jax.random.PRNGKey(0))
      evaluation.write_metrics(workdir / model, trained.step, metrics)
      results[model] = {'metrics': metrics, 'step': trained.step, 'train_seconds': seconds}
      samples = inference.sample(trained, FLAGS.grid_side**2, jax.random.PRNGKey(1))
      panels.append(image_grid.titled(
          image_grid.grid(np.asarray(samples), columns=FLAGS.grid_side), model))
  except UserError as e:
    sys.exit(f'error: {e}')

  first = next(iter(results.values()))['metrics']
  notes = (f'{FLAGS.config.dataset}, {first["num_samples"]:.0f} samples and '
           f'{first["num_real"]:.0f} real test images per Fréchet distance (FD) in the '
           'features of a classifier trained on the dataset')
  if 'classifier/test_accuracy' in first:
    notes += (f' ({first["classifier/test_accuracy"]:.1%} test accuracy; real training vs '
              f'test images: FD {first["frechet/train_vs_test"]:.2f})')
  table = markdown_table(results)
  (workdir / 'results.md').write_text(f'{table}\n\n{notes}.\n')
  (workdir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
  image_grid.save_png(workdir / 'samples.png', image_grid.side_by_side(panels))
  print(f'{table}\n\n{notes}.')
  logging.info('Wrote %s, results.json and samples.png.', workdir / 'results.md')


if __name__ == '__main__':
  app.run(main)
