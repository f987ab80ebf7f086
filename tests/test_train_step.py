"""Loss routing: each network moves by its own loss only, in one fused step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import digits
from tests.helpers import tiny
from vaegan_jax import train_state
from vaegan_jax import train_step

NETWORKS = train_state.NETWORKS


def _config(model='vaegan', **loss_overrides):
  config = tiny(digits.get_config())
  config.image_size = 28
  config.model = model
  for key, value in loss_overrides.items():
    config.loss[key] = value
  return config


@functools.lru_cache(maxsize=None)
def _setup(model='vaegan', **loss_overrides):
  """Networks, optimizers, initial state and jitted step for a tiny 28x28 config."""
  config = _config(model, **loss_overrides)
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=10)
  state = train_state.create_train_state(jax.random.PRNGKey(0), config, networks, optimizers)
  step = jax.jit(train_step.bind_train_step(config, networks, optimizers))
  return config, networks, optimizers, state, step


def _objective(config):
  """What train_step.py's functions read of a config: the ModelSpec and config.loss."""
  return train_state.MODELS[config.model], config.loss


def _batch(config):
  images = jax.random.uniform(
      jax.random.PRNGKey(7),
      (config.batch_size, config.image_size, config.image_size, config.num_channels),
      minval=-1.0,
      maxval=1.0,
  )
  return {'image': images}


def _reference_losses(networks, config, params, batch_stats, images, rng):
  """docs/model.md's losses (and the baselines') written out directly, independently of
  train_step.py."""
  loss, model = config.loss, config.model

  def apply(name, inputs):
    variables = {'params': params[name], 'batch_stats': batch_stats[name]}
    return getattr(networks, name).apply(variables, inputs, train=True, mutable=['batch_stats'])[0]

  noise_rng, prior_rng = jax.random.split(rng)
  n = images.shape[0]
  z_prior = jax.random.normal(prior_rng, (n, config.networks.latent_dim))
  dis_joint = loss.discriminator_batches == 'joint'
  dec_joint = loss.decoder_batches == 'joint'
  if model == 'gan':
    if dis_joint:
      logits, _ = apply('discriminator', jnp.concatenate([images, apply('decoder', z_prior)]))
      real_logits, prior_logits = logits[:n], logits[n:]
    else:
      real_logits, _ = apply('discriminator', images)
      prior_logits, _ = apply('discriminator', apply('decoder', z_prior))
    d_loss = -jnp.mean(jax.nn.log_sigmoid(real_logits)) - jnp.mean(
        jax.nn.log_sigmoid(-prior_logits)
    )
    if loss.decoder_gan_loss == 'saturating':
      g_loss = jnp.mean(jax.nn.log_sigmoid(-prior_logits))
    else:
      g_loss = -jnp.mean(jax.nn.log_sigmoid(prior_logits))
    return {'decoder': g_loss, 'discriminator': d_loss}

  mu, logvar = apply('encoder', images)
  z = mu + jnp.exp(logvar / 2) * jax.random.normal(noise_rng, mu.shape)
  kl = jnp.mean(-0.5 * jnp.sum(1 + logvar - mu**2 - jnp.exp(logvar), axis=1))
  if model == 'vae':
    recon = apply('decoder', z)
    pixel_nll = jnp.mean(0.5 * jnp.sum((recon - images) ** 2, axis=(1, 2, 3)))
    return {'encoder': kl + loss.pixel_beta * pixel_nll, 'decoder': pixel_nll}

  if dec_joint:
    recon, prior = jnp.split(apply('decoder', jnp.concatenate([z, z_prior])), 2)
  else:
    recon, prior = apply('decoder', z), apply('decoder', z_prior)
  if dis_joint:
    logits, features = apply('discriminator', jnp.concatenate([images, recon, prior]))
    real_logits, recon_logits, prior_logits = logits[:n], logits[n : 2 * n], logits[2 * n :]
    real_features, recon_features = features[:n], features[n : 2 * n]
  else:
    real_logits, real_features = apply('discriminator', images)
    recon_logits, recon_features = apply('discriminator', recon)
    prior_logits, _ = apply('discriminator', prior)
  fakes = {
      'reconstructions': [recon_logits],
      'prior': [prior_logits],
      'both': [recon_logits, prior_logits],
  }[loss.discriminator_fakes]
  llike = jnp.mean(0.5 * jnp.sum((recon_features - real_features) ** 2, axis=1))
  log_d_real = jnp.mean(jax.nn.log_sigmoid(real_logits))
  log_1m_d_fakes = sum(jnp.mean(jax.nn.log_sigmoid(-x)) for x in fakes)
  l_gan = log_d_real + log_1m_d_fakes
  if loss.decoder_gan_loss == 'saturating':
    decoder_gan = log_1m_d_fakes
  else:
    decoder_gan = -sum(jnp.mean(jax.nn.log_sigmoid(x)) for x in fakes)
  if model == 'vae_disl':
    return {'encoder': kl + loss.beta * llike, 'decoder': llike, 'discriminator': -l_gan}
  return {
      'encoder': kl + loss.beta * llike,
      'decoder': loss.gamma * llike + decoder_gan,
      'discriminator': -l_gan,
  }


# Saturating with separate Dis batches: Dec reuses Dis's pull-back
# (train_step.reuses_dis_gradient_for_gan_decoder); the others pull back their own.
# The fast tier checks the VAE-GAN and two baselines; `-m slow` every case.
_slow = pytest.mark.slow
SEPARATE = dict(discriminator_batches='separate', decoder_batches='separate')  # The seed's.
ROUTING_CASES = [
    dict(decoder_gan_loss='saturating'),  # The paper code's batches, the seed's saturating L_GAN.
    pytest.param(dict(SEPARATE, decoder_gan_loss='saturating'), marks=_slow),  # The seed's.
    pytest.param(
        dict(
            decoder_batches='joint',
            discriminator_fakes='prior',
            decoder_gan_loss='non_saturating',
            beta=0.5,
            gamma=2.0,
        ),
        marks=_slow,
    ),
    pytest.param(dict(SEPARATE, discriminator_fakes='reconstructions', gamma=0.1), marks=_slow),
    # The paper's baselines.
    dict(model='vae', pixel_beta=0.5, beta=3.0),  # beta weights Dis_l's L_llike only.
    pytest.param(dict(model='vae_disl', decoder_batches='joint', beta=0.5, gamma=2.0), marks=_slow),
    pytest.param(dict(SEPARATE, model='vae_disl', beta=0.5), marks=_slow),
    dict(model='gan', decoder_gan_loss='saturating'),
    pytest.param(dict(model='gan', decoder_gan_loss='non_saturating'), marks=_slow),
    pytest.param(dict(SEPARATE, model='gan', decoder_gan_loss='saturating'), marks=_slow),
]


@functools.lru_cache(maxsize=None)
def _computed_gradients(**overrides):
  """compute_gradients' results for a routing case, jitted once and shared by the tests."""
  config, networks, _, state, _ = _setup(**overrides)
  images = _batch(config)['image']
  rng = jax.random.PRNGKey(3)
  compute = functools.partial(
      train_step.compute_gradients, networks, *_objective(config), config.networks.latent_dim
  )
  grads, _, outputs, _ = jax.jit(compute)(state, images, rng)
  return config, networks, state, images, rng, grads, outputs


def _max_abs_difference(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('overrides', ROUTING_CASES)
def test_each_network_gets_the_gradient_of_its_own_loss(overrides):
  """compute_gradients against jax.grad of the losses written out again, per network.

  The tolerance is what rounding could move the reference by: its change when the
  images are perturbed by 1e-6 relative (ten times float32's rounding), at least
  1e-5 of the largest gradient. At initialisation some cases are ill-conditioned in
  float32 (with one BatchNorm batch such a perturbation moves Enc's and Dec's
  gradients by ~1e-3 of their largest element, else by ~1e-5), so two programs of
  the same maths part by that much; a mis-routed loss term moves a gradient by its
  own size.
  """
  config, networks, state, images, rng, grads, _ = _computed_gradients(**overrides)
  used = train_state.MODELS[config.model].networks
  assert sorted(grads) == sorted(used)
  params = {name: getattr(state, name).params for name in used}
  stats = {name: getattr(state, name).batch_stats for name in used}
  perturbed = images * (1 + 1e-6 * jax.random.normal(jax.random.PRNGKey(11), images.shape))
  for name in used:
    reference = jax.jit(
        jax.grad(
            lambda own, x, n=name: _reference_losses(
                networks, config, {**params, n: own}, stats, x, rng
            )[n]
        )
    )
    expected = reference(params[name], images)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(expected))
    rounding = _max_abs_difference(reference(params[name], perturbed), expected)
    tolerance = max(rounding, 1e-5 * scale)
    assert _max_abs_difference(grads[name], expected) <= tolerance, name
    assert tolerance < 0.05 * scale, name  # Still far below a mis-routed term.
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads[name]))


@pytest.mark.parametrize('overrides', ROUTING_CASES)
def test_judged_batches_are_those_each_loss_term_reads(overrides):
  """compute_gradients drops the pull-backs of the batches a term does not read,
  by judged_batches: listing one too few would lose a gradient."""
  config, _, _, images, _, _, outputs = _computed_gradients(**overrides)
  objective = _objective(config)
  terms = {term for weights in train_step.loss_weights(*objective).values() for term in weights}
  for term in terms:
    gradient = jax.grad(lambda o, t=term: train_step.compute_losses(o, images, *objective)[t])(
        dict(outputs)
    )
    for batch in ('real',) + train_step.FAKES:
      read = any(
          float(jnp.max(jnp.abs(g))) > 0
          for key, g in gradient.items()
          if key.startswith(batch + '_')
      )
      assert read == (batch in train_step.judged_batches(term, *objective)), (term, batch)


def test_llike_gradient_would_move_discriminator_but_is_not_routed_there():
  """Guards the routing test above: L_llike has a gradient w.r.t. Dis's parameters."""
  config, networks, state, images, rng, grads, _ = _computed_gradients(
      decoder_gan_loss='saturating'
  )
  params = {name: getattr(state, name).params for name in NETWORKS}
  stats = {name: getattr(state, name).batch_stats for name in NETWORKS}
  leaky = jax.jit(
      jax.grad(
          lambda own: sum(
              _reference_losses(
                  networks, config, {**params, 'discriminator': own}, stats, images, rng
              ).values()
          )
      )
  )(params['discriminator'])
  assert _max_abs_difference(leaky, grads['discriminator']) > 1e-3


def _step(overrides, state=None):
  config, _, _, initial, step = _setup(**overrides)
  return step(state or initial, _batch(config), jax.random.PRNGKey(5))


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _assert_trees_differ(a, b):
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_llike_weight_leaves_discriminator_update_unchanged():
  base, _ = _step({})
  heavy, _ = _step(dict(gamma=50.0, beta=50.0))
  _assert_trees_equal(base.discriminator.params, heavy.discriminator.params)
  _assert_trees_differ(base.decoder.params, heavy.decoder.params)
  _assert_trees_differ(base.encoder.params, heavy.encoder.params)


@pytest.mark.slow
def test_gan_loss_leaves_encoder_update_unchanged():
  base, _ = _step(dict(decoder_gan_loss='saturating'))
  other, _ = _step(dict(decoder_gan_loss='non_saturating'))
  _assert_trees_equal(base.encoder.params, other.encoder.params)
  _assert_trees_equal(base.discriminator.params, other.discriminator.params)
  _assert_trees_differ(base.decoder.params, other.decoder.params)


def test_step_updates_everything_and_reports_metrics():
  _, _, _, initial, _ = _setup()
  new, metrics = _step({})
  assert int(new.step) == 1
  for name in NETWORKS:
    _assert_trees_differ(getattr(initial, name).params, getattr(new, name).params)
    _assert_trees_differ(getattr(initial, name).batch_stats, getattr(new, name).batch_stats)
  for key in (
      'loss/encoder',
      'loss/decoder',
      'loss/discriminator',
      'kl',
      'llike',
      'gan_decoder',
      'd_real',
      'd_recon',
      'd_prior',
      'skipped/discriminator',
      'skipped/decoder',
  ):
    assert np.isfinite(float(metrics[key])), key
  assert float(metrics['skipped/discriminator']) == 0.0
  # D(x), D(x~), D(x_p) are Dis's mean outputs on the batch it judged.
  config, networks, _, _, _ = _setup()
  _, _, outputs, _ = train_step.compute_gradients(
      networks,
      *_objective(config),
      config.networks.latent_dim,
      initial,
      _batch(config)['image'],
      jax.random.PRNGKey(5),
  )
  for key, logits in (
      ('d_real', 'real_logits'),
      ('d_recon', 'recon_logits'),
      ('d_prior', 'prior_logits'),
  ):
    np.testing.assert_allclose(
        metrics[key], jnp.mean(jax.nn.sigmoid(outputs[logits])), rtol=1e-5, err_msg=key
    )


@pytest.mark.parametrize(
    'model', ['vae', pytest.param('vae_disl', marks=_slow), pytest.param('gan', marks=_slow)]
)
def test_a_baseline_builds_steps_and_saves_only_its_networks(model):
  _, networks, optimizers, initial, _ = _setup(model=model)
  new, metrics = _step(dict(model=model))
  used = train_state.MODELS[model].networks
  for name in NETWORKS:
    if name in used:
      _assert_trees_differ(getattr(initial, name).params, getattr(new, name).params)
    else:
      assert getattr(networks, name) is None and getattr(optimizers, name) is None
      assert getattr(new, name) is None  # Nothing of it in the state, nor in checkpoints.
  assert sorted(k[5:] for k in metrics if k.startswith('loss/')) == sorted(used)
  assert ('kl' in metrics) == (model != 'gan')
  assert ('gan_decoder' in metrics) == (model == 'gan')
  assert not float(metrics['nonfinite'])


@pytest.mark.slow
def test_gating_skips_the_discriminator_when_it_is_too_good():
  # Equilibrium 100, margin 0: every cost is "below equilibrium", Dis always too good.
  overrides = dict(equilibrium_gating=True, equilibrium=100.0, margin=0.0)
  _, _, _, initial, _ = _setup(**overrides)
  new, metrics = _step(overrides)
  assert float(metrics['skipped/discriminator']) == 1.0
  assert float(metrics['skipped/decoder']) == 0.0
  _assert_trees_equal(initial.discriminator.params, new.discriminator.params)
  _assert_trees_equal(initial.discriminator.opt_state, new.discriminator.opt_state)
  _assert_trees_differ(initial.decoder.params, new.decoder.params)


@pytest.mark.parametrize(
    'real, fake, update_dis, update_dec',
    [
        (0.68, 0.68, True, True),  # Balanced.
        (0.20, 0.68, False, True),  # Dis too good on real images: pause Dis.
        (0.68, 0.30, False, True),  # Dis too good on fakes: pause Dis.
        (1.10, 0.68, True, False),  # Dis too bad: pause Dec.
        (0.20, 1.10, True, True),  # Both rules fire: train both rather than neither.
    ],
)
def test_equilibrium_gates(real, fake, update_dis, update_dec):
  gates = train_step.equilibrium_gates(jnp.float32(real), jnp.float32(fake), 0.68, 0.35)
  assert (bool(gates[0]), bool(gates[1])) == (update_dis, update_dec)


@pytest.mark.slow
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state():
  config, _, _, state, step = _setup()
  batch, rng = _batch(config), jax.random.PRNGKey(3)
  _, float32_metrics = step(state, batch, rng)
  config = _config()
  config.dtype = 'bfloat16'
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=10)
  bf16_step = jax.jit(train_step.bind_train_step(config, networks, optimizers))
  jaxpr = str(jax.make_jaxpr(bf16_step)(state, batch, rng))
  assert 'conv_general_dilated' in jaxpr and 'bf16[' in jaxpr  # The convolutions run in bf16.
  new_state, metrics = bf16_step(state, batch, rng)  # The float32 initial state, as it is.
  for leaf in jax.tree.leaves(new_state):
    assert leaf.dtype in (jnp.float32, jnp.int32, jnp.uint32)
  for term in ('kl', 'llike', 'loss/encoder', 'loss/decoder', 'loss/discriminator'):
    assert metrics[term].dtype == jnp.float32
    np.testing.assert_allclose(metrics[term], float32_metrics[term], rtol=0.05, err_msg=term)
  assert not metrics['nonfinite']
