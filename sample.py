"""Restores a trained VAE-GAN and draws the paper's figures.

  python sample.py --workdir runs/digits
  python sample.py --workdir runs/c10 --outdir runs/c10/figures --step 20000 --temperature 0.8
  python sample.py --workdir runs/c10 --images my_photos/ --figures reconstructions
  python sample.py --workdir runs/c10 --export runs/c10/export --export_num 50000

Writes to --outdir (default WORKDIR/figures):
  samples.png          --num x --num decodes of z ~ N(0, temperature^2 I);
  reconstructions.png  real images (left) and Enc->Dec reconstructions (right);
  interpolations.png   rows of decodes between the latents of pairs of real images;
  attributes.png       per row: an image, its reconstruction, and decodes with the mean
                       latent difference of an attribute added (the paper's Figure 5).
--export DIR writes prior samples for external FID tools instead (vaegan_jax/export.py).
Real images come from --images (a folder of any image files) or from --split of
the run's dataset. The run's config.json rebuilds the networks; the workdir is
only read.
"""

import math
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags
from absl import logging
from etils import epath
import jax

from vaegan_jax import attributes
from vaegan_jax import datasets
from vaegan_jax import directories
from vaegan_jax import entry_point
from vaegan_jax import export
from vaegan_jax import figures
from vaegan_jax import image_files
from vaegan_jax import image_format
from vaegan_jax import image_grid
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax.errors import ConfigError, DatasetUnavailableError

FIGURES = ('samples', 'reconstructions', 'interpolations', 'attributes')

flags.DEFINE_string('workdir', None, 'The --workdir of a train.py run.')
flags.DEFINE_string('outdir', None, 'Where the PNGs go; default WORKDIR/figures.')
flags.DEFINE_integer('step', None, 'The checkpoint to restore; default the latest.')
flags.DEFINE_list('figures', list(FIGURES), f'Which figures to draw, of {FIGURES}.')
flags.DEFINE_integer('num', 8, 'Grid side of samples.png; rows of the other figures.')
flags.DEFINE_integer('seed', 0, 'Seed of the prior latents.')
flags.DEFINE_float('temperature', 1.0, 'Scale of the prior latents z.')
flags.DEFINE_string(
    'images',
    None,
    'A folder of your own images (any size: they are '
    'centre-cropped and resized as in training) instead of --split.',
)
flags.DEFINE_bool(
    'skip_unreadable',
    False,
    'Leave out (and report) files of --images and '
    'the attribute folders that are not images, instead of stopping.',
)
flags.DEFINE_string('split', None, "TFDS split of the run's dataset; default its eval_split.")
flags.DEFINE_string('data_dir', None, "TFDS data dir; default the run's config.data_dir.")
flags.DEFINE_enum('interpolation', 'linear', ['linear', 'slerp'], 'Path between latents.')
flags.DEFINE_integer('interpolation_steps', 8, 'Decodes per interpolation row.')
flags.DEFINE_string(
    'attribute',
    None,
    "A TFDS feature: a boolean one such as celeb_a's "
    "'Smiling', or NAME=VALUE ('label=1'). Default: Smiling or label=1, "
    'whichever the dataset has.',
)
flags.DEFINE_string(
    'with_attribute',
    None,
    'A folder of images with the attribute ' '(with --without_attribute, instead of --attribute).',
)
flags.DEFINE_string('without_attribute', None, 'A folder of images without it.')
flags.DEFINE_integer('attribute_examples', 1000, 'Examples of --split scanned for --attribute.')
flags.DEFINE_list(
    'attribute_scales',
    ['0.5', '1', '1.5', '2'],
    'Multiples of the attribute vector added, one column each.',
)
flags.DEFINE_bool(
    'ema',
    True,
    "Use the moving average of Enc's and Dec's weights where the run "
    'kept one (config.ema_decay > 0); --noema: the weights themselves.',
)
flags.DEFINE_string(
    'export',
    None,
    'Instead of the figures: write --export_num prior samples '
    'to this folder for external tools (png/NNNNNN.png and samples.npz, uint8).',
)
flags.DEFINE_integer('export_num', 10000, 'How many samples --export writes.')
flags.DEFINE_list('export_formats', list(export.FORMATS), f'Of {export.FORMATS}.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def _default_attribute(builder) -> str | None:
  features = builder.info.features
  if 'attributes' in features and 'Smiling' in features['attributes'].keys():
    return 'Smiling'
  return 'label=1' if 'label' in features else None


def _check_flags() -> None:
  unknown = sorted(set(FLAGS.figures) - set(FIGURES))
  if unknown:
    raise ConfigError(f'--figures: unknown {unknown}; choose from {list(FIGURES)}.')
  for name in ('num', 'interpolation_steps', 'attribute_examples'):
    if FLAGS[name].value < 1:
      raise ConfigError(f'--{name}={FLAGS[name].value}: must be >= 1.')
  try:
    [float(s) for s in FLAGS.attribute_scales]
  except ValueError:
    raise ConfigError(f'--attribute_scales={FLAGS.attribute_scales}: must be numbers.') from None
  if FLAGS.export and FLAGS.outdir:
    raise ConfigError('--export and --outdir go apart: --export writes samples, --outdir figures.')
  if FLAGS.export_num < 1:
    raise ConfigError(f'--export_num={FLAGS.export_num}: must be >= 1.')
  if not FLAGS.export_formats or set(FLAGS.export_formats) - set(export.FORMATS):
    raise ConfigError(f'--export_formats={FLAGS.export_formats}: choose from {export.FORMATS}.')
  if not (math.isfinite(FLAGS.temperature) and FLAGS.temperature > 0):
    raise ConfigError(f'--temperature={FLAGS.temperature}: must be a finite number > 0.')
  if bool(FLAGS.with_attribute) != bool(FLAGS.without_attribute):
    raise ConfigError('--with_attribute and --without_attribute go together.')


def draw(model: inference.Model) -> dict[str, object]:
  """The requested figures as uint8 arrays; reads real images only if a figure needs them."""
  config = model.config
  drawn = {}
  if 'samples' in FLAGS.figures:
    drawn['samples'] = figures.samples(
        model, FLAGS.num, jax.random.PRNGKey(FLAGS.seed), FLAGS.temperature
    )
  needs_data = [f for f in FLAGS.figures if f != 'samples']
  if not needs_data:
    return drawn
  if model.networks.encoder is None:
    logging.warning(
        'Skipping %s: a %r model has no encoder to encode real images with.',
        ', '.join(needs_data),
        config.model,
    )
    return drawn
  count = max(FLAGS.num * FLAGS.num, 2 * FLAGS.num)
  builder = None
  if FLAGS.images:
    real = image_files.load_folder(
        FLAGS.images,
        config.image_size,
        config.num_channels,
        count,
        FLAGS.skip_unreadable,
        config.crop,
    )
  else:
    if FLAGS.data_dir:
      config.data_dir = FLAGS.data_dir
    try:
      builder = datasets.get_builder(config)
    except DatasetUnavailableError as e:
      logging.warning(
          '%s\nSkipping %s; --images DIR draws them from your own images.', e, ', '.join(needs_data)
      )
      return drawn
    split = FLAGS.split or config.eval_split
    if builder.info.splits and split not in builder.info.splits:
      raise ConfigError(
          f'--split={split!r} is not a split of {builder.name}; its splits: '
          f'{list(builder.info.splits)}'
      )
    real = input_pipeline.fixed_images(builder, image_format.from_config(config), split, count)
  if 'reconstructions' in FLAGS.figures:
    drawn['reconstructions'] = figures.reconstructions(model, real[: FLAGS.num * FLAGS.num])
  if 'interpolations' in FLAGS.figures:
    if len(real) < 2:
      raise ConfigError('interpolations need at least 2 real images.')
    drawn['interpolations'] = figures.interpolations(
        model, real[: 2 * FLAGS.num], FLAGS.interpolation_steps, FLAGS.interpolation
    )
  if 'attributes' in FLAGS.figures:
    scales = [float(s) for s in FLAGS.attribute_scales]
    if FLAGS.with_attribute:
      with_images, without_images = (
          image_files.load_folder(
              folder,
              config.image_size,
              config.num_channels,
              skip_unreadable=FLAGS.skip_unreadable,
              crop=config.crop,
          )
          for folder in (FLAGS.with_attribute, FLAGS.without_attribute)
      )
    else:
      attribute = FLAGS.attribute or (builder and _default_attribute(builder))
      if not attribute:
        logging.warning(
            'Skipping attributes: give --attribute, or --with_attribute and '
            '--without_attribute folders.'
        )
        return drawn
      logging.info(
          'Attribute vector of %r from the first %d examples of %s.',
          attribute,
          FLAGS.attribute_examples,
          FLAGS.split or config.eval_split,
      )
      with_images, without_images = attributes.images_by_attribute(
          builder,
          image_format.from_config(config),
          FLAGS.split or config.eval_split,
          attribute,
          FLAGS.attribute_examples,
      )
    vector = inference.attribute_vector(model, with_images, without_images)
    drawn['attributes'] = figures.attribute_arithmetic(model, real[: FLAGS.num], vector, scales)
  return drawn


def main(argv):
  del argv
  outdir = directories.check_writable(
      FLAGS.export or FLAGS.outdir or epath.Path(FLAGS.workdir) / 'figures',
      'export' if FLAGS.export else 'outdir',
  )
  entry_point.set_up()
  _check_flags()
  if FLAGS.images:
    image_files.list_images(FLAGS.images)  # Fail on a bad folder before restoring.
  model = inference.load_model(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.ema)
  logging.info(
      'Restored step %d of %s%s.',
      model.step,
      FLAGS.workdir,
      " (the weights' moving average)" if model.uses_ema else '',
  )
  if FLAGS.export:
    images = export.quantised_samples(
        model, FLAGS.export_num, jax.random.PRNGKey(FLAGS.seed), FLAGS.temperature
    )
    export.export_samples(
        images, directories.make_directory(outdir, 'export'), tuple(FLAGS.export_formats)
    )
    logging.info(
        'Wrote %d samples (%s) to %s.', len(images), ', '.join(FLAGS.export_formats), outdir
    )
    return
  drawn = draw(model)
  directories.make_directory(outdir, 'outdir')
  for name, image in drawn.items():
    image_grid.save_png(outdir / f'{name}.png', image)
    logging.info('Wrote %s', outdir / f'{name}.png')


if __name__ == '__main__':
  entry_point.run(main)
