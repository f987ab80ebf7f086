"""clean-fid's Inception features in a process of their own, without TensorFlow.

PyTorch's CUDA builds load Triton, whose LLVM clashes with TensorFlow's: importing
clean-fid (torchvision, then torch._dynamo, then triton) after TensorFlow ends the
process with a segmentation fault (torch 2.14, tensorflow-cpu 2.21). The rest of this
project imports TensorFlow for its data, so inception.py runs this module as a child
process:

  python -m vaegan_jax.clean_fid_worker MODE

It answers one line on stdout, 'ok' or the error message to show, then reads uint8
[N, H, W, 3] arrays from stdin and writes each one's float32 [N, 2048] features back,
until stdin closes; each array as its length (8 bytes) and its .npy bytes
(send_array, receive_array). Only NumPy and clean-fid are imported here.
"""

from collections.abc import Callable
import http.client
import importlib
import io
import os
import sys
from typing import BinaryIO
import urllib.error

import numpy as np

WEIGHTS = '/tmp/inception-2015-12-05.pt'  # Where clean-fid keeps them on Linux and macOS.


class Unavailable(Exception):
  """What the user should read: clean-fid or its weights cannot be used here."""


def _import_clean_fid():
  try:
    return importlib.import_module('cleanfid.features'), importlib.import_module('cleanfid.resize')
  except ImportError as e:
    raise Unavailable(
        f'Inception FID needs clean-fid and PyTorch ({e}): pip install -r '
        'requirements-fid.txt, or evaluate without it (config.eval.inception=False, '
        'evaluate.py --noinception).'
    ) from None
  except Exception as e:  # torch raises its own errors on a broken install.
    raise Unavailable(
        f'clean-fid is installed but cannot be imported ({type(e).__name__}: {e}). Its '
        'torch and torchvision must be builds of one release (for example a CPU build of '
        'torch with a CUDA build of torchvision fails so): reinstall both together, as '
        'pip install -r requirements-fid.txt does.'
    ) from None


def send_array(stream: BinaryIO, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  stream.write(len(buffer.getvalue()).to_bytes(8, 'little') + buffer.getvalue())
  stream.flush()


def receive_array(stream: BinaryIO) -> np.ndarray | None:
  """The next array, or None at the end of the stream."""
  header = stream.read(8)
  if not header:
    return None
  size = int.from_bytes(header, 'little')
  data = stream.read(size)
  if len(header) != 8 or len(data) != size:
    raise EOFError(f'The stream ended inside an array ({len(data)} of {size} bytes).')
  return np.load(io.BytesIO(data), allow_pickle=False)


def build_extractor(mode: str, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
  """clean-fid's Inception features in `mode` (on a CUDA GPU when PyTorch sees one), in
  this process; raises Unavailable, saying what to do, when clean-fid is missing or
  broken, or the weights cannot be fetched (no network) or read."""
  features, resize = _import_clean_fid()
  import torch  # Installed with clean-fid.

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  try:
    model = features.build_feature_extractor(mode, device=device, use_dataparallel=False)
  except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
    url = importlib.import_module('cleanfid.downloads_helper').inception_url
    raise Unavailable(
        f'Could not fetch the Inception weights ({type(e).__name__}: {e}). On a machine '
        f'with network, download {url} and copy it to {WEIGHTS} here; clean-fid then '
        'reads it.'
    ) from None
  except RuntimeError as e:
    if 'zip archive' in str(e) or 'central directory' in str(e):  # torch.jit.load's words.
      raise Unavailable(
          f'Could not read the Inception weights in {WEIGHTS} ({e}); a download was '
          'probably cut short: delete that file and run again.'
      ) from None
    raise Unavailable(
        f'clean-fid could not load the Inception network on {device} ({e}). On a GPU '
        'that JAX shares, give PyTorch room: XLA_PYTHON_CLIENT_MEM_FRACTION=0.5, or '
        'CUDA_VISIBLE_DEVICES= for the CPU.'
    ) from None
  resizer = resize.build_resizer(mode)

  def extract(images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch_size):
      batch = np.stack([resizer(image) for image in images[start : start + batch_size]])
      batch = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32))
      with torch.no_grad():
        out.append(model(batch.to(device)).cpu().numpy().astype(np.float32))
    return np.concatenate(out)

  return extract


def main(mode: str) -> int:
  replies = os.fdopen(os.dup(1), 'wb')
  os.dup2(2, 1)  # Anything the libraries print goes to stderr, not into the replies.
  try:
    extract = build_extractor(mode)
  except Unavailable as e:
    replies.write(f'{e}\n'.replace('\n', ' ').strip().encode() + b'\n')
    replies.flush()
    return 1
  replies.write(b'ok\n')
  replies.flush()
  while (images := receive_array(sys.stdin.buffer)) is not None:
    send_array(replies, extract(images))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1]))
