"""The data-parallel layout: every device of every process on one 'data' mesh axis.

The global batch is split along 'data' (each process feeds its own rows) and the
state is replicated, so BatchNorm statistics are those of the global batch and
results do not depend on the device count.
"""

import jax


def data_parallel_shardings() -> tuple[jax.NamedSharding, jax.NamedSharding]:
  """(replicated, split along the batch) over a 'data' mesh of every device of every process."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.NamedSharding(mesh, jax.P()), jax.NamedSharding(mesh, jax.P('data'))
