"""Trains a VAE-GAN.

  python train.py --config configs/digits.py --workdir runs/digits
  python train.py --config configs/cifar10.py --workdir runs/c10 --config.batch_size=128

Re-running the same command resumes from the latest checkpoint in --workdir.
Several processes (multi-host: TPU pods, GPU clusters) run the same command with
--multihost on each host; see the README.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Quiet TensorFlow start-up notices.

from absl import flags
from ml_collections import config_flags

from vaegan_jax import directories
from vaegan_jax import entry_point
from vaegan_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, samples and TensorBoard logs.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file with get_config().', lock_config=True
)
flags.DEFINE_bool(
    'multihost',
    False,
    'Join a multi-process run: jax.distributed.initialize() '
    'detects the processes on Cloud TPU pods, SLURM, Open MPI and Kubernetes.',
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of process 0, for a multi-process '
    'run launched by hand (with --num_processes and --process_id).',
)
flags.DEFINE_integer('num_processes', None, 'How many processes a hand-launched run has.')
flags.DEFINE_integer('process_id', None, "This process's index, 0..num_processes-1.")
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  directories.check_writable(FLAGS.workdir, 'workdir')
  entry_point.set_up()
  entry_point.initialize_distributed(
      FLAGS.multihost, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  entry_point.run(main)
