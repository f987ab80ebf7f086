"""MNIST with the seed's 64x64 architecture and hyper-parameters (batch 64, lr 3e-4).

  python train.py --config configs/mnist.py --workdir runs/mnist

Needs the TFDS mnist data: downloaded on first use, or prepared elsewhere and
passed with --config.data_dir.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'mnist'  # The rest is default.py's: the seed's 64x64 setting, 1 channel.
  return config
