"""Freed host memory is reused instead of re-faulted (vaegan_jax/cpu/host_memory.py)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # A fresh process (mallopt is process-wide).

# Allocates, touches and frees a 256 MB block as XLA does its buffers, then counts the
# page faults of doing it three times more. mallopt() is process-wide: a fresh process.
_PROGRAM = """
import ctypes, resource
from vaegan_jax.cpu import host_memory

applied = host_memory.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 256 << 20
def touch_and_free():
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  touch_and_free()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> tuple[str, int]:
  env = dict(os.environ, VAEGAN_KEEP_FREED_MEMORY='1' if keep else '0')
  result = subprocess.run(
      [sys.executable, '-c', _PROGRAM],
      env=env,
      capture_output=True,
      text=True,
      check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  applied, faults = result.stdout.split()
  return applied, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='tunes glibc malloc only')
def test_freed_blocks_are_reused_and_the_default_can_be_kept():
  applied, kept_faults = _faults(keep=True)
  assert applied == 'True'
  applied, default_faults = _faults(keep=False)
  assert applied == 'False'
  pages = 3 * (256 << 20) // os.sysconf('SC_PAGE_SIZE')
  # glibc's default mmap()s each block afresh: every page faults again (fewer with
  # transparent huge pages); kept, the heap's pages are reused.
  assert kept_faults < 0.01 * pages
  assert default_faults > 20 * max(kept_faults, 1)
