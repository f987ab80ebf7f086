"""Keeps freed host memory in the process, so that large buffers are not re-faulted each step.

XLA's CPU backend allocates and frees its large buffers (activations, convolution
scratch: gigabytes per train step of the 64x64 networks) in every step. glibc's
malloc serves blocks above 32 MB with fresh mmap()s and hands them back on free(),
so the kernel zero-fills every page again: millions of page faults and a large share
of a step's CPU time (docs/performance.md). Serving everything from one
heap that is never trimmed makes a step reuse the previous step's pages. The cost
is that the process keeps its peak host memory until it exits, which a training
run reaches in its first step anyway.

Only glibc (Linux) is affected and tuned; elsewhere this does nothing. Set
VAEGAN_KEEP_FREED_MEMORY=0 to leave malloc's defaults.
"""

import ctypes
import os
import platform

# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_MMAP_MAX, 0),  # Every block from the heap, none mmap()ed (and unmapped on free).
    (_M_TRIM_THRESHOLD, -1),  # glibc reads it as size_t: SIZE_MAX, never trim the heap.
    (_M_TOP_PAD, 1 << 30),  # Grow the heap 1 GB at a time: few sbrk() calls.
    # One heap for all threads: other threads' arenas are capped at 64 MB and would
    # mmap() the large blocks of XLA's worker threads after all.
    (_M_ARENA_MAX, 1),
)


def keep_freed_memory() -> bool:
  """Tunes glibc's malloc as the module docstring says; True if it did.

  Call it first thing in a process, before JAX starts its threads: a thread that
  has allocated already keeps its own arena.
  """
  if os.environ.get('VAEGAN_KEEP_FREED_MEMORY', '1') == '0':
    return False
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  mallopt = ctypes.CDLL(None).mallopt
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  return all([mallopt(parameter, value) == 1 for parameter, value in _SETTINGS])
