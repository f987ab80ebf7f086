"""The data-parallel layout: every device of every process on one 'data' mesh axis,
and the host batches each process puts there.

The global batch is split along 'data' (each process feeds its own rows) and the
state is replicated, so BatchNorm statistics are those of the global batch and
results do not depend on the device count.
"""

import collections
from collections.abc import Iterator
import itertools

import jax
import numpy as np


def data_parallel_shardings() -> tuple[jax.NamedSharding, jax.NamedSharding]:
  """(replicated, split along the batch) over a 'data' mesh of every device of every process."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.NamedSharding(mesh, jax.P()), jax.NamedSharding(mesh, jax.P('data'))


def process_rows(sharding: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
  """[start, stop): the rows of each global batch that this process's devices hold."""
  rows = sorted(
      {
          (index[0].start or 0, index[0].stop or batch_size)
          for index in sharding.addressable_devices_indices_map((batch_size,)).values()
      }
  )
  start, stop = rows[0][0], rows[-1][1]
  if sum(b - a for a, b in rows) != stop - start:
    raise ValueError(f'This process holds non-contiguous rows {rows} of the global batch.')
  return start, stop


def prefetch_to_device(
    batches: Iterator[dict[str, np.ndarray]],
    sharding: jax.sharding.Sharding,
    batch_size: int,
    size: int = 2,
) -> Iterator[dict[str, jax.Array]]:
  """Global arrays of `batch_size` rows from this process's rows of each batch, the
  next `size` copied to the devices while the current one trains."""
  queue = collections.deque()

  def enqueue(n: int):
    for batch in itertools.islice(batches, n):
      queue.append(
          jax.tree.map(
              lambda x: jax.make_array_from_process_local_data(
                  sharding, x, (batch_size, *x.shape[1:])
              ),
              batch,
          )
      )

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
