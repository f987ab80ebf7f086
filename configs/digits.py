"""The quick CPU demo: scikit-learn's bundled digits (offline), 32x32, small widths.

  python train.py --config configs/digits.py --workdir runs/digits

Trains to digit-shaped samples of all ten classes in about 7 minutes on 2 CPU cores.

Dis sees the real and fake images as one BatchNorm batch (the default, the paper's
code) and trains at the seed's tenth of the learning rate. The decoder's GAN term is
non-saturating and weighted far more than L_llike (gamma=0.03; at 0.1 about a quarter
of the samples were covered in speckle). beta=0.07 puts seven times the earlier
weight on L_prior: the encoder keeps about 4 nats, so prior latents land where Dec has
learned to draw digits (FD 88 against 113 at beta 0.5 over three seeds), at the cost of
reconstructions that keep the class but less of the style. The plain VAE's pixel
likelihood has another scale and keeps pixel_beta=0.5 (at 0.07 it collapses). The
latent is 8-dimensional (at 16 fewer prior samples read as digits). Samples and
evaluation use a moving average of Enc's and Dec's weights (decay 0.99).
docs/results.md has the comparisons that chose these settings.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'sklearn_digits'
  config.image_size = 32
  config.num_channels = 1
  config.networks.latent_dim = 8
  config.networks.encoder_widths = (32, 64, 128)
  config.networks.encoder_dense_width = 256
  config.networks.decoder_widths = (128, 64, 32)
  config.networks.decoder_kernel_size = 4
  config.networks.discriminator_widths = (16, 32, 64, 64)
  config.networks.discriminator_dense_width = 128
  config.networks.bias_before_norm = False
  config.loss.gamma = 0.03
  config.loss.beta = 0.07
  config.loss.pixel_beta = 0.5
  config.loss.decoder_gan_loss = 'non_saturating'
  config.ema_decay = 0.99
  config.batch_size = 64
  config.num_train_steps = 600
  config.log_every_steps = 100
  config.checkpoint_every_steps = 200
  config.eval.num_samples = 1000  # All 300 test digits are the real set.
  return config
