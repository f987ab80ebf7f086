"""CelebA 64x64 as in the paper's code: the face box, ReLU networks, its loss options.

  python train.py --config configs/celeba.py --workdir runs/celeba

Every image (218x178, aligned) is cut to rows 40:188 and columns 15:163 (a 148x148
box around the face) and resized to 64x64, as in the paper's code. The options
the paper's code chose where the seed differs: ReLU, 5x5 decoder kernels, the
discriminator sees prior samples as fakes, Dis_l is the 4th convolution's raw
output, real and fake batches share one BatchNorm batch, equilibrium gating.

TFDS celeb_a is about 1.4 GB and its download from Google Drive is often refused;
prepare it once (tfds.builder('celeb_a').download_and_prepare(), or from manually
downloaded files) and pass --config.data_dir. Meant for a GPU or a TPU: the
global batch (64 in the paper) is split over all devices.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = 'celeb_a'  # 64x64 as default.py.
  config.num_channels = 3
  config.crop = (40, 188, 15, 163)
  config.cache_dataset = False  # 162,770 images: too many to decode into host memory.
  config.shuffle_buffer = 20_000  # Encoded JPEGs (about 10 kB each) are shuffled.

  config.networks.activation = 'relu'
  config.networks.decoder_kernel_size = 5
  config.networks.disl_features = 'pre_norm'
  config.loss.discriminator_fakes = 'prior'
  config.loss.equilibrium_gating = True

  config.num_epochs = 30
  config.checkpoint_every_steps = 2000
  return config
