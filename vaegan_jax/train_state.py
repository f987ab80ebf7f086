"""The training state, one pytree, and what builds it from a config.

The three networks have disjoint parameter trees, each with its own BatchNorm
statistics and its own RMSProp state, so that an update of one can never touch
another. Modules and optimizers are static (`Networks`, `Optimizers`); the state
holds only arrays, which jax.jit, shardings and Orbax take as they are.

config.model picks which networks exist (the paper's four models, `MODELS`); a
network the model does not use is None in `Networks`, `Optimizers` and the
state, so it is neither built, nor stepped, nor saved. With config.ema_decay > 0
the state also keeps an exponential moving average of the encoder's and decoder's
parameters and BatchNorm statistics (`ema`), which sampling and evaluation use.
"""

import dataclasses
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vaegan_jax import models
from vaegan_jax.cpu import winograd

NETWORKS = ('encoder', 'decoder', 'discriminator')
AVERAGED = ('encoder', 'decoder')  # The networks whose weights config.ema_decay averages.
VARIABLES = ('params', 'batch_stats')  # What a network needs in evaluation mode.


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a model trains: which loss term updates which network, and how.

  `losses`: per network the model has, its loss as {term: weight}, where a weight
  is a number or the name of a config.loss field ('beta', 'pixel_beta', 'gamma'). The terms:
  'kl' (L_prior); 'llike' (L_llike); 'gan_decoder' (Dec's side of L_GAN);
  'gan_discriminator' (Dis's cross-entropy, -L_GAN). `likelihood`: where L_llike
  is measured, 'dis_l' (Dis_l's features) or 'pixels' (the same Gaussian with
  identity covariance on the pixels, weighted by 'pixel_beta', 1/sigma^2 of that
  likelihood: the two likelihoods' scales differ, so each has its own weight).
  `fakes`: the generated images Dis learns to reject ('recon', 'prior'), or None
  for config.loss.discriminator_fakes' choice.
  """

  losses: dict[str, dict[str, float | str]]
  likelihood: str | None
  fakes: tuple[str, ...] | None

  @property
  def networks(self) -> tuple[str, ...]:
    """The networks the model has, in NETWORKS order."""
    return tuple(name for name in NETWORKS if name in self.losses)

  @property
  def decoder_plays_gan(self) -> bool:
    return 'gan_decoder' in self.losses['decoder']


_ENCODER = {'kl': 1.0, 'llike': 'beta'}
_PIXEL_ENCODER = {'kl': 1.0, 'llike': 'pixel_beta'}
_DISCRIMINATOR = {'gan_discriminator': 1.0}
# The paper's comparison (Larsen et al. 2016, Figure 3, Table 1); adding a model is one
# entry here.
MODELS = {
    'vae': ModelSpec(
        {'encoder': _PIXEL_ENCODER, 'decoder': {'llike': 1.0}}, likelihood='pixels', fakes=()
    ),
    # The VAE with Dis_l of a jointly trained Dis, no GAN term for Dec.
    'vae_disl': ModelSpec(
        {'encoder': _ENCODER, 'decoder': {'llike': 1.0}, 'discriminator': _DISCRIMINATOR},
        likelihood='dis_l',
        fakes=None,
    ),
    # Dec as the generator of prior samples, no encoder.
    'gan': ModelSpec(
        {'decoder': {'gan_decoder': 1.0}, 'discriminator': _DISCRIMINATOR},
        likelihood=None,
        fakes=('prior',),
    ),
    'vaegan': ModelSpec(
        {
            'encoder': _ENCODER,
            'decoder': {'llike': 'gamma', 'gan_decoder': 1.0},
            'discriminator': _DISCRIMINATOR,
        },
        likelihood='dis_l',
        fakes=None,
    ),
}


def used_networks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names of the networks config.model trains, in NETWORKS order."""
  return MODELS[config.model].networks


@flax.struct.dataclass
class NetworkState:
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  rng: jax.Array  # Base key; step keys are derived as fold_in(rng, step).
  encoder: NetworkState | None
  decoder: NetworkState | None
  discriminator: NetworkState | None
  # config.ema_decay > 0: {network: {'params', 'batch_stats'}} averaged over the steps,
  # for the used networks of AVERAGED; else None.
  ema: dict[str, dict[str, Any]] | None = None


def network_variables(network: NetworkState) -> dict[str, Any]:
  return {field: getattr(network, field) for field in VARIABLES}


def eval_variables(state: TrainState, use_ema: bool = True) -> dict[str, dict[str, Any]]:
  """{network: {'params', 'batch_stats'}} to run the networks in evaluation mode with:
  the moving averages where the state has them (and `use_ema`), else the weights."""
  variables = {
      name: network_variables(getattr(state, name))
      for name in NETWORKS
      if getattr(state, name) is not None
  }
  if use_ema and state.ema is not None:
    variables.update(state.ema)
  return variables


def update_ema(
    ema: dict[str, dict[str, Any]], state: TrainState, step: jax.Array, decay: float
) -> dict[str, dict[str, Any]]:
  """The moving average after `step` (counted from 0), moved towards `state`'s weights.
  The effective decay grows as min(decay, (1 + step) / (10 + step)), so early weights
  fade out fast."""
  step = jnp.asarray(step, jnp.float32)
  rate = 1.0 - jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  current = {name: network_variables(getattr(state, name)) for name in ema}
  return jax.tree.map(lambda average, new: average + rate * (new - average), ema, current)


def all_finite(tree: Any) -> jax.Array:
  """Whether every floating-point array of `tree` is free of NaN and Inf."""
  return jnp.all(
      jnp.stack(
          [
              jnp.all(jnp.isfinite(x))
              for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)
          ]
      )
  )


class Networks(NamedTuple):
  encoder: models.Encoder | None
  decoder: models.Decoder | None
  discriminator: models.Discriminator | None


class Optimizers(NamedTuple):
  encoder: optax.GradientTransformation | None
  decoder: optax.GradientTransformation | None
  discriminator: optax.GradientTransformation | None


def _only_used(config: ml_collections.ConfigDict, built: dict[str, Any]) -> dict[str, Any]:
  used = used_networks(config)
  return {name: value if name in used else None for name, value in built.items()}


def build_networks(config: ml_collections.ConfigDict) -> Networks:
  m = config.networks
  common = dict(
      activation=m.activation,
      batch_norm_momentum=m.batch_norm_momentum,
      bias_before_norm=m.bias_before_norm,
      dtype=jnp.dtype(config.dtype),
      conv_general_dilated=(
          winograd.conv_general_dilated if config.cpu_winograd else jax.lax.conv_general_dilated
      ),
  )
  return Networks(
      **_only_used(
          config,
          dict(
              encoder=models.Encoder(
                  latent_dim=m.latent_dim,
                  widths=tuple(m.encoder_widths),
                  dense_width=m.encoder_dense_width,
                  **common,
              ),
              decoder=models.Decoder(
                  image_size=config.image_size,
                  num_channels=config.num_channels,
                  widths=tuple(m.decoder_widths),
                  kernel_size=m.decoder_kernel_size,
                  **common,
              ),
              discriminator=models.Discriminator(
                  widths=tuple(m.discriminator_widths),
                  strides=tuple(m.discriminator_strides),
                  dense_width=m.discriminator_dense_width,
                  disl_layer=m.disl_layer,
                  disl_features=m.disl_features,
                  **common,
              ),
          ),
      )
  )


def build_optimizers(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Optimizers:
  """RMSProp per network; learning rate = base * the network's multiplier."""
  o = config.optim

  def rmsprop(multiplier: float) -> optax.GradientTransformation:
    learning_rate = optax.exponential_decay(
        o.learning_rate * multiplier,
        transition_steps=steps_per_epoch,
        decay_rate=o.lr_decay_per_epoch,
        staircase=True,
    )
    return optax.rmsprop(
        learning_rate, decay=o.rmsprop_decay, eps=o.rmsprop_eps, eps_in_sqrt=o.eps_in_sqrt
    )

  return Optimizers(
      **_only_used(config, {name: rmsprop(o[f'{name}_lr_mult']) for name in NETWORKS})
  )


def create_train_state(
    rng: jax.Array, config: ml_collections.ConfigDict, networks: Networks, optimizers: Optimizers
) -> TrainState:
  """Initial state; pure, so it can be jitted straight onto devices or eval_shape'd."""
  init_rng, state_rng = jax.random.split(rng)
  image = jnp.zeros((1, config.image_size, config.image_size, config.num_channels))
  latent = jnp.zeros((1, config.networks.latent_dim))
  inputs = {'encoder': image, 'decoder': latent, 'discriminator': image}
  network_states = dict.fromkeys(NETWORKS)
  for name, key in zip(NETWORKS, jax.random.split(init_rng, len(NETWORKS))):
    if getattr(networks, name) is None:
      continue  # Keys stay per network, so a model's initial weights do not depend on the others.
    variables = getattr(networks, name).init(key, inputs[name], train=False)
    params = variables['params']
    network_states[name] = NetworkState(
        params=params,
        batch_stats=variables['batch_stats'],
        opt_state=getattr(optimizers, name).init(params),
    )
  ema = None
  if config.ema_decay > 0:
    ema = {
        name: network_variables(network_states[name])
        for name in AVERAGED
        if network_states[name] is not None
    }
  return TrainState(step=jnp.zeros((), jnp.int32), rng=state_rng, ema=ema, **network_states)
