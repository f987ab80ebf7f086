"""Runs convolutions on CPU with XLA's own (Eigen) kernels, not YNNPACK's, which are slower here.

jaxlib 0.10 hands the larger convolutions on CPU to YNNPACK (the fusion type
`individual_convolution` of XLA's --xla_cpu_experimental_ynn_fusion_type). For
this model's convolutions XLA's Eigen kernels are faster, the kernel gradients most,
and so is the whole train step (figures in docs/performance.md, from
benchmarks/convolutions.py). YNNPACK's other fusions are kept.

XLA reads its flags when JAX starts a backend, so this must run before JAX first
uses a device; the entry points call it first (entry_point.set_up). Only XLA's CPU
backend reads the flag: GPU and TPU runs are unaffected. A setting of the flag
already in XLA_FLAGS is the user's and is kept:
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution keeps
jaxlib's default.
"""

import os
import re

_FLAG = '--xla_cpu_experimental_ynn_fusion_type'


def use_eigen_convolutions() -> bool:
  """Removes YNNPACK's convolutions in XLA_FLAGS unless the flag is set; True if it did."""
  flags = os.environ.get('XLA_FLAGS', '')
  if _FLAG in flags:
    return False
  os.environ['XLA_FLAGS'] = f'{flags} {_FLAG}=-individual_convolution'.strip()
  return True


def count_ynnpack_convolutions(hlo_text: str) -> int:
  """How many convolutions of a compiled computation (its HLO text) YNNPACK runs."""
  bodies, name = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r'(?:ENTRY )?%(\S+) .*\{$', line)  # Computations start unindented.
    if header:
      name = header.group(1)
      bodies[name] = []
    elif name is not None:
      bodies[name].append(line)
  ynn_fusions = re.findall(r'calls=%([^,\s]+), .*"kind":"__ynn_fusion"', hlo_text)
  return sum(
      any(' convolution(' in line for line in bodies.get(called, ())) for called in ynn_fusions
  )
