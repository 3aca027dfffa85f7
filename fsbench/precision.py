"""The numeric precision policy: which dtype and memory format every feature computation uses.

One place decides, for a run's device, how features are computed: in pre-training, episodic
training (MAML's functional inner loop and MTL's scale-shift convolutions included), the
prototypes and evaluation. The runner resolves ``--precision`` once (:func:`resolve_precision`);
everything below receives the resolved :class:`Precision` (methods in their
:class:`~fsbench.method.MethodContext`, as ``ctx.precision``) and goes through it:

* ``precision.autocast()`` around the backbone forward (bf16 autocast, or a disabled context);
* ``precision.prepare(module)`` once on a conv backbone (channels_last weights);
* ``precision.input(images)`` on a batch of images before the backbone (channels_last);
* ``precision.features(x)``: a backbone's output as float32 (losses, softmax, prototypes and
  distances are always computed in fp32).

Settings (``--precision`` / ``RunConfig.precision``):

* ``fp32``: full precision; channels_last only on CUDA. On the CPU this is exactly the path
  fsbench took before the policy existed (contiguous NCHW, fp32), bit for bit.
* ``bf16``: bf16 autocast with channels_last, on CUDA or on a CPU with native bf16 support
  (oneDNN: AVX-512 BF16 / AMX); an error elsewhere (emulated bf16 is slower than fp32).
* ``auto`` (the default): ``bf16`` where the device supports it natively, ``fp32`` elsewhere.

channels_last is what makes bf16 pay on the CPU, so the two go together (README, "Precision and
CPU speed", has the measurements). channels_last alone in fp32 changes the convolution algorithm
(results differ in the last bits), so ``fp32`` keeps the contiguous layout on the CPU to stay the
exact reference path.

Determinism: on the CPU, oneDNN's bf16 convolutions are deterministic for a fixed thread count, so
a bf16 run reproduces itself exactly on the same machine, as an fp32 run does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from fsbench.config import PRECISIONS  # the values --precision accepts, declared with the option
from fsbench.errors import ConfigError

__all__ = ["PRECISIONS", "Precision", "cpu_supports_bf16", "resolve_precision"]


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def device_supports_bf16(device: torch.device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_supports_bf16()
    return False


@dataclass(frozen=True)
class Precision:
    """A resolved precision policy for one device.

    ``dtype``: ``"fp32"`` or ``"bf16"`` (autocast); ``channels_last``: whether conv backbones
    and their inputs use the channels_last memory format; ``requested``: what was asked for.
    """

    dtype: str
    device_type: str
    channels_last: bool
    requested: str = "auto"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None in full precision."""
        return torch.bfloat16 if self.dtype == "bf16" else None

    @property
    def label(self) -> str:
        """What ran, as recorded in summary.json: ``fp32`` or ``bf16``."""
        return self.dtype

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the device, or a context that changes nothing in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` (in place) with 4-d weights in the policy's memory format."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """A 4-d image batch in the policy's memory format (a no-op when it already is)."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        """A backbone output as float32 (where losses, softmax and distances are computed)."""
        return x if x.dtype in (torch.float32, torch.float64) else x.float()

    def forward(self, module: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``module(images)`` under the policy, returned in float32."""
        with self.autocast():
            out = module(self.input(images))
        return self.features(out)


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """The policy ``name`` (auto, fp32 or bf16) resolved for ``device``.

    Raises:
        ConfigError: an unknown name, or ``bf16`` on a device without native bf16.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    native = device_supports_bf16(device)
    if name == "bf16" and not native:
        raise ConfigError(
            f"--precision bf16 needs native bf16 on the device ({device}: none); use auto or fp32"
        )
    if name == "fp32" or (name == "auto" and not native):
        return Precision("fp32", device.type, channels_last=cuda, requested=name)
    return Precision("bf16", device.type, channels_last=True, requested=name)
