"""The VAE-GAN's loss terms (Larsen et al. 2016, section 2), pure functions of arrays.

Each returns the batch mean of a per-example quantity. Binary cross-entropies work
on logits through log-sigmoid, so they stay finite however confident Dis becomes.
"""

import jax
import jax.numpy as jnp


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """L_prior = KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims."""
  kl = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)
  return jnp.mean(kl)


def feature_likelihood_loss(recon_features: jax.Array, real_features: jax.Array) -> jax.Array:
  """L_llike: Gaussian negative log-likelihood of Dis_l(x) with mean Dis_l(x~).

  Identity covariance, constants dropped: 0.5 * ||Dis_l(x~) - Dis_l(x)||^2 per
  example, summed over the features.
  """
  diff = (recon_features - real_features).reshape((recon_features.shape[0], -1))
  return jnp.mean(0.5 * jnp.sum(jnp.square(diff), axis=-1))


def bce_real(logits: jax.Array) -> jax.Array:
  """-log Dis(x): cross-entropy of logits against the label "real"."""
  return -jnp.mean(jax.nn.log_sigmoid(logits))


def bce_fake(logits: jax.Array) -> jax.Array:
  """-log(1 - Dis(x)): cross-entropy of logits against the label "fake"."""
  return -jnp.mean(jax.nn.log_sigmoid(-logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: list[jax.Array]) -> jax.Array:
  """-L_GAN = -log Dis(x) - sum over the fakes of log(1 - Dis(fake))."""
  return bce_real(real_logits) + sum(bce_fake(logits) for logits in fake_logits)


def generator_loss(fake_logits: list[jax.Array], saturating: bool) -> jax.Array:
  """The decoder's GAN term, summed over the fakes Dis sees.

  Saturating (the paper's minimax): L_GAN's fake terms, sum log(1 - Dis(fake)),
  which the decoder minimises; this is the "- L_GAN" of Dec's loss, with L_GAN
  read as the discriminator's cross-entropy. Non-saturating: -log Dis(fake),
  which keeps gradients alive while Dis still wins easily.
  """
  if saturating:
    return -sum(bce_fake(logits) for logits in fake_logits)
  return sum(bce_real(logits) for logits in fake_logits)
