"""One VAE-GAN update of all three networks, each by its own loss only (or of the
networks of a baseline model, config.model; see train_state.MODELS).

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
from vaegan_jax.train_state import MODELS, NETWORKS, ModelSpec, NetworkState, Networks
from vaegan_jax.train_state import Optimizers, TrainState, update_ema

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# The generated images Dis judges: reconstructions Dec(z) and prior samples Dec(z_p).
FAKES = ('recon', 'prior')


def _apply_train(module, params, batch_stats, inputs):
  outputs, mutated = module.apply(
      {'params': params, 'batch_stats': batch_stats}, inputs, train=True, mutable=['batch_stats']
  )
  return outputs, mutated['batch_stats']


def _run_batches(module, params, batch_stats, inputs: list[jax.Array], batches: str):
  """Applies `module` to each of `inputs`, as one 'joint' batch or 'separate' ones.

  Joint, BatchNorm normalises all inputs with shared statistics (the paper's code
  for Dis); separate, each input has its own, and the running statistics are
  updated in turn (the seed; the paper's code for Dec).
  """
  if batches == 'joint':
    outputs, batch_stats = _apply_train(module, params, batch_stats, jnp.concatenate(inputs))
    splits = [sum(x.shape[0] for x in inputs[: i + 1]) for i in range(len(inputs) - 1)]
    per_input = jax.tree.map(lambda y: jnp.split(y, splits), outputs)
    if isinstance(outputs, tuple):
      return [tuple(parts) for parts in zip(*per_input)], batch_stats
    return per_input, batch_stats
  results = []
  for x in inputs:
    y, batch_stats = _apply_train(module, params, batch_stats, x)
    results.append(y)
  return results, batch_stats


def _rejected_fakes(spec: ModelSpec, loss: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fakes (FAKES) Dis learns to reject: the model's, or loss.discriminator_fakes."""
  if spec.fakes is not None:
    return spec.fakes
  choice = loss.discriminator_fakes
  return tuple(
      name
      for name, chosen in (
          ('recon', choice in ('reconstructions', 'both')),
          ('prior', choice in ('prior', 'both')),
      )
      if chosen
  )


def uses_prior_samples(spec: ModelSpec, loss: ml_collections.ConfigDict) -> bool:
  """Whether Dec decodes prior latents z_p: only for Dis to judge."""
  return 'prior' in _rejected_fakes(spec, loss)


def judged_batches(term: str, spec: ModelSpec, loss: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The batches ('real' and FAKES) whose Dis outputs loss term `term` reads."""
  if term == 'llike':
    return ('real', 'recon') if spec.likelihood == 'dis_l' else ()
  if term == 'gan_discriminator':
    return ('real',) + _rejected_fakes(spec, loss)
  if term == 'gan_decoder':
    return _rejected_fakes(spec, loss)
  return ()


def generate(
    networks: Networks,
    spec: ModelSpec,
    loss: ml_collections.ConfigDict,
    latent_dim: int,
    params: dict[str, Any],
    batch_stats: dict[str, Any],
    images: jax.Array,
    rng: jax.Array,
) -> tuple[dict[str, jax.Array], dict[str, Any]]:
  """Enc and Dec in training mode: mu, logvar and the fakes (FAKES) the model makes.

  Returns the outputs and the new BatchNorm statistics of the networks it ran.
  """
  noise_rng, prior_rng = jax.random.split(rng)
  prior = uses_prior_samples(spec, loss)
  new_stats, outputs, latents = {}, {}, []
  if 'encoder' in spec.networks:
    (mu, logvar), new_stats['encoder'] = _apply_train(
        networks.encoder, params['encoder'], batch_stats['encoder'], images
    )
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(noise_rng, mu.shape, mu.dtype)
    outputs.update(mu=mu, logvar=logvar)
    latents.append(z)
  if prior:
    latents.append(jax.random.normal(prior_rng, (images.shape[0], latent_dim), images.dtype))
  decoded, new_stats['decoder'] = _run_batches(
      networks.decoder,
      params['decoder'],
      batch_stats['decoder'],
      latents,
      loss.decoder_batches,
  )
  if 'encoder' in spec.networks:
    outputs['recon'] = decoded[0]
  if prior:
    outputs['prior'] = decoded[-1]
  return outputs, new_stats


def judge(
    networks: Networks,
    batches: str,
    params: Any,
    batch_stats: Any,
    images: jax.Array,
    fakes: dict[str, jax.Array],
) -> tuple[dict[str, jax.Array], Any]:
  """Dis in training mode on the real images and the fakes, as one BatchNorm batch or
  separate ones (`batches`, config.loss.discriminator_batches): logits and Dis_l
  features. Returns the outputs and Dis's new BatchNorm statistics.
  """
  names = [name for name in FAKES if name in fakes]
  judged, new_stats = _run_batches(
      networks.discriminator,
      params,
      batch_stats,
      [images] + [fakes[n] for n in names],
      batches,
  )
  outputs = {'real_logits': judged[0][0], 'real_features': judged[0][1]}
  for name, (logits, features) in zip(names, judged[1:]):
    outputs[f'{name}_logits'] = logits
    if name == 'recon':  # Only the reconstructions' features enter a loss (L_llike).
      outputs['recon_features'] = features
  return outputs, new_stats


def loss_weights(spec: ModelSpec, loss: ml_collections.ConfigDict) -> dict[str, dict[str, float]]:
  """Each used network's loss as a weighted sum of compute_losses' terms: the model's
  ModelSpec.losses (train_state.MODELS) with config.loss's weights (beta, ...) put in.

  The one definition of the losses' make-up: their values and compute_gradients'
  sharing of work between them both read it.
  """
  return {
      network: {
          term: loss[weight] if isinstance(weight, str) else weight
          for term, weight in terms.items()
      }
      for network, terms in spec.losses.items()
  }


def compute_losses(
    outputs: dict[str, jax.Array],
    images: jax.Array,
    spec: ModelSpec,
    loss: ml_collections.ConfigDict,
) -> dict[str, jax.Array]:
  """The loss terms (see loss_weights), each used network's loss, and Dis's costs."""
  terms = {}
  if 'encoder' in spec.networks:
    terms['kl'] = losses.kl_divergence(outputs['mu'], outputs['logvar'])
  if spec.likelihood == 'pixels':
    terms['llike'] = losses.feature_likelihood_loss(outputs['recon'], images)
  elif spec.likelihood == 'dis_l':
    terms['llike'] = losses.feature_likelihood_loss(
        outputs['recon_features'], outputs['real_features']
    )
  if 'discriminator' in spec.networks:
    fake_logits = [outputs[f'{name}_logits'] for name in _rejected_fakes(spec, loss)]
    terms['gan_discriminator'] = losses.discriminator_loss(outputs['real_logits'], fake_logits)
    terms['real_cost'] = losses.bce_real(outputs['real_logits'])
    terms['fake_cost'] = sum(losses.bce_fake(x) for x in fake_logits) / len(fake_logits)
  if spec.decoder_plays_gan:
    terms['gan_decoder'] = losses.generator_loss(
        fake_logits, saturating=loss.decoder_gan_loss == 'saturating'
    )
  for network, weights in loss_weights(spec, loss).items():
    terms[network] = sum(weight * terms[term] for term, weight in weights.items())
  return terms


def reuses_dis_gradient_for_gan_decoder(spec: ModelSpec, loss: ml_collections.ConfigDict) -> bool:
  """Whether Dec's L_GAN gradient at the fakes is minus that of Dis's loss.

  The saturating L_GAN term of Dec is minus Dis's cross-entropy on the fakes, and
  with separate BatchNorm batches in Dis (config.loss.discriminator_batches) Dis's
  cross-entropy on the real images does not depend on the fakes: the gradient
  that Dis's own loss pulls back to the fakes serves Dec, negated, and Dec's GAN
  term needs no pull-back through Dis of its own.
  """
  return (
      spec.decoder_plays_gan
      and loss.discriminator_batches == 'separate'
      and loss.decoder_gan_loss == 'saturating'
  )


def compute_gradients(
    networks: Networks,
    spec: ModelSpec,
    loss: ml_collections.ConfigDict,
    latent_dim: int,
    state: TrainState,
    images: jax.Array,
    rng: jax.Array,
):
  """Gradient of each used network's loss with respect to its own parameters.

  One forward pass, in two stages with a vector-Jacobian product each: Enc and
  Dec from the images to the fakes (`generate`), Dis from the real images and the
  fakes to logits and Dis_l features (`judge`). Backward, the gradient of each loss
  term is pulled back through Dis once, to Dis's parameters where Dis's loss has
  the term and to the fakes where Enc's or Dec's does; then Enc and Dec each pull
  their loss's weighted sum of those gradients (and of the terms they meet
  directly: L_prior, L_pixel) back through the first stage and keep their own
  part. So no network is moved by another's loss, and Dis's backward pass is
  shared between its own loss, Dec's and Enc's instead of repeated for each (see
  reuses_dis_gradient_for_gan_decoder); XLA drops what no one reads.
  Returns (grads, losses, outputs, new_batch_stats); grads is keyed by network.
  """
  used = spec.networks
  params = {name: getattr(state, name).params for name in used}
  batch_stats = {name: getattr(state, name).batch_stats for name in used}
  weights = loss_weights(spec, loss)
  generators = [name for name in used if name != 'discriminator']
  gen_outputs, gen_pull_back, new_stats = jax.vjp(
      lambda p: generate(networks, spec, loss, latent_dim, p, batch_stats, images, rng),
      {name: params[name] for name in generators},
      has_aux=True,
  )
  outputs = dict(gen_outputs)
  fakes = {name: gen_outputs[name] for name in FAKES if name in gen_outputs}
  if 'discriminator' in used:
    dis_outputs, dis_pull_back, new_stats['discriminator'] = jax.vjp(
        lambda p, f: judge(
            networks, loss.discriminator_batches, p, batch_stats['discriminator'], images, f
        ),
        params['discriminator'],
        fakes,
        has_aux=True,
    )
    outputs.update(dis_outputs)
  # Each term's gradient with respect to all outputs, once.
  needed = {term for network_weights in weights.values() for term in network_weights}
  gradients = {
      term: jax.grad(lambda o, t=term: compute_losses(o, images, spec, loss)[t])(outputs)
      for term in needed
  }

  grads, at_fakes = {}, {}
  if 'discriminator' in used:
    reuse = reuses_dis_gradient_for_gan_decoder(spec, loss)
    joint = loss.discriminator_batches == 'joint'
    judged_terms = [
        term
        for term in ('gan_discriminator', 'llike', 'gan_decoder')
        if term in needed and not (term == 'gan_decoder' and reuse)
    ]
    dis_grads = []
    for term in judged_terms:
      term_dis_grads, term_at_fakes = dis_pull_back({k: gradients[term][k] for k in dis_outputs})
      # Separate BatchNorm batches are independent: a fake whose outputs the term
      # does not read gets no gradient, so XLA drops that part of the pull-back
      # (it cannot tell that it pulls back zeros).
      read = judged_batches(term, spec, loss)
      at_fakes[term] = {
          name: g if joint or name in read else jnp.zeros_like(g)
          for name, g in term_at_fakes.items()
      }
      if term in weights['discriminator']:
        weight = weights['discriminator'][term]
        dis_grads.append(jax.tree.map(lambda g, w=weight: w * g, term_dis_grads))
    grads['discriminator'] = jax.tree.map(lambda *g: sum(g), *dis_grads)
    if reuse:
      at_fakes['gan_decoder'] = jax.tree.map(jnp.negative, at_fakes['gan_discriminator'])

  for name in generators:
    cotangent = jax.tree.map(jnp.zeros_like, gen_outputs)
    for term, weight in weights[name].items():
      for key in gen_outputs:
        total = gradients[term][key] + at_fakes.get(term, {}).get(key, 0.0)
        cotangent[key] = cotangent[key] + weight * total
    grads[name] = gen_pull_back(cotangent)[0][name]
  return grads, compute_losses(outputs, images, spec, loss), outputs, new_stats


def equilibrium_gates(
    real_cost: jax.Array, fake_cost: jax.Array, equilibrium: float, margin: float
) -> tuple[jax.Array, jax.Array]:
  """The paper code's balancing: (update Dis?, update Dec?).

  Dis pauses while it is too good (a cost below equilibrium - margin), Dec while
  Dis is too bad (a cost above equilibrium + margin); never both at once.
  """
  update_dis = (real_cost >= equilibrium - margin) & (fake_cost >= equilibrium - margin)
  update_dec = (real_cost <= equilibrium + margin) & (fake_cost <= equilibrium + margin)
  neither = ~update_dis & ~update_dec
  return update_dis | neither, update_dec | neither


def _update_network(
    network: NetworkState,
    grads: Any,
    batch_stats: Any,
    optimizer: optax.GradientTransformation,
    enabled: jax.Array | bool,
) -> NetworkState:
  updates, opt_state = optimizer.update(grads, network.opt_state, network.params)
  updated = NetworkState(optax.apply_updates(network.params, updates), batch_stats, opt_state)
  if enabled is True:
    return updated
  # A skipped update leaves parameters and optimizer state as they were.
  kept = network.replace(batch_stats=batch_stats)
  return jax.tree.map(lambda new, old: jnp.where(enabled, new, old), updated, kept)


# The loss terms whose finiteness the step checks, with the names the user reads.
FINITE_CHECKS = {
    'kl': 'KL (L_prior)',
    'llike': 'L_llike',
    'gan_decoder': "L_GAN (decoder's)",
    'loss/discriminator': "L_GAN (discriminator's cross-entropy)",
}


# Everything the step checks, in the order an error message lists it.
CHECKED_TERMS = (
    *FINITE_CHECKS,
    *(f'gradient/{name}' for name in NETWORKS),
    *(f'batch_stats/{name}' for name in NETWORKS),
)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    networks: Networks,
    optimizers: Optimizers,
    spec: ModelSpec,
    loss: ml_collections.ConfigDict,
    latent_dim: int,
    ema_decay: float,
) -> tuple[TrainState, Metrics]:
  """One update of the model's networks (`spec`) by their losses (`loss`, config.loss)
  on a batch of images in [-1, 1]; the moving average of weights, if the state keeps
  one, with `ema_decay`.

  A step whose losses or gradients are not all finite leaves the networks as they
  were (only the step counter moves on, past the batch) and says so in the
  metrics 'nonfinite/<term>', so a NaN can never reach the parameters.
  """
  used = spec.networks
  grads, all_losses, outputs, new_stats = compute_gradients(
      networks, spec, loss, latent_dim, state, batch['image'], rng
  )
  enabled = dict.fromkeys(used, True)
  if loss.equilibrium_gating and 'discriminator' in used:
    update_dis, update_dec = equilibrium_gates(
        all_losses['real_cost'], all_losses['fake_cost'], loss.equilibrium, loss.margin
    )
    enabled['discriminator'] = update_dis
    if 'gan_decoder' in all_losses:  # Only a decoder that plays the GAN game is held back.
      enabled['decoder'] = update_dec
  new_networks = {
      name: _update_network(
          getattr(state, name),
          grads[name],
          new_stats[name],
          getattr(optimizers, name),
          enabled[name],
      )
      for name in used
  }
  metrics = {f'loss/{name}': all_losses[name] for name in used}
  metrics.update(
      {name: all_losses[name] for name in ('kl', 'llike', 'gan_decoder') if name in all_losses}
  )
  for key, logits in (
      ('d_real', 'real_logits'),
      ('d_recon', 'recon_logits'),
      ('d_prior', 'prior_logits'),
  ):
    if logits in outputs:
      metrics[key] = jnp.mean(jax.nn.sigmoid(outputs[logits]))
  for name in ('discriminator', 'decoder'):
    if name in used:
      metrics[f'skipped/{name}'] = 1.0 - jnp.asarray(enabled[name], jnp.float32)

  finite = {term: jnp.all(jnp.isfinite(metrics[term])) for term in FINITE_CHECKS if term in metrics}
  finite.update({f'gradient/{name}': _all_finite(grads[name]) for name in used})
  finite.update({f'batch_stats/{name}': _all_finite(new_stats[name]) for name in used})
  all_finite = jnp.all(jnp.stack(list(finite.values())))
  metrics.update({f'nonfinite/{term}': 1.0 - ok.astype(jnp.float32) for term, ok in finite.items()})
  metrics['nonfinite'] = 1.0 - all_finite.astype(jnp.float32)
  new_networks = jax.tree.map(
      lambda new, old: jnp.where(all_finite, new, old),
      new_networks,
      {name: getattr(state, name) for name in used},
  )
  new_state = state.replace(step=state.step + 1, **new_networks)
  if state.ema is not None:  # A skipped, non-finite step leaves the average as it was.
    ema = update_ema(state.ema, new_state, state.step, ema_decay)
    new_state = new_state.replace(
        ema=jax.tree.map(lambda new, old: jnp.where(all_finite, new, old), ema, state.ema)
    )
  return new_state, metrics


StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def bind_train_step(
    config: ml_collections.ConfigDict, networks: Networks, optimizers: Optimizers
) -> StepFn:
  """train_step(state, batch, rng) with what it reads of `config` bound: the model
  (config.model), config.loss, the latent size and the moving average's decay."""
  return functools.partial(
      train_step,
      networks=networks,
      optimizers=optimizers,
      spec=MODELS[config.model],
      loss=config.loss,
      latent_dim=config.networks.latent_dim,
      ema_decay=config.ema_decay,
  )


def make_train_step(
    config: ml_collections.ConfigDict, networks: Networks, optimizers: Optimizers
) -> StepFn:
  """The jitted step; the state argument is donated, so its buffers are reused."""
  return jax.jit(bind_train_step(config, networks, optimizers), donate_argnums=0)
