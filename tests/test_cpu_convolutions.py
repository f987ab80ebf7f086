"""Entry points run convolutions on CPU with XLA's Eigen kernels (cpu/convolutions.py)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # Fresh processes, as XLA reads its flags at start.

# XLA reads its flags when JAX starts its backend: each case needs a fresh process.
# The convolution is one of the decoder's (batch 64, 32x32, 128 channels), large
# enough for jaxlib to hand it to YNNPACK by default; it is compiled, not run.
_PROGRAM = """
from vaegan_jax import entry_point
from vaegan_jax.cpu import convolutions as cpu_convolutions
settings = entry_point.set_up()
import jax, jax.numpy as jnp

conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
compiled = conv.lower(jax.ShapeDtypeStruct((64, 32, 32, 128), jnp.float32),
                      jax.ShapeDtypeStruct((3, 3, 128, 128), jnp.float32)).compile()
print(settings['eigen_convolutions_flag'],
      cpu_convolutions.count_ynnpack_convolutions(compiled.as_text()))
"""


def _run(xla_flags: str) -> tuple[str, int]:
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS='cpu')
  result = subprocess.run(
      [sys.executable, '-c', _PROGRAM],
      env=env,
      capture_output=True,
      text=True,
      check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  flag_set, count = result.stdout.split()[-2:]
  return flag_set, int(count)


def test_entry_points_use_eigen_convolutions_and_keep_a_users_setting():
  assert _run('') == ('True', 0)
  # The user's own setting wins: here jaxlib's default, YNNPACK for this convolution.
  assert _run('--xla_cpu_experimental_ynn_fusion_type=+individual_convolution') == ('False', 1)
