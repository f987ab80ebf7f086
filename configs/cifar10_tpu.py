"""CIFAR-10 on a Colab TPU (8 cores) or several GPUs: cifar10.py with a global batch of 256.

  python train.py --config configs/cifar10_tpu.py --workdir runs/c10_tpu

The batch is split over all devices (32 images per core on a v2-8 or v3-8): a
larger batch keeps each core busy. The other settings are the seed's; they have not
been tuned for the larger batch (there was no TPU where this was written).
"""

import ml_collections

from configs import cifar10


def get_config() -> ml_collections.ConfigDict:
  config = cifar10.get_config()
  config.batch_size = 256
  config.log_every_steps = 100
  return config
