"""CIFAR-10 with the seed's 64x64 architecture and hyper-parameters (batch 64, lr 3e-4).

  python train.py --config configs/cifar10.py --workdir runs/c10

Images are upsampled from 32x32 to 64x64 as in the seed; --config.image_size=32
trains at the native resolution.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'cifar10'  # Otherwise default.py's: the seed's 64x64 setting.
  config.num_channels = 3
  return config
