"""The user's own images from a folder, prepared exactly as training prepares TFDS images."""

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from vaegan_jax import input_pipeline
from vaegan_jax.errors import ImageReadError


def list_images(folder: epath.PathLike) -> list[epath.Path]:
  """The files of a folder (not recursive), sorted by name; hidden files are ignored."""
  folder = epath.Path(folder)
  if not folder.is_dir():
    raise ImageReadError(f'{folder} is not a folder of images.')
  files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith('.'))
  if not files:
    raise ImageReadError(f'{folder} holds no image files.')
  return files


def read_image(path: epath.PathLike) -> np.ndarray:
  """uint8 [H, W, C] pixels of any format PIL reads; C is 1 or 3 (alpha dropped)."""
  try:
    with Image.open(path) as image:
      image = image.convert('L' if image.mode in ('1', 'L', 'I', 'I;16', 'F') else 'RGB')
      pixels = np.asarray(image)
  except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
    raise ImageReadError(
        f'{path} cannot be read as an image ({e}). Remove it, convert it '
        'to PNG or JPEG, or leave such files out with --skip_unreadable.'
    ) from e
  return pixels[..., None] if pixels.ndim == 2 else pixels


def load_folder(
    folder: epath.PathLike,
    image_size: int,
    num_channels: int,
    limit: int | None = None,
    skip_unreadable: bool = False,
    crop: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
  """float32 [N, image_size, image_size, num_channels] in [-1, 1]: cropped and resized.

  `crop` (the config's (top, bottom, left, right) box) is cut from images large
  enough to hold it (aligned CelebA files); others are centre-cropped, with a warning.
  An unreadable file stops with ImageReadError naming it, or with
  `skip_unreadable` is reported in the log and left out.
  """
  images = []
  for path in list_images(folder):
    if limit is not None and len(images) == limit:
      break
    try:
      pixels = read_image(path)
    except ImageReadError as e:
      if not skip_unreadable:
        raise
      logging.warning('Skipping %s', e)
      continue
    box = crop
    if crop is not None and (pixels.shape[0] < crop[1] or pixels.shape[1] < crop[3]):
      logging.warning(
          '%s (%dx%d) is smaller than the crop box %s of training; centre-cropped ' 'instead.',
          path,
          pixels.shape[0],
          pixels.shape[1],
          tuple(crop),
      )
      box = None
    images.append(input_pipeline.preprocess(pixels, image_size, num_channels, box).numpy())
  if not images:
    raise ImageReadError(f'{folder} holds no readable image.')
  return np.stack(images)
