"""Scores a trained model: Fréchet distances, reconstruction error, KL (evaluation.py).

  python evaluate.py --workdir runs/digits
  python evaluate.py --workdir runs/c10 --step 20000 --num_samples 10000
  python evaluate.py --workdir runs/c10 --inception --num_samples 50000   # Inception FID

--inception adds Inception FID and KID as papers report them (inception.py; needs
`pip install -r requirements-fid.txt`, and fetches the weights the first time).

Writes WORKDIR/eval/step_<step>.json and the same scalars (eval/...) to the run's
TensorBoard logs, and prints them. The first evaluation of a dataset trains its
classifier (cached, see --classifier_dir); later ones reuse it. Checkpoints are
only read.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags
from absl import logging
from clu import metric_writers
import jax

from configs import default
from vaegan_jax import datasets
from vaegan_jax import entry_point
from vaegan_jax import evaluation
from vaegan_jax import inference
from vaegan_jax.errors import ConfigError

flags.DEFINE_string('workdir', None, 'The --workdir of a train.py run.')
flags.DEFINE_integer('step', None, 'The checkpoint to score; default the latest.')
flags.DEFINE_integer(
    'num_samples',
    None,
    'Model samples per Fréchet distance; default the ' "run's config.eval.num_samples.",
)
flags.DEFINE_integer('seed', 0, 'Seed of the prior latents.')
flags.DEFINE_string('data_dir', None, "TFDS data dir; default the run's config.data_dir.")
flags.DEFINE_string(
    'classifier_dir',
    None,
    'Where evaluation classifiers are cached; default '
    "the run's config.eval.classifier_dir, else ~/.cache/vaegan_jax/classifiers.",
)
flags.DEFINE_bool(
    'ema',
    True,
    "Use the moving average of Enc's and Dec's weights where the run "
    'kept one (config.ema_decay > 0); --noema: the weights themselves.',
)
flags.DEFINE_bool(
    'inception',
    None,
    "Also Inception FID and KID (clean-fid's features); default the run's "
    'config.eval.inception.',
)
flags.DEFINE_string(
    'inception_dir',
    None,
    'Where Inception reference statistics are cached; default '
    "the run's config.eval.inception_dir, else ~/.cache/vaegan_jax/inception.",
)
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  entry_point.set_up()
  model = inference.load_model(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.ema)
  config = model.config
  if 'eval' not in config:  # A run from before evaluation existed: the defaults.
    config.eval = default.get_config().eval
  if FLAGS.num_samples is not None:
    if FLAGS.num_samples < 2:
      raise ConfigError(f'--num_samples={FLAGS.num_samples}: must be >= 2.')
    config.eval.num_samples = FLAGS.num_samples
  if FLAGS.data_dir:
    config.data_dir = FLAGS.data_dir
  if FLAGS.classifier_dir:
    config.eval.classifier_dir = FLAGS.classifier_dir
  if FLAGS.inception is not None:
    config.eval.inception = FLAGS.inception
  if FLAGS.inception_dir:
    config.eval.inception_dir = FLAGS.inception_dir
  logging.info(
      'Evaluating step %d of %s (a %r model%s).',
      model.step,
      FLAGS.workdir,
      config.model,
      ", the weights' moving average" if model.uses_ema else '',
  )
  builder = datasets.get_builder(config)
  inception_scorer = evaluation.load_inception(config, builder)  # Fails early when offline.
  classifier = evaluation.load_classifier(config, builder)
  metrics = evaluation.evaluate(
      model, builder, classifier, jax.random.PRNGKey(FLAGS.seed), inception_scorer
  )
  writer = metric_writers.SummaryWriter(FLAGS.workdir)
  path = evaluation.write_metrics(FLAGS.workdir, model.step, metrics, writer)
  writer.close()
  for name, value in metrics.items():
    print(f'{name:36s} {value:.6g}')
  logging.info('Wrote %s', path)


if __name__ == '__main__':
  entry_point.run(main)
