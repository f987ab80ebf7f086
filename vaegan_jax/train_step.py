"""One VAE-GAN update of all three networks, each by its own loss only (or of the
networks of a baseline model, config.model; see compute_losses).

    Enc  <- L_prior + beta * L_llike
    Dec  <- gamma * L_llike - L_GAN        (saturating or non-saturating)
    Dis  <- -L_GAN                          (binary cross-entropy)

"Limiting error signals to relevant networks" (Larsen et al. 2016, section 2.2):
each network's gradient is taken of its own loss with respect to its own
parameters only, so L_llike never moves Dis and L_GAN never moves Enc. All three
gradients are evaluated at the same parameters and applied together, as the
paper's code does; the whole update is one jitted function.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vaegan_jax import losses
from vaegan_jax.train_state import NETWORKS, NetworkState, Networks, Optimizers, TrainState
from vaegan_jax.train_state import used_networks

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def _apply_train(module, params, batch_stats, inputs):
  outputs, mutated = module.apply({'params': params, 'batch_stats': batch_stats}, inputs,
                                  train=True, mutable=['batch_stats'])
  return outputs, mutated['batch_stats']


def _run_batches(module, params, batch_stats, inputs: list[jax.Array], concat: bool):
  """Applies `module` to each of `inputs`, as one concatenated batch or one by one.

  Concatenated, BatchNorm normalises all inputs with shared statistics (the
  paper's code); one by one, each input has its own, and the running statistics
  are updated in turn (the seed).
  """
  if concat:
    outputs, batch_stats = _apply_train(module, params, batch_stats, jnp.concatenate(inputs))
    splits = [sum(x.shape[0] for x in inputs[:i + 1]) for i in range(len(inputs) - 1)]
    per_input = jax.tree.map(lambda y: jnp.split(y, splits), outputs)
    if isinstance(outputs, tuple):
      return [tuple(parts) for parts in zip(*per_input)], batch_stats
    return per_input, batch_stats
  results = []
  for x in inputs:
    y, batch_stats = _apply_train(module, params, batch_stats, x)
    results.append(y)
  return results, batch_stats


def uses_prior_samples(config: ml_collections.ConfigDict) -> bool:
  """Whether Dis judges Dec(z_p) for prior latents: always for a GAN, else by config."""
  return config.model == 'gan' or (
      'discriminator' in used_networks(config) and
      config.loss.discriminator_fakes in ('prior', 'both'))


def _fake_logits(outputs: dict[str, jax.Array], config: ml_collections.ConfigDict
                 ) -> list[jax.Array]:
  """Dis's logits of the fakes it learns to reject (config.loss.discriminator_fakes)."""
  fakes = []
  if config.model != 'gan' and config.loss.discriminator_fakes in ('reconstructions', 'both'):
    fakes.append(outputs['recon_logits'])
  if uses_prior_samples(config):
    fakes.append(outputs['prior_logits'])
  return fakes


def forward(networks: Networks, config: ml_collections.ConfigDict,
            params: dict[str, Any], batch_stats: dict[str, Any], images: jax.Array,
            rng: jax.Array) -> tuple[dict[str, jax.Array], dict[str, Any]]:
  """Runs the model's networks in training mode; returns their outputs and new BN stats."""
  noise_rng, prior_rng = jax.random.split(rng)
  used = used_networks(config)
  latent_shape = (images.shape[0], config.networks.latent_dim)
  new_stats, outputs, latents = {}, {}, []
  if 'encoder' in used:
    (mu, logvar), new_stats['encoder'] = _apply_train(
        networks.encoder, params['encoder'], batch_stats['encoder'], images)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(noise_rng, mu.shape, mu.dtype)
    outputs.update(mu=mu, logvar=logvar)
    latents.append(z)
  if uses_prior_samples(config):
    latents.append(jax.random.normal(prior_rng, latent_shape, images.dtype))
  decoded, new_stats['decoder'] = _run_batches(
      networks.decoder, params['decoder'], batch_stats['decoder'], latents,
      config.loss.concat_batches)
  if 'encoder' in used:
    outputs['recon'] = decoded[0]
  if uses_prior_samples(config):
    outputs['prior'] = decoded[-1]
  if 'discriminator' in used:
    judged, new_stats['discriminator'] = _run_batches(
        networks.discriminator, params['discriminator'], batch_stats['discriminator'],
        [images] + decoded, config.loss.concat_batches)
    outputs.update(real_logits=judged[0][0], real_features=judged[0][1])
    if 'encoder' in used:
      outputs.update(recon_logits=judged[1][0], recon_features=judged[1][1])
    if uses_prior_samples(config):
      outputs['prior_logits'] = judged[-1][0]
  return outputs, new_stats


def compute_losses(outputs: dict[str, jax.Array], images: jax.Array,
                   config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Each used network's loss (keys of NETWORKS) and the terms it is made of.

    vaegan    Enc <- L_prior + beta L_llike   Dec <- gamma L_llike - L_GAN   Dis <- -L_GAN
    vae_disl  Enc <- L_prior + beta L_llike   Dec <- L_llike                 Dis <- -L_GAN
    vae       Enc <- L_prior + beta L_pixel   Dec <- L_pixel
    gan                                       Dec <- -L_GAN (prior samples)  Dis <- -L_GAN

  L_llike compares Dis_l features, L_pixel the pixels (the same Gaussian, identity
  covariance: beta is then 1/sigma^2 of the pixel likelihood).
  """
  model, loss = config.model, config.loss
  terms = {}
  if model != 'gan':
    terms['kl'] = losses.kl_divergence(outputs['mu'], outputs['logvar'])
    if model == 'vae':
      terms['llike'] = losses.feature_likelihood_loss(outputs['recon'], images)
    else:
      terms['llike'] = losses.feature_likelihood_loss(outputs['recon_features'],
                                                      outputs['real_features'])
    terms['encoder'] = terms['kl'] + loss.beta * terms['llike']
  if model in ('vae', 'vae_disl'):
    terms['decoder'] = terms['llike']
  if model in ('vaegan', 'gan', 'vae_disl'):
    fake_logits = _fake_logits(outputs, config)
    terms['discriminator'] = losses.discriminator_loss(outputs['real_logits'], fake_logits)
    terms['real_cost'] = losses.bce_real(outputs['real_logits'])
    terms['fake_cost'] = sum(losses.bce_fake(l) for l in fake_logits) / len(fake_logits)
  if model in ('vaegan', 'gan'):
    terms['gan_decoder'] = losses.generator_loss(
        _fake_logits(outputs, config), saturating=loss.decoder_gan_loss == 'saturating')
    terms['decoder'] = terms['gan_decoder'] + (
        loss.gamma * terms['llike'] if model == 'vaegan' else 0.0)
  return terms


def compute_gradients(networks: Networks, config: ml_collections.ConfigDict,
                      state: TrainState, images: jax.Array, rng: jax.Array):
  """Gradient of each used network's loss with respect to its own parameters.

  One forward pass of all networks; then, per network, the gradient of its loss
  with respect to the forward's outputs is pulled back through the forward (a
  vector-Jacobian product) and only that network's part is kept. XLA drops the
  unused parts of each pull-back.
  Returns (grads, losses, outputs, new_batch_stats); grads is keyed by network.
  """
  used = used_networks(config)
  params = {name: getattr(state, name).params for name in used}
  batch_stats = {name: getattr(state, name).batch_stats for name in used}
  outputs, pull_back, new_stats = jax.vjp(
      lambda p: forward(networks, config, p, batch_stats, images, rng), params,
      has_aux=True)
  grads = {}
  for name in used:
    output_grads = jax.grad(lambda o, n=name: compute_losses(o, images, config)[n])(outputs)
    grads[name] = pull_back(output_grads)[0][name]
  return grads, compute_losses(outputs, images, config), outputs, new_stats


def equilibrium_gates(real_cost: jax.Array, fake_cost: jax.Array, equilibrium: float,
                      margin: float) -> tuple[jax.Array, jax.Array]:
  """The paper code's balancing: (update Dis?, update Dec?).

  Dis pauses while it is too good (a cost below equilibrium - margin), Dec while
  Dis is too bad (a cost above equilibrium + margin); never both at once.
  """
  update_dis = (real_cost >= equilibrium - margin) & (fake_cost >= equilibrium - margin)
  update_dec = (real_cost <= equilibrium + margin) & (fake_cost <= equilibrium + margin)
  neither = ~update_dis & ~update_dec
  return update_dis | neither, update_dec | neither


def _update_network(network: NetworkState, grads: Any, batch_stats: Any,
                    optimizer: optax.GradientTransformation,
                    enabled: jax.Array | bool) -> NetworkState:
  updates, opt_state = optimizer.update(grads, network.opt_state, network.params)
  updated = NetworkState(optax.apply_updates(network.params, updates), batch_stats, opt_state)
  if enabled is True:
    return updated
  # A skipped update leaves parameters and optimizer state as they were.
  kept = network.replace(batch_stats=batch_stats)
  return jax.tree.map(lambda new, old: jnp.where(enabled, new, old), updated, kept)


# The loss terms whose finiteness the step checks, with the names the user reads.
FINITE_CHECKS = {'kl': 'KL (L_prior)', 'llike': 'L_llike', 'gan_decoder': "L_GAN (decoder's)",
                 'loss/discriminator': "L_GAN (discriminator's cross-entropy)"}


# Everything the step checks, in the order an error message lists it.
CHECKED_TERMS = (*FINITE_CHECKS, *(f'gradient/{name}' for name in NETWORKS),
                 *(f'batch_stats/{name}' for name in NETWORKS))


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, networks: Networks,
               optimizers: Optimizers,
               config: ml_collections.ConfigDict) -> tuple[TrainState, Metrics]:
  """One update of the model's networks on a batch of images in [-1, 1].

  A step whose losses or gradients are not all finite leaves the networks as they
  were (only the step counter moves on, past the batch) and says so in the
  metrics 'nonfinite/<term>', so a NaN can never reach the parameters.
  """
  used, loss = used_networks(config), config.loss
  grads, all_losses, outputs, new_stats = compute_gradients(
      networks, config, state, batch['image'], rng)
  enabled = dict.fromkeys(used, True)
  if loss.equilibrium_gating and 'discriminator' in used:
    update_dis, update_dec = equilibrium_gates(
        all_losses['real_cost'], all_losses['fake_cost'], loss.equilibrium, loss.margin)
    enabled['discriminator'] = update_dis
    if 'gan_decoder' in all_losses:  # Only a decoder that plays the GAN game is held back.
      enabled['decoder'] = update_dec
  new_networks = {
      name: _update_network(getattr(state, name), grads[name], new_stats[name],
                            getattr(optimizers, name), enabled[name])
      for name in used}
  metrics = {f'loss/{name}': all_losses[name] for name in used}
  metrics.update({name: all_losses[name] for name in ('kl', 'llike', 'gan_decoder')
                  if name in all_losses})
  for key, logits in (('d_real', 'real_logits'), ('d_recon', 'recon_logits'),
                      ('d_prior', 'prior_logits')):
    if logits in outputs:
      metrics[key] = jnp.mean(jax.nn.sigmoid(outputs[logits]))
  for name in ('discriminator', 'decoder'):
    if name in used:
      metrics[f'skipped/{name}'] = 1.0 - jnp.asarray(enabled[name], jnp.float32)

  finite = {term: jnp.all(jnp.isfinite(metrics[term])) for term in FINITE_CHECKS
            if term in metrics}
  finite.update({f'gradient/{name}': _all_finite(grads[name]) for name in used})
  finite.update({f'batch_stats/{name}': _all_finite(new_stats[name]) for name in used})
  all_finite = jnp.all(jnp.stack(list(finite.values())))
  metrics.update({f'nonfinite/{term}': 1.0 - ok.astype(jnp.float32)
                  for term, ok in finite.items()})
  metrics['nonfinite'] = 1.0 - all_finite.astype(jnp.float32)
  new_networks = jax.tree.map(lambda new, old: jnp.where(all_finite, new, old), new_networks,
                              {name: getattr(state, name) for name in used})
  return state.replace(step=state.step + 1, **new_networks), metrics


def make_train_step(config: ml_collections.ConfigDict, networks: Networks,
                    optimizers: Optimizers) -> Callable[[TrainState, Batch, jax.Array],
                                                        tuple[TrainState, Metrics]]:
  """The jitted step; the state argument is donated, so its buffers are reused."""
  step = functools.partial(train_step, networks=networks, optimizers=optimizers, config=config)
  return jax.jit(step, donate_argnums=0)
