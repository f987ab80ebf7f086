"""Speed work for CPUs only: Winograd convolutions, space-to-depth input gradients of
strided convolutions, few-channel convolutions as matrix products plus shifts, XLA's
Eigen convolution kernels and malloc tuning.

train_state.build_networks injects winograd's convolution, which picks the first three,
into the networks (config.cpu_winograd), and entry_point.set_up sets the other two
before JAX starts; nothing else knows of them, and on GPU and TPU none of it changes
anything.
"""
