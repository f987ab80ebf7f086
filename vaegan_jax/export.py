"""Prior samples written out for external tools (clean-fid, torch-fidelity, the
guided-diffusion evaluator): a folder of PNG files and one .npz of uint8 arrays.

The pixels are exactly those of the model's samples after the usual quantisation
(image_grid.to_uint8), in both formats; the latents are drawn in chunks from one
seed, so the same seed and count export the same images.
"""

from etils import epath
import jax
import numpy as np
from PIL import Image

from vaegan_jax import image_grid
from vaegan_jax import inference
from vaegan_jax.errors import OutputFolderError

FORMATS = ('png', 'npz')


def quantised_samples(
    model: inference.Model,
    num: int,
    rng: jax.Array,
    temperature: float = 1.0,
    chunk_size: int = 500,
) -> np.ndarray:
  """uint8 [num, H, W, C] prior samples; Dec runs on chunks of one size (one compile)."""
  latents = np.asarray(inference.prior_latents(model, num, rng, temperature))
  images = inference.map_in_chunks(lambda z: inference.decode(model, z), latents, chunk_size)
  return image_grid.to_uint8(images)


def export_samples(
    images: np.ndarray, directory: epath.PathLike, formats: tuple[str, ...] = FORMATS
) -> list[epath.Path]:
  """Writes uint8 [N, H, W, C] images as DIR/png/NNNNNN.png and DIR/samples.npz
  (key 'arr_0', as the guided-diffusion evaluator reads); returns what it wrote."""
  directory = epath.Path(directory)
  for name in ('png', 'samples.npz'):
    if (directory / name).exists() and (name != 'png' or any((directory / name).iterdir())):
      raise OutputFolderError(
          f'{directory / name} exists: export into a new folder (an FID tool reading it would '
          'count earlier samples too).'
      )
  written = []
  if 'png' in formats:
    folder = directory / 'png'
    folder.mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(len(images) - 1)))
    for index, image in enumerate(images):
      path = folder / f'{index:0{digits}d}.png'
      Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
      written.append(path)
  if 'npz' in formats:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / 'samples.npz'
    with path.open('wb') as f:
      np.savez(f, arr_0=images)
    written.append(path)
  return written
