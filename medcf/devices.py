"""Where the networks run and in which precision: ``--device`` and ``--dtype``.

One argparse helper (:func:`add_device_options`) gives every command that runs a network
the same two options, and one resolver (:func:`resolve_placement`) turns them into a
:class:`Placement` that the loaders take (``load_generator(..., device=, dtype=)``,
``load_segmenter(..., placement=)``). Nothing else parses device names.

What a placement covers, and why:

- the **denoiser** (UNet or DiT) runs on ``device`` in ``dtype``: it is almost all of the
  time and memory of an edit, so that is where half precision pays;
- the **autoencoder** stays float32 whatever ``dtype`` says: the Stable-Diffusion VAE is
  the known source of black or NaN films in float16 (its decoder's activations overflow
  float16's range), it runs only twice per edit, and the editor's exactness outside the
  region rests on ``decode(z0)`` being computed the same way every time;
- the **text encoder** stays float32 (it runs once per prompt; T5 in float16 is another
  known overflow); only its embeddings are cast to ``dtype``;
- the **segmenter** runs on ``device`` in ``dtype`` (its masks are thresholded at 0.5;
  a site that distrusts that keeps float32).

float16 on CPU: torch 2.13's CPU kernels run every layer these models use in float16
(measured on the four model families MedCF loads: samples within 0.015 of float32, no
NaN), so it is accepted rather than refused. It is much slower on a CPU (no float16
arithmetic: 4.2 s against 0.39 s per sampling step on the default model, docs/models.md)
and exists so that the half-precision path can be tested where no GPU is; the resolver
says so in one warning line.

The weights keep their identity across dtypes: steering vectors, ``edit_defaults.json``
and ``evidence.json`` are tied to the denoiser's fingerprint, taken before the cast
(:meth:`medcf.models.base.Generator.weights_fingerprint`).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from typing import Any

from medcf.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float16", "bfloat16")


def add_device_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device`` and ``--dtype`` on a command that runs a network (the one definition)."""
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where the networks run: auto (default) = cuda if available, else mps, else cpu; "
                             "cuda:N is accepted for a given GPU")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="precision of the denoiser and the segmenter (default float32); the autoencoder and "
                             "the text encoder always run in float32. If a half-precision run gives black or NaN "
                             "films, use --dtype float32")


def _device_type(text: str) -> str:
    return text.split(":", 1)[0]


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype, and what was asked for (both go into the provenance)."""

    device: Any  # torch.device (kept untyped so that importing this module does not import torch)
    dtype: Any  # torch.dtype
    requested_device: str = "auto"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def half(self) -> bool:
        return self.dtype_name != "float32"

    def to_dict(self) -> dict:
        return {"device": str(self.device), "dtype": self.dtype_name, "requested_device": self.requested_device}


def resolve_placement(device: str = "auto", dtype: str = "float32") -> Placement:
    """``device`` (auto|cpu|cuda|cuda:N|mps) and ``dtype`` (float32|float16|bfloat16) to a
    :class:`Placement`; asking for a device this machine lacks is one :class:`InputError` line."""
    import torch

    kind = _device_type(device)
    if kind not in DEVICES:
        raise InputError(f"--device {device}: choose one of {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps is not None and mps.is_available())
    if kind == "auto":
        resolved = "cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu"
    elif kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu "
                         "or install a CUDA build of torch")
    elif kind == "cuda" and ":" in device:
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s)")
        resolved = device
    elif kind == "mps" and not mps_available:
        raise InputError("--device mps: the Metal (MPS) backend is not available on this machine; use --device cpu")
    else:
        resolved = device
    torch_dtype = getattr(torch, dtype)
    if torch_dtype is torch.float16 and _device_type(resolved) == "cpu":
        warnings.warn("--dtype float16 on the CPU runs correctly with this torch but is usually slower than "
                      "float32 (CPUs lack float16 arithmetic); it is meant for testing the half-precision path")
    return Placement(torch.device(resolved), torch_dtype, device)


def placement_from_args(args: argparse.Namespace) -> Placement:
    """The placement a parsed command line asks for (options of :func:`add_device_options`)."""
    return resolve_placement(getattr(args, "device", "auto"), getattr(args, "dtype", "float32"))


def loader_kwargs(placement: Placement | None) -> dict:
    """``device=`` and ``dtype=`` for the model loaders (none: their float32-on-CPU default)."""
    return {} if placement is None else {"device": placement.device, "dtype": placement.dtype}


def precision_hint(dtype: Any) -> str:
    """What to change when a run in ``dtype`` gave black or NaN pixels (empty in float32)."""
    name = str(dtype).removeprefix("torch.")
    if name == "float32":
        return ""
    other = "bfloat16 or float32" if name == "float16" else "float32"
    return f" (the denoiser ran in {name}: rerun with --dtype {other})"


def place_network(module: Any, placement: Placement) -> Any:
    """Move ``module`` to the placement and let it take and give CPU float32 tensors as
    before: a pre-hook moves its inputs over, a hook brings its outputs back. This is how a
    segmenter built for the CPU (``segment_image`` makes CPU tensors) runs on a GPU without
    each segmenter learning about devices."""
    import torch

    module.to(placement.device, placement.dtype)

    def inputs(_module, args):
        return tuple(a.to(placement.device, placement.dtype) if torch.is_tensor(a) and a.is_floating_point()
                     else a for a in args)

    def outputs(_module, _args, result):
        if torch.is_tensor(result):
            return result.to("cpu", torch.float32)
        return result

    module.register_forward_pre_hook(inputs)
    module.register_forward_hook(outputs)
    return module


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows, maybe
    empty): benchmark records name the machine their figures came from. Imports nothing
    heavy, so a parent process that must stay small (``benchmarks/bench_io.py``) can call it."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
