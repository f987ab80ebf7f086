"""The quick CPU demo: scikit-learn's bundled digits (offline), 32x32, small widths.

  python train.py --config configs/digits.py --workdir runs/digits

Trains to recognisable digits in a few minutes on 2 CPU cores.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'sklearn_digits'
  config.image_size = 32
  config.num_channels = 1
  config.model.latent_dim = 32
  config.model.encoder_widths = (32, 64, 128)
  config.model.encoder_dense_width = 256
  config.model.decoder_widths = (128, 64, 32)
  config.model.decoder_kernel_size = 4
  config.model.discriminator_widths = (16, 32, 64, 64)
  config.model.discriminator_dense_width = 128
  config.batch_size = 64
  config.num_train_steps = 2000
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  return config
