"""The progress line a run prints every config.log_every_steps."""

_PROGRESS_TERMS = (
    ('loss/encoder', 'enc'),
    ('loss/decoder', 'dec'),
    ('loss/discriminator', 'dis'),
    ('kl', 'kl'),
    ('llike', 'llike'),
    ('d_real', 'D(x)'),
    ('d_recon', 'D(x~)'),
    ('d_prior', 'D(xp)'),
)


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


def progress_line(
    step: int,
    num_steps: int,
    metrics: dict[str, float],
    images_per_second: float | None,
    seconds_per_step: float | None,
) -> str:
  """One human-readable line: step, the loss terms, throughput and time left (None
  where the interval held only the first, compiling, steps)."""
  terms = ' '.join(
      f'{short} {metrics[key]:.4g}' for key, short in _PROGRESS_TERMS if key in metrics
  )
  skipped = ''.join(
      f' skipped-{name[8:]} {metrics[name]:.0%}'
      for name in metrics
      if name.startswith('skipped/') and metrics[name] > 0
  )
  if metrics.get('nonfinite', 0) > 0:
    skipped += f' non-finite {metrics["nonfinite"]:.0%}'
  if seconds_per_step is None:
    return f'step {step}/{num_steps} | {terms}{skipped} | first steps, compilation included'
  eta = _format_duration((num_steps - step) * seconds_per_step)
  return (
      f'step {step}/{num_steps} | {terms}{skipped} | {images_per_second:.1f} img/s | ' f'ETA {eta}'
  )
