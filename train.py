"""Trains a VAE-GAN.

  python train.py --config configs/digits.py --workdir runs/digits
  python train.py --config configs/cifar10.py --workdir runs/c10 --config.batch_size=128

Re-running the same command resumes from the latest checkpoint in --workdir.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Quiet TensorFlow start-up notices.

from absl import app
from absl import flags
from ml_collections import config_flags

from vaegan_jax import entry_point
from vaegan_jax import train
from vaegan_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and TensorBoard logs.')
config_flags.DEFINE_config_file('config', None, 'A config file with get_config().',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  entry_point.set_up()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
