"""How a dataset's stored images become the model's inputs (TensorFlow-free, so that the
steps that preprocess on the devices can share it with the host pipeline)."""

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class ImageFormat:
  """The feature that holds the images, and the square size, channels and crop box
  they are brought to: crop (top, bottom, left, right), or None for the centre square."""

  key: str
  size: int
  channels: int
  crop: tuple[int, int, int, int] | None = None


def from_config(config: ml_collections.ConfigDict) -> ImageFormat:
  """config.image_key, image_size, num_channels and crop."""
  return ImageFormat(
      key=config.image_key,
      size=config.image_size,
      channels=config.num_channels,
      crop=tuple(config.crop) if config.crop else None,
  )
