"""Fault injection on the digits config: kill -9, SIGTERM, NaN, damaged checkpoints."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from configs import digits
from tests.helpers import ROOT, TINY, command_line_flags, damage_array_files, override, tiny
from vaegan_jax import checkpointing
from vaegan_jax import full_disk
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import train
from vaegan_jax.errors import CheckpointError, CheckpointSaveError, NonFiniteError
from vaegan_jax.errors import OutputFolderError, WorkdirMismatchError

# The tiny digits run of these tests: 30 steps, a checkpoint every 5.
RUN = {'log_every_steps': 1, 'checkpoint_every_steps': 5, 'num_train_steps': 30}


def _config(data_dir, **changes):
  return override(tiny(digits.get_config()), {**RUN, 'data_dir': data_dir, **changes})


def _command(workdir, data_dir):
  return [
      sys.executable,
      'train.py',
      '--config',
      'configs/digits.py',
      '--workdir',
      str(workdir),
      *command_line_flags({**TINY, **RUN, 'data_dir': data_dir}),
  ]


def _start(workdir, data_dir, log):
  env = None
  return subprocess.Popen(
      _command(workdir, data_dir),
      cwd=ROOT,
      env=env,
      stdout=log,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _wait_for(log_path, text, process, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if text in log_path.read_text():
      return
    assert process.poll() is None, log_path.read_text()[-3000:]
    time.sleep(0.05)
  raise TimeoutError(f'{text!r} never appeared in {log_path}')


def _wait_for_checkpoint(workdir, process, timeout=300):
  """Waits until Orbax has finished a checkpoint: its saves complete in the background,
  so on a busy machine a step's line can be logged well before its save is."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (workdir / 'checkpoints').exists() and inference.available_steps(workdir):
      return
    assert process.poll() is None, 'the run ended before it had saved a checkpoint'
    time.sleep(0.05)
  raise TimeoutError(f'no complete checkpoint appeared in {workdir}')


def _assert_same_state(a, b):
  for name in ('encoder', 'decoder', 'discriminator'):
    jax.tree.map(np.testing.assert_array_equal, getattr(a, name), getattr(b, name))
  assert int(a.step) == int(b.step)


@pytest.mark.slow
def test_kill_9_ctrl_c_and_sigterm_resume_to_the_uninterrupted_run(tfds_data_dir, tmp_path):
  uninterrupted = train.train_and_evaluate(_config(tfds_data_dir), tmp_path / 'straight')

  workdir, log_path = tmp_path / 'preempted', tmp_path / 'log.txt'
  # A step between checkpoints, random; VAEGAN_TEST_KILL_AT=N reruns a failure's.
  kill_at = int(os.environ.get('VAEGAN_TEST_KILL_AT') or np.random.default_rng().integers(7, 15))
  print(f'kill -9 after step {kill_at} (VAEGAN_TEST_KILL_AT={kill_at} repeats this run)')
  with open(log_path, 'w') as log:
    process = _start(workdir, tfds_data_dir, log)
    _wait_for(log_path, f'step {kill_at}/30', process)
    _wait_for_checkpoint(workdir, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  assert 5 <= inference.available_steps(workdir)[-1] < 30

  with open(log_path, 'w') as log:  # The same command again, then Ctrl-C.
    process = _start(workdir, tfds_data_dir, log)
    _wait_for(log_path, 'step 17/30', process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
  output = log_path.read_text()
  assert 'Traceback' not in output
  interrupted_at = int(output.split('SIGINT: saved the checkpoint of step ')[1].split()[0])
  assert output.rstrip().endswith('Re-run the same command to resume.')
  assert 17 <= interrupted_at < 30
  assert inference.available_steps(workdir)[-1] == interrupted_at

  with open(log_path, 'w') as log:  # Again, then a preemption notice.
    process = _start(workdir, tfds_data_dir, log)
    _wait_for(log_path, f'step {max(22, interrupted_at + 1)}/30', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
  output = log_path.read_text()
  assert 'Resuming from the checkpoint of step' in output
  assert 'SIGTERM: saved the checkpoint of step' in output
  stopped_at = int(output.split('SIGTERM: saved the checkpoint of step ')[1].split()[0])
  assert interrupted_at < stopped_at < 30
  assert inference.available_steps(workdir)[-1] == stopped_at  # Saved before exiting.

  with open(log_path, 'w') as log:
    process = _start(workdir, tfds_data_dir, log)
    assert process.wait(timeout=300) == 0, log_path.read_text()[-3000:]
  assert f'Resuming from the checkpoint of step {stopped_at}' in log_path.read_text()
  _, resumed = inference.restore_train_state(workdir)
  _assert_same_state(resumed, jax.device_get(uninterrupted))  # Bit-identical on CPU.


def _nan_at(step_to_poison, monkeypatch):
  """Makes the input pipeline deliver NaN images at one step."""
  batches = input_pipeline.train_batches

  def poisoned(builder, image_format, *, start_step=0, **settings):
    for step, batch in enumerate(
        batches(builder, image_format, start_step=start_step, **settings), start_step
    ):
      if step == step_to_poison:
        batch = {'image': np.full_like(batch['image'], np.nan)}
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_batches', poisoned)


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    tfds_data_dir, tmp_path, monkeypatch
):
  config = _config(tfds_data_dir, num_train_steps=8, checkpoint_every_steps=2)
  _nan_at(6, monkeypatch)  # The 7th step, counted from 1.
  with pytest.raises(
      NonFiniteError,
      match=r'Step 7: non-finite KL \(L_prior\), L_llike.*'
      r'latest checkpoint is step 6\. Re-running resumes from it',
  ):
    train.train_and_evaluate(config, tmp_path)
  assert inference.available_steps(tmp_path) == [2, 4, 6]
  _, state = inference.restore_train_state(tmp_path)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))

  config.on_nonfinite = 'skip'  # Drop the bad batch and go on.
  config.num_train_steps = 10
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 10
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state)))


def test_parameters_that_overflow_are_never_saved(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path)
  # Finite losses and gradients at step 5, but its update takes the weights to Inf.
  config.optim.learning_rate, config.num_train_steps, config.checkpoint_every_steps = 1e38, 8, 1
  with pytest.raises(
      NonFiniteError,
      match=r'Step 5: the parameters .* hold NaN or Inf, so '
      r'this state was not saved; the latest checkpoint is step 4',
  ):
    train.train_and_evaluate(config, tmp_path)
  assert inference.available_steps(tmp_path) == [2, 4]


def test_a_diverged_checkpoint_is_named_and_can_be_rewound_past(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path / 'straight')
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, workdir)
  # Step 5's update leaves finite but huge weights, which are saved; step 6 overflows.
  diverging = _config(tfds_data_dir, num_train_steps=8, checkpoint_every_steps=1)
  diverging.optim.learning_rate = 1e6
  with pytest.raises(
      NonFiniteError,
      match=r'Step 6: .*latest checkpoint is step 5.*'
      r'--config.restore_step=4 resumes from an earlier checkpoint',
  ):
    train.train_and_evaluate(diverging, workdir)
  config.num_train_steps = 6  # The first learning rate again: step 6 overflows at once.
  with pytest.raises(
      NonFiniteError,
      match=r'Step 6: .*at the first step after resuming from '
      r'the checkpoint of step 5: its parameters have likely diverged\. '
      r'--config.restore_step=4',
  ):
    train.train_and_evaluate(config, workdir)
  assert inference.available_steps(workdir) == [2, 4, 5]

  config.restore_step = 4
  state = train.train_and_evaluate(config, workdir)
  assert (workdir / 'checkpoints_set_aside' / '5').is_dir()  # Moved, not deleted.
  assert inference.available_steps(workdir) == [2, 4, 6]
  config.num_train_steps = 8  # The same command again (a preemption, a longer run) resumes.
  assert int(train.train_and_evaluate(config, workdir).step) == 8
  assert inference.available_steps(workdir) == [4, 6, 8]
  config.num_train_steps = 6
  config.restore_step = 0  # The rewound run is the run that never diverged.
  _assert_same_state(
      jax.device_get(state), jax.device_get(train.train_and_evaluate(config, tmp_path / 'straight'))
  )


def test_a_damaged_latest_checkpoint_is_reported_then_set_aside_on_request(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path / 'straight')
  workdir = tmp_path / 'damaged'
  train.train_and_evaluate(config, workdir)
  damage_array_files(workdir / 'checkpoints' / '4')

  # An interrupted asynchronous save leaves only a temporary directory, never listed.
  shutil.copytree(
      workdir / 'checkpoints' / '2',
      workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1795000000000000',
  )
  config.num_train_steps = 6
  with pytest.raises(
      CheckpointError,
      match=r'checkpoint of step 4 .* cannot be read.*'
      r'previous checkpoint \(step 2\).*checkpoint_fallback=True',
  ):
    train.train_and_evaluate(config, workdir)
  assert inference.available_steps(workdir) == [2, 4]

  with pytest.raises(
      CheckpointError,
      match=r'checkpoint of step 4 in .* cannot be read.*'
      r'damaged or incomplete\. Pass --step with another checkpoint: 2\.',
  ):
    inference.load_model(workdir)  # What sample.py and evaluate.py say.
  assert inference.load_model(workdir, step=2).step == 2

  (workdir / 'checkpoints' / '999999').mkdir()  # A stray folder that looks like a step.
  config.checkpoint_fallback = True
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 6
  assert sorted(p.name for p in (workdir / 'checkpoints_unreadable').iterdir()) == [
      '4',
      '999999',
  ]  # Set aside, not deleted; the readable step 2 stayed.
  assert inference.available_steps(workdir) == [2, 4, 6]  # Resumed from 2.
  config.checkpoint_fallback = False
  straight = train.train_and_evaluate(config, tmp_path / 'straight')
  _assert_same_state(jax.device_get(state), jax.device_get(straight))


def test_a_failed_resume_moves_no_checkpoint_and_keeps_config_json(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path)
  saved = (tmp_path / 'config.json').read_text()
  other = _config(tfds_data_dir, num_train_steps=6, **{'networks.latent_dim': 4})
  with pytest.raises(WorkdirMismatchError, match=r'config.networks.latent_dim is 8 there and 4'):
    train.train_and_evaluate(other, tmp_path)
  assert (tmp_path / 'config.json').read_text() == saved
  assert not list(tmp_path.glob('config.*.json'))

  (tmp_path / 'config.json').unlink()  # Nothing left to compare with: the shapes tell.
  other.checkpoint_fallback = True
  with pytest.raises(
      WorkdirMismatchError,
      match=r'checkpoint .*/4 holds a model of other '
      r'shapes than this config.s.*Was config.json deleted or replaced',
  ):
    train.train_and_evaluate(other, tmp_path)
  assert not (tmp_path / 'config.json').exists()
  assert inference.available_steps(tmp_path) == [2, 4]  # Not set aside as unreadable.

  (tmp_path / 'config.json').write_text(saved[: len(saved) // 2])  # A truncated file.
  for attempt in (
      lambda: train.train_and_evaluate(config, tmp_path),
      lambda: inference.load_model(tmp_path),
  ):
    with pytest.raises(
        CheckpointError, match=r'config.json is damaged \(not valid JSON.*' r'Move it aside'
    ):
      attempt()
  (tmp_path / 'config.json').unlink()
  train.train_and_evaluate(config, tmp_path)  # The run's own config writes it again.
  assert json.loads((tmp_path / 'config.json').read_text()) == json.loads(saved)


def test_a_full_disk_is_reported_with_the_checkpoint_to_resume_from(tmp_path):
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp').mkdir()

  class FullDisk:  # What Orbax raises at the save after one that failed in the background.
    directory = tmp_path / 'checkpoints'

    def save(self, *args, **kwargs):
      raise ValueError(
          'RESOURCE_EXHAUSTED: Error writing "x/0": Failed to write 26738 bytes '
          "to file 5: No space left on device [os_error_code='28']"
      )

  with pytest.raises(
      CheckpointSaveError,
      match=r'^Saving a checkpoint to .* failed: the disk '
      r'is full \(No space left on device\)\. Free space .* it resumes from '
      r'step 4, the newest complete checkpoint',
  ):
    checkpointing.save(FullDisk(), types.SimpleNamespace(step=8))


class _TensorBoardFull(Exception):
  """What clu's writer re-raises when TensorFlow could not write the event file."""


def _closing(tmp_path, body_error, *closer_errors, ran=None):
  """Runs full_disk.close_all in a finally after `body_error`, with closers that raise
  `closer_errors` (None: succeeds), each appended to `ran` when called."""
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  ran = [] if ran is None else ran

  def closer(error):
    def close():
      ran.append(error)
      if error is not None:
        raise error

    return close

  try:
    if body_error is not None:
      raise body_error
  finally:
    full_disk.close_all(tmp_path / 'checkpoints', [closer(e) for e in closer_errors])


def _summary_writer_error():
  try:
    raise _TensorBoardFull('Failed to flush 11 events to x.v2\n\tCould not flush events file.')
  except _TensorBoardFull as e:
    try:
      raise RuntimeError("Error '...' occurred ASYNCHRONOUSLY.") from e
    except RuntimeError as wrapped:
      return wrapped


def test_a_full_disk_found_by_any_writer_is_one_line_that_knows_the_disk_is_full(tmp_path):
  """TensorBoard's writer often hits the full disk first, without an errno; the message
  takes the reason from the checkpoint save that failed beside it."""
  no_space = OSError(28, 'No space left on device')
  with pytest.raises(CheckpointSaveError) as raised:
    _closing(tmp_path, _summary_writer_error(), None, no_space, _summary_writer_error())
  assert raised.value.__cause__ is no_space
  assert re.match(
      r'Writing to .* failed: the disk is full \(No space left on device\)\. Free space .* '
      r'it resumes from step 4, the newest complete checkpoint',
      str(raised.value),
  )
  with pytest.raises(CheckpointSaveError, match='TensorBoard could not write its event file'):
    _closing(tmp_path / 'alone', _summary_writer_error(), None)


def test_closing_after_an_error_runs_every_closer_and_keeps_the_error(tmp_path):
  bug = ZeroDivisionError('a bug in the loop')
  no_space = OSError(28, 'No space left on device')
  ran = []
  with pytest.raises(ZeroDivisionError):  # Not hidden behind the full disk found later.
    _closing(tmp_path, bug, no_space, None, ran=ran)
  assert ran == [no_space, None]
  ran = []
  with pytest.raises(KeyError):  # A closer's own bug keeps its traceback.
    _closing(tmp_path / 'bug', None, None, KeyError('closer'), None, ran=ran)
  assert len(ran) == 3
  _closing(tmp_path / 'ok', None, None, None)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_checkpoints(tfds_data_dir, tmp_path):
  """train.py on a 1.2 MB tmpfs, mounted in a private mount namespace (as root or in a
  user namespace), where the second checkpoint no longer fits: one line, however the
  writers' background threads interleave, the last stderr line (no shutdown noise)."""
  disk, report = tmp_path / 'disk', tmp_path / 'report.txt'
  disk.mkdir()
  command = [
      *_command(disk / 'run', tfds_data_dir),
      '--config.num_train_steps=40',
      '--config.checkpoint_every_steps=2',
      '--config.keep_checkpoints=50',
  ]
  script = (
      f'mount -t tmpfs -o size=1200k tmpfs {disk} || exit 99; '
      f'"$@" 2> {tmp_path / "stderr.txt"}; echo "rc=$?" > {report}; '
      f'ls {disk / "run" / "checkpoints"} >> {report}'
  )
  result = subprocess.run(
      ['unshare', *([] if os.geteuid() == 0 else ['-r']), '-m', 'sh', '-c', script, 'sh', *command],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  if result.returncode == 99 or not report.exists():
    pytest.skip(f'cannot mount a tmpfs here (needs root or user namespaces): {result.stderr}')
  status, *listed = report.read_text().split()
  stderr = (tmp_path / 'stderr.txt').read_text()
  assert status == 'rc=1', stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  # Whichever writer (a checkpoint, TensorBoard's event file) hit the full disk first.
  assert re.match(r'error: (Saving a checkpoint to|Writing to) .* the disk is full', last), last
  complete = sorted(int(name) for name in listed if name.isdigit())
  assert complete and f'it resumes from step {complete[-1]}, the newest complete' in last


def test_an_unwritable_workdir_is_refused_before_set_up(tiny_digits_config, tmp_path):
  (tmp_path / 'file').write_text('')
  for workdir, message in (
      (tmp_path / 'file', 'is a file, not a folder'),
      (tmp_path / 'file' / 'run', 'is a file, so the folder cannot be'),
  ):
    with pytest.raises(OutputFolderError, match=f'--workdir={workdir}.*{message}'):
      train.train_and_evaluate(tiny_digits_config, workdir)


def test_a_dataset_smaller_than_one_batch_is_refused_up_front(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, batch_size=2048)
  with pytest.raises(ValueError, match='config.batch_size=2048: larger than the 1497'):
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'checkpoints').exists()
