"""The training state's optimizers: RMSProp as PyTorch defines it, one per network."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default
from vaegan_jax import train_state


def _torch_rmsprop(params, grads, lr, alpha, eps):
  """torch.optim.RMSprop's update (centered=False, momentum=0), written out."""
  square_avg = np.zeros_like(params)
  for g in grads:
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    params = params - lr * g / (np.sqrt(square_avg) + eps)
  return params


def test_each_network_gets_pytorchs_rmsprop_at_its_own_learning_rate():
  config = default.get_config()
  config.optim.learning_rate = 1e-3
  config.optim.encoder_lr_mult, config.optim.decoder_lr_mult = 2.0, 1.0
  config.optim.discriminator_lr_mult = 0.1
  optimizers = train_state.build_optimizers(config, steps_per_epoch=100)
  rng = np.random.default_rng(0)
  params = rng.normal(size=5).astype(np.float32)
  grads = [rng.normal(size=5).astype(np.float32) * scale for scale in (1.0, 1e-3, 5.0)]
  for name, mult in (('encoder', 2.0), ('decoder', 1.0), ('discriminator', 0.1)):
    optimizer = getattr(optimizers, name)
    state, p = optimizer.init(jnp.asarray(params)), jnp.asarray(params)
    for g in grads:
      updates, state = optimizer.update(jnp.asarray(g), state, p)
      p = optax.apply_updates(p, updates)
    np.testing.assert_allclose(
        p,
        _torch_rmsprop(params, grads, 1e-3 * mult, 0.99, 1e-8),
        rtol=1e-5,
        atol=1e-7,
        err_msg=name,
    )


def test_the_learning_rate_decays_once_per_epoch():
  config = default.get_config()
  config.optim.learning_rate, config.optim.lr_decay_per_epoch = 1e-2, 0.5
  optimizer = train_state.build_optimizers(config, steps_per_epoch=3).decoder
  p, state = jnp.ones(()), optimizer.init(jnp.ones(()))
  steps = []
  for _ in range(7):  # A constant gradient: RMSProp's step is lr * g / sqrt(v).
    updates, state = optimizer.update(jnp.ones(()), state, p)
    steps.append(-float(updates))
  v = 1 - 0.99 ** np.arange(1, 8)
  lr = 1e-2 * 0.5 ** (np.arange(7) // 3)  # Steps 0-2, 3-5, 6.
  np.testing.assert_allclose(steps, lr / (np.sqrt(v) + 1e-8), rtol=1e-5)


def test_a_model_without_a_network_has_no_optimizer_or_state_for_it():
  config = default.get_config()
  config.model = 'gan'
  config.image_size = 32
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch=1)
  state = jax.eval_shape(
      lambda rng: train_state.create_train_state(rng, config, networks, optimizers),
      jax.random.PRNGKey(0),
  )
  assert networks.encoder is None and optimizers.encoder is None and state.encoder is None
  assert state.decoder is not None and state.discriminator is not None


def test_the_moving_average_moves_towards_the_weights_slowly_then_at_its_decay():
  ema = {'decoder': {'params': {'w': jnp.zeros(3)}, 'batch_stats': {'mean': jnp.ones(3)}}}
  network = train_state.NetworkState(
      params={'w': jnp.full(3, 2.0)}, batch_stats={'mean': jnp.full(3, 3.0)}, opt_state=()
  )
  state = train_state.TrainState(
      step=jnp.array(0),
      rng=jax.random.PRNGKey(0),
      encoder=None,
      decoder=network,
      discriminator=None,
      ema=ema,
  )
  first = train_state.update_ema(ema, state, step=0, decay=0.999)  # Step 0: rate 1 - 1/10.
  np.testing.assert_allclose(first['decoder']['params']['w'], 0.9 * 2.0)
  np.testing.assert_allclose(first['decoder']['batch_stats']['mean'], 1 + 0.9 * 2.0)
  late = train_state.update_ema(ema, state, step=10**6, decay=0.999)
  np.testing.assert_allclose(late['decoder']['params']['w'], 0.001 * 2.0, rtol=1e-4)
