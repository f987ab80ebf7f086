"""Fault injection on the digits config: kill -9, SIGTERM, NaN, damaged checkpoints."""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import digits
from tests.helpers import ROOT, TINY, command_line_flags, override, tiny
from vaegan_jax import inference
from vaegan_jax import input_pipeline
from vaegan_jax import train
from vaegan_jax.errors import CheckpointError, NonFiniteError

# The tiny digits run of these tests: 30 steps, a checkpoint every 5.
RUN = {'log_every_steps': 1, 'checkpoint_every_steps': 5, 'num_train_steps': 30}


def _config(data_dir, **changes):
  return override(tiny(digits.get_config()), {**RUN, 'data_dir': data_dir, **changes})


def _command(workdir, data_dir):
  return [sys.executable, 'train.py', '--config', 'configs/digits.py', '--workdir',
          str(workdir), *command_line_flags({**TINY, **RUN, 'data_dir': data_dir})]


def _start(workdir, data_dir, log):
  env = None
  return subprocess.Popen(_command(workdir, data_dir), cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT, text=True)


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
def test_kill_9_and_sigterm_resume_to_the_uninterrupted_run(tfds_data_dir,
                                                           tmp_path):
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

  with open(log_path, 'w') as log:  # The same command again, then a preemption notice.
    process = _start(workdir, tfds_data_dir, log)
    _wait_for(log_path, 'step 22/30', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
  output = log_path.read_text()
  assert 'Resuming from the checkpoint of step' in output
  assert 'SIGTERM: saved the checkpoint of step' in output
  stopped_at = int(output.split('SIGTERM: saved the checkpoint of step ')[1].split()[0])
  assert 22 <= stopped_at < 30
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

  def poisoned(builder, config, start_step=0, rows=None):
    for step, batch in enumerate(batches(builder, config, start_step, rows), start_step):
      if step == step_to_poison:
        batch = {'image': np.full_like(batch['image'], np.nan)}
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_batches', poisoned)


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tfds_data_dir, tmp_path,
                                                                monkeypatch):
  config = _config(tfds_data_dir, num_train_steps=8, checkpoint_every_steps=2)
  _nan_at(6, monkeypatch)  # The 7th step, counted from 1.
  with pytest.raises(NonFiniteError, match=r'Step 7: non-finite KL \(L_prior\), L_llike.*'
                     r'latest checkpoint \(step 6\) is the last good state'):
    train.train_and_evaluate(config, tmp_path)
  assert inference.available_steps(tmp_path) == [2, 4, 6]
  _, state = inference.restore_train_state(tmp_path)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))

  config.on_nonfinite = 'skip'  # Drop the bad batch and go on.
  config.num_train_steps = 10
  state = train.train_and_evaluate(config, tmp_path)
  assert int(state.step) == 10
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state)))


def _damage_largest_file(checkpoint_dir):
  path = max((p for p in checkpoint_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  with open(path, 'r+b') as f:
    f.truncate(path.stat().st_size // 2)


def test_a_damaged_latest_checkpoint_is_reported_then_set_aside_on_request(tfds_data_dir,
                                                                          tmp_path):
  config = _config(tfds_data_dir, num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, tmp_path / 'straight')
  workdir = tmp_path / 'damaged'
  train.train_and_evaluate(config, workdir)
  _damage_largest_file(workdir / 'checkpoints' / '4')

  # An interrupted asynchronous save leaves only a temporary directory, never listed.
  shutil.copytree(workdir / 'checkpoints' / '2',
                  workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1795000000000000')
  config.num_train_steps = 6
  with pytest.raises(CheckpointError, match=r'checkpoint of step 4 .* cannot be read.*'
                     r'previous checkpoint \(step 2\).*checkpoint_fallback=True'):
    train.train_and_evaluate(config, workdir)
  assert inference.available_steps(workdir) == [2, 4]

  config.checkpoint_fallback = True
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 6
  assert (workdir / 'checkpoints_unreadable' / '4').is_dir()  # Set aside, not deleted.
  assert inference.available_steps(workdir) == [2, 4, 6]
  config.checkpoint_fallback = False
  straight = train.train_and_evaluate(config, tmp_path / 'straight')
  _assert_same_state(jax.device_get(state), jax.device_get(straight))


def test_a_dataset_smaller_than_one_batch_is_refused_up_front(tfds_data_dir, tmp_path):
  config = _config(tfds_data_dir, batch_size=2048)
  with pytest.raises(ValueError, match='config.batch_size=2048: larger than the 1497'):
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'checkpoints').exists()
