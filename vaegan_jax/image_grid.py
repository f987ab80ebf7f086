"""Image grids as PNG files: what a person looks at to judge samples."""

import math
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] -> uint8 in [0, 255]."""
  return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def grid(images: np.ndarray, padding: int = 2, columns: int | None = None) -> np.ndarray:
  """[N, H, W, C] images in [-1, 1] -> one uint8 [rows*H, cols*W, C] grid, row by row.

  Square-ish unless `columns` is given.
  """
  count, height, width, channels = images.shape
  cols = columns or math.ceil(math.sqrt(count))
  rows = math.ceil(count / cols)
  out = np.full(
      (rows * (height + padding) + padding, cols * (width + padding) + padding, channels),
      255,
      np.uint8,
  )
  for index, image in enumerate(to_uint8(images)):
    top = padding + (index // cols) * (height + padding)
    left = padding + (index % cols) * (width + padding)
    out[top : top + height, left : left + width] = image
  return out


def side_by_side(panels: list[np.ndarray], gap: int = 8) -> np.ndarray:
  """Grids of equal height next to each other, separated by white columns."""
  height = max(p.shape[0] for p in panels)
  channels = max(p.shape[2] for p in panels)
  parts = []
  for panel in panels:
    panel = np.broadcast_to(panel, panel.shape[:2] + (channels,))
    pad = np.full((height - panel.shape[0], panel.shape[1], channels), 255, np.uint8)
    parts += [np.concatenate([panel, pad]), np.full((height, gap, channels), 255, np.uint8)]
  return np.concatenate(parts[:-1], axis=1)


def titled(panel: np.ndarray, title: str, height: int = 14) -> np.ndarray:
  """A uint8 [H, W, C] panel under a white strip with `title` in PIL's default font."""
  strip = Image.new('L', (panel.shape[1], height), 255)
  ImageDraw.Draw(strip).text((2, 1), title, fill=0)
  strip = np.broadcast_to(np.asarray(strip)[..., None], (height, panel.shape[1], panel.shape[2]))
  return np.concatenate([strip, panel])


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 1 or 3] array as PNG, atomically (no half-written file)."""
  image = image[..., 0] if image.shape[-1] == 1 else image
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    Image.fromarray(image).save(f, format='PNG')
  os.replace(tmp, path)
