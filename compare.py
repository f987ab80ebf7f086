"""Trains the paper's four models on the same data and budget, over several seeds, and
scores them side by side.

  python compare.py --workdir runs/compare
  python compare.py --workdir runs/compare_mnist --config configs/mnist.py \
      --config.num_train_steps=5000 --seeds 0,1

Larsen et al. (2016, Figure 3 and Table 1) compare a VAE (pixel-wise likelihood),
VAE_Dis_l (the learned similarity, no GAN term for Dec), a GAN and the VAE/GAN.
Each model trains from the same config (only config.model and config.seed differ)
in WORKDIR/<model>/seed_<seed> (re-running resumes or, when done, only re-scores),
then is scored by evaluation.py on --num_samples samples. Writes WORKDIR/results.md
(mean ± standard deviation over the seeds), results.json (every seed's metrics),
and samples.png (prior samples of each model's first seed, the same latents for all).
--config.eval.inception=true adds Inception FID and KID (docs/inception.md).
XLA's compiled steps are kept in WORKDIR/compilation_cache (unless
JAX_COMPILATION_CACHE_DIR names another), so only a model's first seed compiles them.

On CPU, --jobs runs train at once (by default two, when there are at least two
cores), each in its own process on its own share of the cores: a train step of these
small networks keeps two cores only partly busy, so two runs side by side finish
sooner than one after the other (docs/performance.md). Scoring follows, in this process.
"""

import concurrent.futures
import json
import logging as std_logging
import multiprocessing
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from vaegan_jax import datasets
from vaegan_jax import entry_point
from vaegan_jax import evaluation
from vaegan_jax import image_grid
from vaegan_jax import inception
from vaegan_jax import inference
from vaegan_jax import train
from vaegan_jax import train_state
from vaegan_jax.errors import ConfigError

flags.DEFINE_string(
    'workdir', None, 'Where each model trains (WORKDIR/<model>/seed_<seed>) ' 'and the results go.'
)
config_flags.DEFINE_config_file(
    'config',
    'configs/digits.py',
    'The config every model ' 'trains with; config.model and config.seed are set per run.',
    lock_config=True,
)
flags.DEFINE_list('models', list(train_state.MODELS), 'Which models, in table order.')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds per model.')
flags.DEFINE_integer('num_samples', 5000, 'Prior samples scored per run.')
flags.DEFINE_integer('grid_side', 6, 'Samples per row and column of each grid in samples.png.')
flags.DEFINE_integer(
    'jobs',
    0,
    'Runs that train at once, each in a process on its own share of the CPU cores; '
    '0: two on a CPU with at least two cores, else one (GPUs and TPUs: always one).',
)
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS

# (metric, column title, format); lower is better unless the title has a '↑'.
COLUMNS = (
    ('inception/fid', 'Inception FID', '.2f'),
    ('inception/kid', 'Inception KID', '.4f'),
    ('frechet/samples', 'FD test', '.1f'),
    ('frechet/samples_vs_train', 'FD train', '.1f'),
    ('kid/samples', 'KID', '.3f'),
    ('samples/confidence', 'confidence ↑', '.3f'),
    ('samples/class_entropy', 'class entropy ↑', '.3f'),
    ('samples/classifier_score', 'class. score ↑', '.2f'),
    ('samples/sharpness', 'sharpness (1: as real)', '.2f'),
    ('frechet/reconstructions', 'FD recon.', '.1f'),
    ('reconstruction/mse', 'recon. MSE', '.4f'),
    ('reconstruction/classifier_accuracy', 'class kept ↑', '.1%'),
)


def _mean_std(values: list[float], fmt: str) -> str:
  if len(values) == 1:
    return format(values[0], fmt)
  return f'{format(np.mean(values), fmt)} ± {format(np.std(values, ddof=1), fmt)}'


def markdown_table(rows: dict[str, list[dict]]) -> str:
  """One row per model (and weights): mean ± standard deviation over its seeds' runs;
  '-' where a metric does not apply (a GAN has no encoder). Metrics no run has (the
  Inception ones unless asked for) get no column."""
  present = {key for runs in rows.values() for run in runs for key in run['metrics']}
  columns = [column for column in COLUMNS if column[0] in present]
  header = ['model', *(title for _, title, _ in columns), 'train time']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  for name, runs in rows.items():
    cells = [name]
    for key, _, fmt in columns:
      values = [run['metrics'][key] for run in runs if key in run['metrics']]
      cells.append(_mean_std(values, fmt) if values else '-')
    cells.append(f'{np.mean([run["train_seconds"] for run in runs]) / 60:.1f} min')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path) -> float:
  """Trains (or resumes) one run; returns the seconds spent, this run's and earlier ones'."""
  record = workdir / 'train_seconds.json'
  spent = json.loads(record.read_text())['seconds'] if record.exists() else 0.0
  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  spent += time.perf_counter() - start
  record.write_text(json.dumps({'seconds': spent}) + '\n')
  return spent


def _score(
    workdir: epath.Path, use_ema: bool, inception_scorer: inception.Scorer | None
) -> tuple[inference.Model, dict]:
  model = inference.load_model(workdir, use_ema=use_ema)
  model.config.eval.num_samples = FLAGS.num_samples
  builder = datasets.get_builder(model.config)
  classifier = evaluation.load_classifier(model.config, builder)
  metrics = evaluation.evaluate(model, builder, classifier, jax.random.PRNGKey(0), inception_scorer)
  return model, metrics


def core_groups(cores: list[int], jobs: int) -> list[list[int]]:
  """`cores` split into `jobs` disjoint groups of (nearly) equal size."""
  return [[int(core) for core in group] for group in np.array_split(sorted(cores), jobs)]


def _pin_to_cores(groups) -> None:
  """A worker's start: its own group of cores (before JAX sizes its thread pools from
  them), and the entry points' set-up."""
  os.sched_setaffinity(0, groups.get())
  # Progress in the parent's format and verbosity (absl.app sets them up there).
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  entry_point.set_up()


def _train_in_worker(config: ml_collections.ConfigDict, workdir: str, cache_dir: str) -> float:
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  run_name = f'{config.model}, seed {config.seed}'
  prefix = _Prefix(f'[{run_name}] ')
  logging.get_absl_handler().addFilter(prefix)
  logging.info('=== Training on cores %s ===', sorted(os.sched_getaffinity(0)))
  try:
    return _train(config, epath.Path(workdir))
  finally:
    logging.get_absl_handler().removeFilter(prefix)


class _Prefix(std_logging.Filter):
  """Names the run in each line of a worker's log, as two runs' lines interleave."""

  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record: std_logging.LogRecord) -> bool:
    record.msg = self.prefix + str(record.msg)
    return True


def _train_all(runs: list[tuple[ml_collections.ConfigDict, epath.Path]], jobs: int) -> list[float]:
  """Trains `runs` (config, workdir), `jobs` at a time; returns each one's seconds."""
  if jobs == 1:
    seconds = []
    for config, run_dir in runs:
      logging.info('=== %s, seed %d ===', config.model, config.seed)
      seconds.append(_train(config, run_dir))
    return seconds
  context = multiprocessing.get_context('spawn')  # Fresh processes: JAX does not fork.
  groups = context.Queue()
  for group in core_groups(list(os.sched_getaffinity(0)), jobs):
    groups.put(group)
  logging.info(
      'Training %d runs, %d at a time, each on %d of the %d cores.',
      len(runs),
      jobs,
      len(os.sched_getaffinity(0)) // jobs,
      len(os.sched_getaffinity(0)),
  )
  # The runs of models with more networks (slower steps) first, so that the last to
  # finish are short ones and no core waits long for the other.
  order = sorted(
      range(len(runs)), key=lambda i: -len(train_state.MODELS[runs[i][0].model].networks)
  )
  with concurrent.futures.ProcessPoolExecutor(
      jobs, mp_context=context, initializer=_pin_to_cores, initargs=(groups,)
  ) as pool:
    cache_dir = jax.config.jax_compilation_cache_dir
    futures = {
        i: pool.submit(_train_in_worker, runs[i][0], str(runs[i][1]), cache_dir) for i in order
    }
    return [futures[i].result() for i in range(len(runs))]


def _jobs(num_runs: int) -> int:
  if FLAGS.jobs < 0:
    raise ConfigError(f'--jobs={FLAGS.jobs}: give 0 (automatic) or a number of runs.')
  if jax.default_backend() != 'cpu' or not hasattr(os, 'sched_setaffinity'):
    return 1
  cores = len(os.sched_getaffinity(0))
  jobs = FLAGS.jobs or (2 if cores >= 2 else 1)
  if jobs > cores:
    raise ConfigError(f'--jobs={FLAGS.jobs}: more runs at once than the {cores} cores.')
  return min(jobs, num_runs)


def _check_flags() -> list[int]:
  unknown = [m for m in FLAGS.models if m not in train_state.MODELS]
  if unknown or not FLAGS.models:
    raise ConfigError(
        f'--models={",".join(FLAGS.models)}: each must be one of '
        f'{", ".join(train_state.MODELS)}.'
    )
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise ConfigError(f'--seeds={",".join(FLAGS.seeds)}: must be integers.') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise ConfigError(f'--seeds={",".join(FLAGS.seeds)}: give distinct integers.')
  if FLAGS.num_samples < 2:
    raise ConfigError(f'--num_samples={FLAGS.num_samples}: must be >= 2.')
  return seeds


def main(argv):
  del argv
  entry_point.set_up()
  workdir = epath.Path(FLAGS.workdir)
  start = time.perf_counter()
  seeds = _check_flags()
  if not jax.config.jax_compilation_cache_dir:
    # Every seed of a model compiles the same train and evaluation steps: only the
    # first seed's run pays XLA's compile time.
    jax.config.update('jax_compilation_cache_dir', str(workdir / 'compilation_cache'))
  runs = []
  for model_name in FLAGS.models:
    for seed in seeds:
      config = FLAGS.config.copy_and_resolve_references()
      config.model, config.seed = model_name, seed
      runs.append((config, workdir / model_name / f'seed_{seed}'))
  jobs = _jobs(len(runs))
  # With --config.eval.inception=true: before training, so that offline fails at once.
  inception_scorer = evaluation.load_inception(FLAGS.config, datasets.get_builder(FLAGS.config))
  all_seconds = _train_all(runs, jobs)
  rows, panels, results = {}, [], {}
  for (config, run_dir), seconds in zip(runs, all_seconds):
    model_name, seed = config.model, config.seed
    for use_ema in ((True, False) if config.ema_decay > 0 else (False,)):
      model, metrics = _score(run_dir, use_ema, inception_scorer)
      name = f'`{model_name}`' + (
          ', weights without EMA' if config.ema_decay > 0 and not use_ema else ''
      )
      run = {
          'seed': seed,
          'step': model.step,
          'ema': model.uses_ema,
          'metrics': metrics,
          'train_seconds': seconds,
      }
      rows.setdefault(name, []).append(run)
      results.setdefault(model_name, []).append(run)
      if use_ema == (config.ema_decay > 0) and seed == seeds[0]:
        samples = inference.sample(model, FLAGS.grid_side**2, jax.random.PRNGKey(1))
        panels.append(
            image_grid.titled(
                image_grid.grid(np.asarray(samples), columns=FLAGS.grid_side), model_name
            )
        )

  first = next(iter(rows.values()))[0]['metrics']
  notes = (
      f'{FLAGS.config.dataset}, {len(seeds)} training seeds per model (mean ± standard '
      f'deviation), {first["num_samples"]:.0f} samples per run against '
      f'{first["num_real"]:.0f} real test images (FD test, KID) and as many training '
      'images (FD train), in the features of a classifier trained on the dataset'
  )
  if 'classifier/test_accuracy' in first:
    notes += (
        f' ({first["classifier/test_accuracy"]:.1%} test accuracy; real test images: '
        f'confidence {first["real/confidence"]:.3f}, class entropy '
        f'{first["real/class_entropy"]:.3f}, score {first["real/classifier_score"]:.2f}; '
        f'real training vs test images: FD {first["frechet/train_vs_test"]:.1f}, KID '
        f'{first["kid/train_vs_test"]:.3f})'
    )
  notes += (
      f'. compare.py took {(time.perf_counter() - start) / 60:.1f} min here, training '
      f'{jobs} run{"s" if jobs > 1 else ""} at a time'
  )
  table = markdown_table(rows)
  (workdir / 'results.md').write_text(f'{table}\n\n{notes}.\n')
  (workdir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
  image_grid.save_png(workdir / 'samples.png', image_grid.side_by_side(panels))
  print(f'{table}\n\n{notes}.')
  logging.info('Wrote %s, results.json and samples.png.', workdir / 'results.md')


if __name__ == '__main__':
  entry_point.run(main)
