"""scikit-learn's bundled handwritten digits as a TFDS dataset: real data, offline.

1,797 grey 8x8 images of the digits 0-9 (UCI optical recognition of handwritten
digits, as shipped inside scikit-learn). Preparing it needs no network, so the
quickstart trains on a fresh machine; the input pipeline upsamples the images to
the config's image size. Every sixth image (300) forms the test split.
"""

import numpy as np
import tensorflow_datasets as tfds

NAME = 'sklearn_digits'


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """Registered with TFDS as 'sklearn_digits' when this module is imported."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'scikit-learn load_digits, pixels 0-16 scaled to 0-255.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(shape=(8, 8, 1)),
                'label': tfds.features.ClassLabel(num_classes=10),
            }
        ),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    return {
        'train': self._generate_examples(is_test=False),
        'test': self._generate_examples(is_test=True),
    }

  def _generate_examples(self, is_test: bool):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
      if (index % 6 == 0) == is_test:
        yield index, {'image': image, 'label': int(label)}
