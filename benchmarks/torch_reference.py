"""A PyTorch VAE-GAN written from the seed's layer tables and training loop, for speed comparisons.

  python benchmarks/torch_reference.py --image_size 64 --channels 1 --batch_size 64 --steps 5

Each batch makes three sequential RMSprop updates, as the seed's loop does:
  1. Dis: Enc and Dec forward, Dis on x, x~ and x_p (3 calls), BCE, step;
  2. Dec: Dec forward again on z and z_p, Dis on x, x~, x_p for L_GAN and Dis_l on x, x~
     for L_llike (5 calls), gamma * L_llike - L_GAN, step;
  3. Enc: a fresh Enc and Dec forward, Dis_l on x and x~ (2 calls), KL + beta * L_llike, step.
That is ten discriminator calls, five decoder calls and two encoder calls per
batch. Prints one JSON line: parameter counts, step time and images/s.
The process keeps freed host memory as the JAX entry points do (vaegan_jax/cpu/host_memory.py;
VAEGAN_KEEP_FREED_MEMORY=0 turns it off in both), so both run with the same malloc.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.utils.flop_counter
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vaegan_jax.cpu import host_memory  # pylint: disable=g-import-not-at-top


def _block(layer: nn.Module, width: int, two_d: bool = True) -> list[nn.Module]:
  norm = nn.BatchNorm2d(width) if two_d else nn.BatchNorm1d(width)
  return [layer, norm, nn.LeakyReLU(0.2)]


class Encoder(nn.Module):

  def __init__(self, channels: int, image_size: int, latent: int = 128):
    super().__init__()
    self.features = nn.Sequential(
        *_block(nn.Conv2d(channels, 64, 5, 2, 2), 64),
        *_block(nn.Conv2d(64, 128, 5, 2, 2), 128),
        *_block(nn.Conv2d(128, 256, 5, 2, 2), 256),
        nn.Flatten(),
        *_block(nn.Linear(256 * (image_size // 8) ** 2, 2048), 2048, two_d=False),
    )
    self.mu, self.logvar = nn.Linear(2048, latent), nn.Linear(2048, latent)

  def forward(self, x):
    h = self.features(x)
    return self.mu(h), self.logvar(h)


class Decoder(nn.Module):

  def __init__(self, channels: int, image_size: int, latent: int = 128):
    super().__init__()
    self.side = image_size // 8
    self.dense = nn.Sequential(
        *_block(nn.Linear(latent, 256 * self.side**2), 256 * self.side**2, two_d=False)
    )
    self.convs = nn.Sequential(
        *_block(nn.ConvTranspose2d(256, 256, 6, 2, 2), 256),
        *_block(nn.ConvTranspose2d(256, 128, 6, 2, 2), 128),
        *_block(nn.ConvTranspose2d(128, 32, 6, 2, 2), 32),
        nn.ConvTranspose2d(32, channels, 5, 1, 2),
        nn.Tanh(),
    )

  def forward(self, z):
    return self.convs(self.dense(z).view(-1, 256, self.side, self.side))


class Discriminator(nn.Module):

  def __init__(self, channels: int, image_size: int):
    super().__init__()
    self.features = nn.Sequential(  # Dis_l: the 4th convolution after BN + LeakyReLU (the seed).
        nn.Conv2d(channels, 32, 5, 1, 2),
        nn.LeakyReLU(0.2),
        *_block(nn.Conv2d(32, 128, 5, 2, 2), 128),
        *_block(nn.Conv2d(128, 256, 5, 2, 2), 256),
        *_block(nn.Conv2d(256, 256, 5, 2, 2), 256),
    )
    self.head = nn.Sequential(
        nn.Flatten(),
        *_block(nn.Linear(256 * (image_size // 8) ** 2, 512), 512, two_d=False),
        nn.Linear(512, 1),
    )

  def forward(self, x):
    features = self.features(x)
    return self.head(features), features


def _count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def train_step(enc, dec, dis, optimizers, x, gamma: float = 1.0, beta: float = 1.0):
  opt_enc, opt_dec, opt_dis = optimizers
  bce = F.binary_cross_entropy_with_logits
  ones = torch.ones(len(x), 1)
  zeros = torch.zeros(len(x), 1)
  z_p = torch.randn(len(x), enc.mu.out_features)

  # 1. Discriminator.
  mu, logvar = enc(x)
  z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
  x_tilde, x_p = dec(z), dec(z_p)
  d_real, _ = dis(x)
  d_tilde, _ = dis(x_tilde.detach())
  d_p, _ = dis(x_p.detach())
  loss_dis = bce(d_real, ones) + bce(d_tilde, zeros) + bce(d_p, zeros)
  opt_dis.zero_grad()
  loss_dis.backward()
  opt_dis.step()

  # 2. Decoder: gamma * L_llike - L_GAN (saturating), Dec's parameters only.
  x_tilde, x_p = dec(z.detach()), dec(z_p)
  d_real, _ = dis(x)
  d_tilde, _ = dis(x_tilde)
  d_p, _ = dis(x_p)
  _, features_real = dis(x)
  _, features_tilde = dis(x_tilde)
  llike = 0.5 * (features_tilde - features_real.detach()).pow(2).flatten(1).sum(1).mean()
  loss_gan = bce(d_real, ones) + bce(d_tilde, zeros) + bce(d_p, zeros)
  loss_dec = gamma * llike - loss_gan
  opt_dec.zero_grad()
  loss_dec.backward()
  opt_dec.step()

  # 3. Encoder: KL + beta * L_llike with a fresh forward pass.
  mu, logvar = enc(x)
  z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
  _, features_real = dis(x)
  _, features_tilde = dis(dec(z))
  llike = 0.5 * (features_tilde - features_real.detach()).pow(2).flatten(1).sum(1).mean()
  kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
  loss_enc = kl + beta * llike
  opt_enc.zero_grad()
  loss_enc.backward()
  opt_enc.step()
  return loss_enc.item(), loss_dec.item(), loss_dis.item()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--channels', type=int, default=1)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5, help='Timed steps, after 2 warm-up steps.')
  parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
  parser.add_argument(
      '--dtype',
      default='float32',
      choices=['float32', 'bfloat16'],
      help='bfloat16: the forward and backward passes under torch.autocast.',
  )
  args = parser.parse_args()
  keeps_freed_memory = host_memory.keep_freed_memory()
  torch.manual_seed(0)
  torch.set_default_device(args.device)
  enc = Encoder(args.channels, args.image_size)
  dec = Decoder(args.channels, args.image_size)
  dis = Discriminator(args.channels, args.image_size)
  lr = 3e-4
  optimizers = (
      torch.optim.RMSprop(enc.parameters(), lr=lr),
      torch.optim.RMSprop(dec.parameters(), lr=lr),
      torch.optim.RMSprop(dis.parameters(), lr=lr * 0.1),
  )
  x = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size) * 2 - 1

  def synchronize():
    if args.device.startswith('cuda'):
      torch.cuda.synchronize()

  def step():
    with torch.autocast(
        args.device.split(':')[0], dtype=torch.bfloat16, enabled=args.dtype == 'bfloat16'
    ):
      return train_step(enc, dec, dis, optimizers, x)

  step()
  with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
    step()  # The second warm-up step, counted.
  synchronize()
  start = time.perf_counter()
  for _ in range(args.steps):
    step()
  synchronize()
  seconds = (time.perf_counter() - start) / args.steps
  print(
      json.dumps(
          {
              'framework': f'torch {torch.__version__}',
              'device': args.device,
              'threads': torch.get_num_threads(),
              'keeps_freed_memory': keeps_freed_memory,
              'batch_size': args.batch_size,
              'dtype': args.dtype,
              'params': {
                  'encoder': _count(enc),
                  'decoder': _count(dec),
                  'discriminator': _count(dis),
              },
              'gflop_per_image': counter.get_total_flops() / 1e9 / args.batch_size,
              'step_seconds': seconds,
              'images_per_second': args.batch_size / seconds,
          }
      )
  )


if __name__ == '__main__':
  main()
