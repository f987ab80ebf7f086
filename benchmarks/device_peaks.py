"""What the benchmarks share: devices' peak TFLOP/s, XLA's FLOP count of a step, and
the PyTorch reference run beside the JAX step."""

import json
import os
import subprocess
import sys

import jax

# Dense peak TFLOP/s per device (float32, bfloat16) from the vendors' data sheets. On
# A100, H100 and H200, XLA's default precision runs float32 convolutions and matmuls as
# TF32 on the tensor cores, so their float32 figure is TF32's; TPUs run float32 through
# bfloat16 passes and publish no float32 figure.
PEAK_TFLOPS = {
    'H100': (494.0, 989.0),
    'H200': (494.0, 989.0),
    'A100': (156.0, 312.0),
    'L4': (60.0, 121.0),
    'T4': (8.1, None),  # No bfloat16 tensor cores.
    'TPU v2': (None, 45.0),
    'TPU v3': (None, 123.0),
    'TPU v4': (None, 275.0),
    'TPU v5 lite': (None, 197.0),
}


def peak_tflops(device: jax.Device, bfloat16: bool) -> float | None:
  """The device's peak from PEAK_TFLOPS by its device_kind, or None if not listed."""
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in device.device_kind.lower():
      return peaks[bfloat16]
  return None


def flops(lowered_or_compiled) -> float | None:
  """XLA's FLOP count of a lowered (whole program) or compiled (per device) computation."""
  analysis = lowered_or_compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def torch_reference(
    image_size: int, channels: int, batch_size: int, steps: int, dtype: str = 'float32'
) -> tuple[dict | None, str]:
  """(figures, '') of benchmarks/torch_reference.py run in a process of its own, or
  (None, its error output) when it fails (torch missing, out of memory)."""
  command = [sys.executable, os.path.join(os.path.dirname(__file__), 'torch_reference.py'),
             '--image_size', str(image_size), '--channels', str(channels),
             '--batch_size', str(batch_size), '--steps', str(steps), '--dtype', dtype]  # fmt: skip
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode:
    return None, result.stderr.strip() or f'exit status {result.returncode}'
  return json.loads(result.stdout.strip().splitlines()[-1]), ''
