"""What the trained model makes, in evaluation mode (BatchNorm running statistics)."""

from typing import Any

import jax

from vaegan_jax.train_state import Networks

Variables = dict[str, dict[str, Any]]  # {network: {'params', 'batch_stats'}}


def decode(networks: Networks, variables: Variables, z: jax.Array) -> jax.Array:
  """Dec(z): images in [-1, 1]."""
  return networks.decoder.apply(variables['decoder'], z, train=False)


def encode(networks: Networks, variables: Variables,
           images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Enc(x): the posterior's (mu, logvar)."""
  return networks.encoder.apply(variables['encoder'], images, train=False)


def samples_and_reconstructions(networks: Networks, variables: Variables, z: jax.Array,
                                images: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """Dec(z) for prior latents z, and Dec(mu(x)) for real images x (None for a GAN)."""
  if networks.encoder is None:
    return decode(networks, variables, z), None
  mu, _ = encode(networks, variables, images)
  return decode(networks, variables, z), decode(networks, variables, mu)
