"""What a run does after a step with a NaN or Inf: stop with the step and term named,
or (config.on_nonfinite='skip') warn and go on."""

from absl import logging
import jax
import numpy as np

from vaegan_jax import train_step as train_step_lib
from vaegan_jax.errors import NonFiniteError


def check_finite(
    last_step: int, metrics: dict[str, jax.Array], on_nonfinite: str, manager, start_step: int = 0
) -> None:
  """Stops the run (or with on_nonfinite='skip', warns) if a step was not finite.

  `metrics` are those of one step, `last_step`, or stacked along a leading axis,
  of the steps that end with it. `start_step` is where this run resumed.
  """
  nonfinite = np.atleast_1d(np.asarray(metrics['nonfinite']))
  if not nonfinite.any():
    return
  for index in np.flatnonzero(nonfinite):
    step = last_step - (len(nonfinite) - 1 - index)
    terms = [
        train_step_lib.FINITE_CHECKS.get(term, term.replace('/', ' of the '))
        for term in train_step_lib.CHECKED_TERMS
        if f'nonfinite/{term}' in metrics
        and np.atleast_1d(np.asarray(metrics[f'nonfinite/{term}']))[index]
    ]
    if on_nonfinite == 'skip':
      logging.warning(
          'Step %d: non-finite %s; the networks skip this batch.', step, ', '.join(terms)
      )
      continue
    steps = sorted(manager.all_steps())
    earlier = [s for s in steps if s < (steps[-1] if steps else 0)]
    rewind = (
        f' --config.restore_step={earlier[-1]} resumes from an earlier checkpoint (the '
        'newer ones are set aside, not deleted).'
        if earlier
        else ''
    )
    if start_step and step == start_step + 1:
      raise NonFiniteError(
          f'Step {step}: non-finite {", ".join(terms)}, at the first step after resuming from '
          f'the checkpoint of step {start_step}: its parameters have likely diverged.'
          f'{rewind or " Start over in a new --workdir with a lower learning rate."} '
          '(If one bad batch is the cause, --config.on_nonfinite=skip drops it.)'
      )
    raise NonFiniteError(
        f'Step {step}: non-finite {", ".join(terms)}. Training stopped and this state was not '
        f'saved; the latest checkpoint is {f"step {steps[-1]}" if steps else "none"}. '
        'Re-running resumes from it; a lower --config.optim.learning_rate may avoid the '
        'overflow, and --config.on_nonfinite=skip drops such batches instead of stopping.'
        + (
            f' If the re-run stops at once, that checkpoint has diverged too:{rewind}'
            if rewind
            else ''
        )
    )
