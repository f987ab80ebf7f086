"""Defaults shared by every config: the seed's 64x64 VAE-GAN and its training loop.

Dataset configs (mnist.py, cifar10.py, digits.py) start from this and change what
they need. Any field can be overridden on the command line, e.g.
`--config.batch_size=128 --config.loss.gamma=0.5`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Data: any TFDS image dataset by name; 'sklearn_digits' is bundled and offline.
  config.dataset = 'sklearn_digits'
  config.data_dir = ml_collections.config_dict.placeholder(
      str
  )  # None: TFDS_DATA_DIR or ~/tensorflow_datasets.
  config.image_key = 'image'
  config.train_split = 'train'
  config.eval_split = 'test'  # Source of the fixed batch reconstructed in the sample grids.
  config.image_size = 64  # Images are cropped (below) to a square, then resized.
  # (top, bottom, left, right) pixel box cut from every image, e.g. CelebA's face; None:
  # the largest centre square.
  config.crop = ml_collections.config_dict.placeholder(tuple)
  config.num_channels = (
      1  # Grey datasets are tiled to 3 channels, colour ones averaged to 1, as needed.
  )
  config.shuffle_buffer = 60_000
  config.cache_dataset = True  # Keep decoded uint8 images in host memory (mnist, cifar10).
  # Keep the training images on the devices and shuffle, batch and preprocess them there
  # (vaegan_jax/device_data.py), running steps_per_dispatch train steps per call, so that
  # neither the host nor Python paces a fast accelerator. Needs images of one shape that
  # fit in a quarter of a device's memory (mnist, cifar10, digits). Its data order
  # differs from the host pipeline's.
  config.data_on_device = False
  # With data_on_device: steps per call (a lax.scan). Fewer when a log, checkpoint or
  # evaluation falls sooner; a divisor of their intervals keeps it to one compilation.
  config.steps_per_dispatch = 1

  # Which of the paper's models: 'vaegan'; or its baselines 'vae' (Enc + Dec, pixel-wise
  # Gaussian likelihood), 'vae_disl' (the VAE with L_llike of a jointly trained Dis, no
  # GAN term for Dec), 'gan' (Dec as generator + Dis, no Enc).
  config.model = 'vaegan'

  # Networks (models.py). The seed: leaky_relu; the paper: relu.
  config.networks = ml_collections.ConfigDict()
  config.networks.latent_dim = 128
  config.networks.activation = 'leaky_relu'
  config.networks.encoder_widths = (64, 128, 256)
  config.networks.encoder_dense_width = 2048
  config.networks.decoder_widths = (256, 128, 32)
  config.networks.decoder_kernel_size = 6
  config.networks.discriminator_widths = (32, 128, 256, 256)
  config.networks.discriminator_strides = (1, 2, 2, 2)
  config.networks.discriminator_dense_width = 512
  config.networks.disl_layer = (
      4  # Dis_l: which convolution (counted from 1) gives the similarity features ...
  )
  config.networks.disl_features = (
      'post_activation'  # ... after BN + activation (seed) or 'pre_norm' (paper code).
  )
  config.networks.batch_norm_momentum = 0.9  # Flax convention: PyTorch's momentum 0.1.
  # Biases in the layers that BatchNorm follows: the seed has them (and its parameter
  # counts); BatchNorm cancels them, so False (flax's ResNet, DCGAN) drops dead weights.
  config.networks.bias_before_norm = True

  # Losses (losses.py, train_step.py).
  config.loss = ml_collections.ConfigDict()
  config.loss.gamma = 1.0  # Dec <- gamma * L_llike - L_GAN
  config.loss.beta = 1.0  # Enc <- L_prior + beta * L_llike (L_llike in Dis_l's features)
  # 'vae' (L_llike in pixels, another scale): Enc <- L_prior + pixel_beta * L_llike, where
  # pixel_beta = 1/sigma^2 of the pixel-wise Gaussian.
  config.loss.pixel_beta = 1.0
  config.loss.discriminator_fakes = 'both'  # 'reconstructions', 'prior' or 'both' (seed).
  config.loss.decoder_gan_loss = 'saturating'  # As in the paper; or 'non_saturating'.
  # BatchNorm batches: 'joint' runs the real images and the fakes through Dis as one
  # (the paper's code: Dis can compare them), 'separate' one by one (the seed: each batch
  # normalised by its own statistics, which leaves Dis near chance); Dec runs z and z_p
  # 'separate'ly (the paper's code, the seed) or 'joint'ly.
  config.loss.discriminator_batches = 'joint'
  config.loss.decoder_batches = 'separate'
  config.loss.equilibrium_gating = False  # The paper code's balancing of Dis and Dec updates.
  config.loss.equilibrium = 0.68
  config.loss.margin = 0.35

  # > 0: also keep an exponential moving average of Enc's and Dec's weights (and BatchNorm
  # statistics), with this decay per step, saved in checkpoints and used by sample.py,
  # evaluate.py and the sample grids; 0: off.
  config.ema_decay = 0.0

  # The networks' computation: 'float32', or 'bfloat16' (GPU/TPU tensor cores); parameters,
  # optimizer states, BatchNorm statistics and losses stay float32 either way.
  config.dtype = 'float32'
  # On CPU, float32 convolutions with >= 128 channels (3x3, and 5x5 with stride 2) by
  # Winograd's algorithm (vaegan_jax/cpu/winograd.py), the other 5x5 stride-2 ones'
  # input gradients as 3x3 convolutions (cpu/space_to_depth.py), and stride-1 ones with
  # 1-3 channels on a side partly as matrix products (cpu/shifted_products.py): a faster train step
  # (docs/performance.md), results within ~1e-5 relative of direct convolution. GPUs and
  # TPUs, and False here, use XLA's convolutions.
  config.cpu_winograd = True

  # Optimisation: one RMSProp per network.
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 3e-4
  config.optim.encoder_lr_mult = 1.0
  config.optim.decoder_lr_mult = 1.0
  config.optim.discriminator_lr_mult = 0.1  # The seed trains Dis ten times slower.
  config.optim.rmsprop_decay = 0.99  # PyTorch's alpha; optax's own default is 0.9.
  config.optim.rmsprop_eps = 1e-8
  config.optim.eps_in_sqrt = False  # False: PyTorch's g / (sqrt(v) + eps).
  config.optim.lr_decay_per_epoch = 1.0  # Exponential decay, staircase per epoch; 1.0 is constant.

  # Loop.
  config.batch_size = 64  # Global batch, split over all devices (of all processes).
  config.num_epochs = 50
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  # A step with a non-finite loss or gradient never changes the networks. 'stop': end
  # the run with a message naming the term (the latest checkpoint stays the last good
  # state); 'skip': drop that batch and go on, counted in the metric 'nonfinite'.
  config.on_nonfinite = 'stop'
  # An unreadable latest checkpoint stops the run with a message; True moves it to
  # WORKDIR/checkpoints_unreadable/ and resumes from the newest readable one.
  config.checkpoint_fallback = False
  # > 0: rewind, e.g. past a divergence: resume from the newest checkpoint at or before
  # this step, and move newer ones to WORKDIR/checkpoints_set_aside/ (not deleted).
  config.restore_step = 0
  config.num_sample_images = 64  # Images per grid (a square number).

  # Evaluation (evaluate.py; evaluation.py): Frechet distances in the features of a
  # classifier trained once per dataset (cached), reconstruction error, KL.
  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = (
      0  # > 0: also evaluate during training, every so many steps and at the end.
  )
  config.eval.num_samples = (
      10_000  # Model samples per Frechet distance (and at most as many real images).
  )
  config.eval.label_key = 'label'  # The class feature the classifier learns ...
  config.eval.classifier_steps = 1500  # ... in this many Adam steps of 64 images (seed 0).
  # Where trained classifiers are kept; None: ~/.cache/vaegan_jax/classifiers.
  config.eval.classifier_dir = ml_collections.config_dict.placeholder(str)
  # Inception FID and KID as papers report them (inception.py; needs
  # `pip install -r requirements-fid.txt`, and the weights fetched once): clean-fid's
  # features in this mode, against the first so many images of config.train_split, whose
  # statistics are cached in inception_dir (None: ~/.cache/vaegan_jax/inception).
  config.eval.inception = False
  config.eval.inception_mode = 'clean'  # Or 'legacy_tensorflow'.
  config.eval.inception_num_real = 50_000
  config.eval.inception_dir = ml_collections.config_dict.placeholder(str)
  return config
