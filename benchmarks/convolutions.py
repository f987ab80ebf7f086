"""Time of each convolution of the seed's 64x64 networks: forward, kernel and input gradient.

  python benchmarks/convolutions.py            # as the train step runs them
  python benchmarks/convolutions.py --torch    # beside PyTorch's, on the same device
  python benchmarks/convolutions.py --nowinograd   # XLA's own convolutions on CPU too
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution \
      python benchmarks/convolutions.py        # with jaxlib's YNNPACK convolutions on CPU

The step's time is mostly its convolutions (docs/performance.md); this shows which
ones, and how XLA's kernels compare with PyTorch's, without the rest of the step.
Each figure is the best of --repeats calls, in milliseconds.
"""

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import jax
import numpy as np

from vaegan_jax import entry_point
from vaegan_jax.cpu import winograd

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch_size', 64, 'Images per convolution call.')
flags.DEFINE_integer('repeats', 3, 'Timed calls of each; the best is reported.')
flags.DEFINE_bool('torch', False, 'Also time torch.nn.functional.conv2d and its gradients.')
flags.DEFINE_bool(
    'winograd',
    True,
    "As the networks' default cpu_winograd: on CPU, Winograd "
    "where vaegan_jax/cpu/winograd.py applies it; False: XLA's convolutions only.",
)

# (name, input size, in channels, out channels, kernel size, stride) of the seed's
# networks at 64x64: Enc and Dis as in models.py; Dec's transposed convolutions as the
# sub-pixel convolutions layers.py computes (3x3 windows, 4x the channels).
LAYERS = (
    ('enc1', 64, 1, 64, 5, 2),
    ('enc2', 32, 64, 128, 5, 2),
    ('enc3', 16, 128, 256, 5, 2),
    ('dis1', 64, 1, 32, 5, 1),
    ('dis2', 64, 32, 128, 5, 2),
    ('dis3', 32, 128, 256, 5, 2),
    ('dis4', 16, 256, 256, 5, 2),
    ('dec1', 8, 256, 4 * 256, 3, 1),
    ('dec2', 16, 256, 4 * 128, 3, 1),
    ('dec3', 32, 128, 4 * 32, 3, 1),
    ('dec4', 64, 32, 1, 5, 1),
)
KINDS = ('forward', 'kernel_grad', 'input_grad')


def _best_ms(fn, repeats: int) -> float:
  fn()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best * 1e3


def jax_times(
    batch: int,
    size: int,
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    repeats: int,
    use_winograd: bool,
) -> list[float]:
  rng = np.random.default_rng(0)
  x = jax.device_put(rng.standard_normal((batch, size, size, cin), np.float32))
  w = jax.device_put(rng.standard_normal((kernel, kernel, cin, cout), np.float32))
  conv_general_dilated = (
      winograd.conv_general_dilated if use_winograd else jax.lax.conv_general_dilated
  )
  conv = lambda x, w: conv_general_dilated(
      x, w, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  dy = jax.numpy.ones_like(conv(x, w))
  fns = (
      jax.jit(conv),
      jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[1]),
      jax.jit(lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)[0]),
  )
  args = ((x, w), (x, w, dy), (x, w, dy))
  return [_best_ms(lambda: jax.block_until_ready(fn(*a)), repeats) for fn, a in zip(fns, args)]


def torch_times(
    batch: int, size: int, cin: int, cout: int, kernel: int, stride: int, repeats: int
) -> list[float]:
  import torch  # pylint: disable=g-import-not-at-top

  conv2d, grad = torch.nn.functional.conv2d, torch.nn.grad
  x, w = torch.randn(batch, cin, size, size), torch.randn(cout, cin, kernel, kernel)
  padding = (kernel - 1) // 2  # SAME for odd kernels, both strides here.
  dy = torch.ones_like(conv2d(x, w, stride=stride, padding=padding))
  with torch.no_grad():
    return [
        _best_ms(fn, repeats)
        for fn in (
            lambda: conv2d(x, w, stride=stride, padding=padding),
            lambda: grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=padding),
            lambda: grad.conv2d_input(x.shape, w, dy, stride=stride, padding=padding),
        )
    ]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  settings = entry_point.set_up()
  print(
      f'{jax.devices()[0].device_kind} ({jax.devices()[0].platform}), batch '
      f'{FLAGS.batch_size}, float32, {settings}, winograd: {FLAGS.winograd}'
  )
  frameworks = ('jax', 'torch') if FLAGS.torch else ('jax',)
  totals = {name: np.zeros(3) for name in frameworks}
  print(f'{"layer":6s}' + ''.join(f'{f + " " + k:>18s}' for f in frameworks for k in KINDS))
  for name, *shape in LAYERS:
    row = {'jax': jax_times(FLAGS.batch_size, *shape, FLAGS.repeats, FLAGS.winograd)}
    if FLAGS.torch:
      row['torch'] = torch_times(FLAGS.batch_size, *shape, FLAGS.repeats)
    print(f'{name:6s}' + ''.join(f'{t:18.1f}' for f in frameworks for t in row[f]))
    for f in frameworks:
      totals[f] += row[f]
  print(f'{"total":6s}' + ''.join(f'{t:18.1f}' for f in frameworks for t in totals[f]))
  for f in frameworks:
    print(f'{f} all convolutions: {totals[f].sum():.0f} ms')


if __name__ == '__main__':
  app.run(main)
