"""What the trained model makes, in evaluation mode (BatchNorm running statistics)."""

import jax

from vaegan_jax.train_state import NetworkState, Networks, TrainState


def _variables(network: NetworkState) -> dict:
  return {'params': network.params, 'batch_stats': network.batch_stats}


def decode(networks: Networks, state: TrainState, z: jax.Array) -> jax.Array:
  """Dec(z): images in [-1, 1]."""
  return networks.decoder.apply(_variables(state.decoder), z, train=False)


def encode(networks: Networks, state: TrainState,
           images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Enc(x): the posterior's (mu, logvar)."""
  return networks.encoder.apply(_variables(state.encoder), images, train=False)


def samples_and_reconstructions(networks: Networks, state: TrainState, z: jax.Array,
                                images: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """Dec(z) for prior latents z, and Dec(mu(x)) for real images x (None for a GAN)."""
  if networks.encoder is None:
    return decode(networks, state, z), None
  mu, _ = encode(networks, state, images)
  return decode(networks, state, z), decode(networks, state, mu)
