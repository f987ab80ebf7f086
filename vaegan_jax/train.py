"""train_and_evaluate(config, workdir): the VAE-GAN training loop.

Data parallel over every device of every process through jax.sharding: the
global batch is split along the mesh's 'data' axis (each process feeds its own
rows) and the state is replicated, so BatchNorm statistics are those of the
global batch and results do not depend on the device count. Re-running with the
same workdir resumes from the latest checkpoint: the state, the step, and
(because the data order is a function of seed and step) the position in the data.
"""

import functools
import time

from absl import logging
from clu import metric_writers
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from vaegan_jax import checkpointing
from vaegan_jax import config_checks
from vaegan_jax import datasets
from vaegan_jax import device_data
from vaegan_jax import directories
from vaegan_jax import evaluation
from vaegan_jax import full_disk
from vaegan_jax import image_format
from vaegan_jax import image_grid
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import nonfinite
from vaegan_jax import preemption
from vaegan_jax import progress
from vaegan_jax import sharding
from vaegan_jax import step_runner
from vaegan_jax import train_state
from vaegan_jax.errors import ConfigError, Interrupted, NonFiniteError


def _write_samples(
    workdir: epath.Path,
    writer: metric_writers.MetricWriter,
    step: int,
    samples: np.ndarray,
    real: np.ndarray,
    recons: np.ndarray | None,
) -> None:
  """PNG grid [samples | real | reconstructions] and the same images in TensorBoard
  (a GAN, without an encoder, has no reconstructions: [samples | real])."""
  panels = [image_grid.grid(samples), image_grid.grid(real)]
  images = {'samples': panels[0][None]}
  if recons is not None:
    panels.append(image_grid.grid(recons))
    images['reconstructions'] = np.concatenate(panels[1:], axis=1)[None]
  directory = workdir / 'samples'
  directory.mkdir(parents=True, exist_ok=True)
  image_grid.save_png(directory / f'step_{step:06d}.png', image_grid.side_by_side(panels))
  writer.write_images(step, images)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | epath.PathLike
) -> train_state.TrainState:
  """Trains from scratch, or from the latest checkpoint in workdir; returns the final state."""
  config_checks.validate_config(config)
  directories.check_writable(workdir, 'workdir')
  workdir = epath.Path(workdir)
  builder = datasets.get_builder(config)
  train_size = datasets.num_examples(builder, config.train_split)
  if train_size < config.batch_size:
    raise ConfigError(
        f'config.batch_size={config.batch_size}: larger than the '
        f'{train_size} examples of {config.dataset}:{config.train_split}.'
    )
  steps_per_epoch = train_size // config.batch_size
  # Read (and checked to fit the devices) before anything is written to the workdir.
  stored_images = (
      device_data.load_images(builder, config.train_split, config.image_key)
      if config.data_on_device
      else None
  )
  num_steps = (
      config.num_train_steps
      if config.num_train_steps > 0
      else int(config.num_epochs * steps_per_epoch)
  )

  replicated, data_sharding = sharding.data_parallel_shardings()
  networks = train_state.build_networks(config)
  optimizers = train_state.build_optimizers(config, steps_per_epoch)
  init = functools.partial(
      train_state.create_train_state, config=config, networks=networks, optimizers=optimizers
  )
  state = jax.jit(init, out_shardings=replicated)(jax.random.PRNGKey(config.seed))

  is_chief = jax.process_index() == 0  # Only process 0 writes logs, images and config.json.
  directories.make_directory(workdir, 'workdir')
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  checkpointing.check_config(workdir, config, has_checkpoint=manager.latest_step() is not None)
  restore_step = config.restore_step
  if restore_step and checkpointing.rewind_marker(manager, restore_step).exists():
    logging.info(
        'Already rewound to step %d (%s): resuming from the latest checkpoint; delete that file '
        'to rewind there again.',
        restore_step,
        checkpointing.rewind_marker(manager, restore_step),
    )
    restore_step = 0
  state = checkpointing.restore_latest(manager, state, config.checkpoint_fallback, restore_step)
  start_step = int(state.step)
  if restore_step:
    moved = checkpointing.set_aside_after(manager, start_step, restore_step) if is_chief else []
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoints set aside')
      manager.reload()
    if moved:
      logging.warning(
          'Rewound to step %d; moved the newer checkpoints to %s.',
          start_step,
          ', '.join(map(str, moved)),
      )
  if is_chief:  # Only once the restore succeeded: a failed resume leaves config.json as it was.
    checkpointing.write_config(workdir, config)
  writer = metric_writers.AsyncMultiWriter(
      [metric_writers.SummaryWriter(str(workdir))] if is_chief else []
  )
  if start_step:
    logging.info('Resuming from the checkpoint of step %d in %s.', start_step, workdir)
  rows = sharding.process_rows(data_sharding, config.batch_size)
  logging.info(
      'Training %s for %d steps (%d per epoch), batch %d on %d device(s)%s.',
      config.dataset,
      num_steps,
      steps_per_epoch,
      config.batch_size,
      jax.device_count(),
      f' of {jax.process_count()} processes (this one, '
      f'{jax.process_index()}, feeds rows {rows[0]}:{rows[1]})'
      if jax.process_count() > 1
      else '',
  )

  # A host copy of the state's key (the state is donated every step): step keys fold in the step.
  base_rng = jax.device_get(state.rng)
  run_steps = step_runner.make_step_runner(
      config, builder, stored_images, networks, optimizers, start_step, rows, base_rng
  )
  all_finite = jax.jit(train_state.all_finite)
  fixed_z = jax.random.normal(
      jax.random.PRNGKey(config.seed + 1), (config.num_sample_images, config.networks.latent_dim)
  )
  fixed_real = input_pipeline.fixed_images(
      builder, image_format.from_config(config), config.eval_split, config.num_sample_images
  )
  # The steps that log, checkpoint or evaluate end a dispatch of several steps.
  periods = [config.log_every_steps, config.checkpoint_every_steps, config.eval.every_steps]

  # Loaded (or trained) at the first evaluation, then kept.
  classifier = functools.cache(lambda: evaluation.load_classifier(config, builder))
  # Before training, so that a missing clean-fid or offline weights fail in seconds.
  inception_scorer = evaluation.load_inception(config, builder) if config.eval.every_steps else None

  def evaluate(state):
    step = int(state.step)
    metrics = evaluation.evaluate(
        inference.from_train_state(config, state),
        builder,
        classifier(),
        jax.random.PRNGKey(config.seed + 2),
        inception_scorer,
    )
    if is_chief:
      evaluation.write_metrics(workdir, step, metrics, writer)
      logging.info(
          'Evaluation at step %d: %s',
          step,
          ', '.join(f'{k} {v:.4g}' for k, v in metrics.items() if not k.startswith('num_')),
      )

  def save_checkpoint_and_samples(state):
    step = int(state.step)
    if not bool(all_finite(state)):
      raise NonFiniteError(
          f'Step {step}: the parameters (or optimizer or BatchNorm state) hold NaN or Inf, so '
          'this state was not saved; the latest checkpoint is '
          f'{"step " + str(manager.latest_step()) if manager.latest_step() else "none"}. A lower '
          '--config.optim.learning_rate may avoid the overflow.'
      )
    checkpointing.save(manager, state)
    model = inference.Model(config, networks, train_state.eval_variables(state), step)
    samples = jax.device_get(inference.decode(model, fixed_z))
    recons = (
        jax.device_get(inference.reconstruct(model, fixed_real))
        if networks.encoder is not None
        else None
    )
    if recons is not None:
      writer.write_scalars(
          step,
          {
              'eval/reconstruction_mse': float(
                  np.mean(np.square(recons - fixed_real[: len(recons)]))
              )
          },
      )
    if is_chief:
      _write_samples(workdir, writer, step, samples, fixed_real, recons)

  stop = preemption.StopOnSignal()
  pending_metrics, unchecked = [], None
  interval_start, interval_steps = time.perf_counter(), 0
  try:
    step = start_step
    while step < num_steps:
      count = step_runner.steps_until_boundary(step, num_steps, config.steps_per_dispatch, periods)
      state, metrics = run_steps(state, step, count)
      done = step + count
      # Every step's id, in order: with several processes that is where they agree to stop.
      stopping = any([stop.requested(s) for s in range(step + 1, done + 1)])
      # Checking the previous dispatch's metrics keeps this one asynchronous.
      if unchecked is not None:
        nonfinite.check_finite(*unchecked, config.on_nonfinite, manager, start_step)
      unchecked = (done, metrics)
      pending_metrics.append(metrics)
      interval_steps += count
      if step == start_step:
        jax.block_until_ready(state)
        logging.info(
            'First %s (compilation included) took %.1f s.',
            'step' if count == 1 else f'{count} steps',
            time.perf_counter() - interval_start,
        )
        interval_start, interval_steps = time.perf_counter(), 0
      step = done
      if done % config.log_every_steps == 0 or done == num_steps:
        summary = {
            k: float(v)
            for k, v in jax.tree.map(
                lambda *xs: jnp.mean(jnp.concatenate([jnp.atleast_1d(x) for x in xs])),
                *pending_metrics,
            ).items()
        }
        pending_metrics = []
        # Nothing timed when the first (compiling) dispatch reaches a log step by itself.
        seconds_per_step = images_per_second = None
        if interval_steps:
          seconds_per_step = (time.perf_counter() - interval_start) / interval_steps
          images_per_second = config.batch_size / seconds_per_step
          summary['images_per_second'] = images_per_second
        writer.write_scalars(done, summary)
        if is_chief:
          logging.info(
              progress.progress_line(done, num_steps, summary, images_per_second, seconds_per_step)
          )
        interval_start, interval_steps = time.perf_counter(), 0
      if done % config.checkpoint_every_steps == 0 or done == num_steps or stopping:
        nonfinite.check_finite(
            *unchecked, config.on_nonfinite, manager, start_step
        )  # Never save it.
        unchecked = None
        save_checkpoint_and_samples(state)
      if config.eval.every_steps and (done % config.eval.every_steps == 0 or done == num_steps):
        evaluate(state)
      if stopping:
        message = (
            f'{stop.received}: saved the checkpoint of step {done} and stopped. Re-run '
            'the same command to resume.'
        )
        if stop.received == 'SIGINT':
          raise Interrupted(message)
        logging.warning(message)
        break
    if start_step >= num_steps:
      logging.info('Nothing to do: the checkpoint is at step %d of %d.', start_step, num_steps)
  finally:
    stop.restore()
    full_disk.close_all(
        epath.Path(manager.directory),
        [
            lambda: checkpointing.wait_until_saved(manager),  # A save in flight is of a good state.
            manager.close,
            writer.flush,
            writer.close,
        ],
    )
  return state
