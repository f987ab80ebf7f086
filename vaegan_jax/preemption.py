"""Preemption (SIGTERM) and Ctrl-C turned into a checkpoint, then a stop."""

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


class StopOnSignal:
  """Turns SIGTERM (what preemption sends) and Ctrl-C (SIGINT) into a request to
  checkpoint and stop; a second Ctrl-C stops at once.

  With several processes, JAX's preemption sync manager (which catches SIGTERM
  itself) picks the next step that every process reaches, so all save the same one;
  Ctrl-C there is left to Python (it stops at once): one process's Ctrl-C, caught
  apart from the others', would leave them waiting for each other.
  """

  def __init__(self):
    self.received = None  # The signal's name, once one arrived.
    self._previous = {}
    self._multiprocess = jax.process_count() > 1
    if threading.current_thread() is threading.main_thread():
      signals = () if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
      self._previous = {s: signal.signal(s, self._handle) for s in signals}

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    if signum == signal.SIGINT:  # A second Ctrl-C interrupts whatever runs then.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      logging.warning(
          'Ctrl-C: saving a checkpoint after this step, then stopping (press '
          'Ctrl-C again to stop without saving).'
      )

  def requested(self, step: int) -> bool:
    """Whether to save and stop after `step`; with several processes, call at every step."""
    if self._multiprocess and multihost_utils.reached_preemption_sync_point(step):
      self.received = self.received or 'SIGTERM'
    return self.received is not None

  def restore(self):
    for signum, previous in self._previous.items():
      if previous is not None:  # None: a handler installed outside Python, not restorable.
        signal.signal(signum, previous)
