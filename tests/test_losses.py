"""The loss terms against their definitions, and the stability of the BCEs."""

import jax
import jax.numpy as jnp
import numpy as np

from vaegan_jax import losses


def test_kl_divergence_of_standard_normal_is_zero():
  assert float(losses.kl_divergence(jnp.zeros((3, 5)), jnp.zeros((3, 5)))) == 0.0


def test_kl_divergence_matches_closed_form():
  mu = jnp.array([[0.5, -1.0]])
  var = jnp.array([[2.0, 0.25]])
  expected = 0.5 * np.sum(var + mu**2 - 1.0 - np.log(var))
  np.testing.assert_allclose(losses.kl_divergence(mu, jnp.log(var)), expected, rtol=1e-6)


def test_kl_divergence_sums_latents_and_averages_batch():
  mu = jnp.ones((4, 10))
  np.testing.assert_allclose(losses.kl_divergence(mu, jnp.zeros_like(mu)), 5.0)


def test_feature_likelihood_is_half_squared_distance_per_example():
  a = jnp.zeros((2, 3, 2))
  b = jnp.ones((2, 3, 2)) * jnp.array([1.0, 2.0])[:, None, None]
  # Example 0: 0.5 * 6 * 1 = 3; example 1: 0.5 * 6 * 4 = 12; mean 7.5.
  np.testing.assert_allclose(losses.feature_likelihood_loss(a, b), 7.5)


def test_bce_matches_naive_formula_and_stays_finite():
  logits = jnp.array([-3.0, -0.5, 0.0, 2.0])
  p = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(losses.bce_real(logits), -np.mean(np.log(p)), rtol=1e-5)
  np.testing.assert_allclose(losses.bce_fake(logits), -np.mean(np.log(1 - p)), rtol=1e-5)
  extreme = jnp.array([-1000.0, 1000.0])
  # log(sigmoid(-1000)) would be log(0) = -inf; log-sigmoid gives -1000.
  np.testing.assert_allclose(losses.bce_real(extreme), 500.0, rtol=1e-6)
  np.testing.assert_allclose(losses.bce_fake(extreme), 500.0, rtol=1e-6)
  grads = jax.grad(lambda x: losses.bce_real(x) + losses.bce_fake(x))(extreme)
  assert np.all(np.isfinite(grads))


def test_discriminator_and_generator_losses():
  real, recon, prior = jnp.array([1.0, 2.0]), jnp.array([-1.0, 0.5]), jnp.array([0.0, -2.0])
  expected_dis = losses.bce_real(real) + losses.bce_fake(recon) + losses.bce_fake(prior)
  np.testing.assert_allclose(losses.discriminator_loss(real, [recon, prior]), expected_dis)
  # Saturating: the decoder minimises sum log(1 - D(fake)), the fake part of L_GAN.
  saturating = losses.generator_loss([recon, prior], saturating=True)
  expected = np.mean(np.log(1 - jax.nn.sigmoid(recon))) + np.mean(np.log(1 - jax.nn.sigmoid(prior)))
  np.testing.assert_allclose(saturating, expected, rtol=1e-5)
  # Non-saturating: -log D(fake).
  non_saturating = losses.generator_loss([recon, prior], saturating=False)
  np.testing.assert_allclose(non_saturating, losses.bce_real(recon) + losses.bce_real(prior))
  # Both push D(fake) up: their gradients w.r.t. the fake logits are negative.
  for sat in (True, False):
    g = jax.grad(lambda x: losses.generator_loss([x], saturating=sat))(recon)
    assert np.all(g < 0)
