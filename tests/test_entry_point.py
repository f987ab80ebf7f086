import asyncio
import sys
import types

from vaegan_jax import entry_point


def _unraisable(error: BaseException) -> types.SimpleNamespace:
  """What Python hands sys.unraisablehook for an error no caller can receive."""
  return types.SimpleNamespace(
      exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None, object=None
  )


def test_a_closed_event_loop_s_wake_up_errors_are_dropped_and_no_other(monkeypatch):
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', lambda unraisable: reported.append(unraisable))
  entry_point.ignore_closed_event_loop_noise()

  loop = asyncio.new_event_loop()
  loop.close()
  try:  # What a TensorStore read that finishes after Orbax gave up runs into.
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    sys.unraisablehook(_unraisable(e))
  assert not reported

  other = RuntimeError('a real failure')
  sys.unraisablehook(_unraisable(other))
  sys.unraisablehook(_unraisable(ValueError('Event loop is closed')))
  assert [r.exc_value for r in reported][0] is other and len(reported) == 2
