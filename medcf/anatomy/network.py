"""The default anatomy network and the one preprocessing both training and inference use.

Why a MONAI ``UNet`` (residual units, Kerfoot et al.): lung and heart fields on chest
radiographs are large smooth shapes whose side is decided by global context (which side
the heart lies on), which an encoder-decoder with skip connections and a deep bottleneck
captures cheaply. Six levels (down to 8x8 at 256 px) give the bottleneck a receptive field
wider than the chest, so a mirrored film is still labelled by anatomy, not by image side.
The four coarser levels are wide (48-384 channels) and every level has two residual
units: the coarse levels are where the hard calls are made from context (posterior
recesses below the dome, lung behind the heart), and a narrower first version underfitted
exactly there. The two finest levels stay narrow (8-16 channels), where width costs
most. 3.6 M parameters (14.6 MB) train on one CPU thread in under an hour and run in well
under a second. Attention U-Nets,
SegResNet or transformer networks gave nothing here that a lung field needs.

The network sees a fixed square (``input_size``): any radiograph is shrunk so its longer
side fits (area averaging), contrast-normalised on its own pixels, and padded with black to
the square (a letterbox). The predicted logits are cut back to the unpadded part and
resized to the radiograph's native size before the sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medcf.bundle import bundle_config
from medcf.vocab import Organ

DEFAULT_INPUT_SIZE = 256
PERCENTILES = (1.0, 99.0)


def network_definition() -> dict:
    """The default network's definition: ``network_def`` of the bundle's anatomy config
    (one source for training and inference)."""
    return dict(bundle_config("anatomy").get("network_def"))


def build_network(definition: dict | torch.nn.Module | None = None) -> torch.nn.Module:
    """Instantiate a network definition (a MONAI bundle ``_target_`` dict); a module is
    returned as it is (a bundle config hands over the network it built)."""
    if isinstance(definition, torch.nn.Module):
        return definition
    from monai.bundle import ConfigParser

    network = ConfigParser({"network": dict(definition or network_definition())}).get_parsed_content("network")
    out_channels = getattr(network, "out_channels", len(Organ))
    if out_channels != len(Organ):
        raise ValueError(f"the anatomy network must give {len(Organ)} channels ({', '.join(o.value for o in Organ)}), "
                         f"not {out_channels}")
    return network


def normalize_intensity(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Map the 1st..99th percentile of the image to 0..1 (clipped), so the network does not
    depend on the window or bit depth of the radiograph it was handed."""
    if isinstance(image, torch.Tensor):
        flat = image.reshape(-1).float()
        low, high = torch.quantile(flat[:: max(1, flat.numel() // 200_000)],
                                   torch.tensor([PERCENTILES[0] / 100, PERCENTILES[1] / 100]))
        return ((image - low) / torch.clamp(high - low, min=1e-6)).clamp(0.0, 1.0)
    low, high = np.percentile(image, PERCENTILES)
    return np.clip((image - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """Where a radiograph of ``shape`` sits inside the network's square input."""

    shape: tuple[int, int]
    size: int

    @property
    def inner(self) -> tuple[int, int]:
        rows, cols = self.shape
        scale = self.size / max(rows, cols)
        return max(1, round(rows * scale)), max(1, round(cols * scale))

    @property
    def offset(self) -> tuple[int, int]:
        inner = self.inner
        return (self.size - inner[0]) // 2, (self.size - inner[1]) // 2

    def pack(self, image: np.ndarray) -> torch.Tensor:
        """(1, 1, size, size) network input from a (rows, cols) display image in [0, 1]."""
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        small = F.interpolate(tensor, size=self.inner, mode="area")
        small = normalize_intensity(small)
        (top, left), (rows, cols) = self.offset, self.inner
        return F.pad(small, (left, self.size - cols - left, top, self.size - rows - top))

    def unpack(self, logits: torch.Tensor) -> torch.Tensor:
        """(channels, rows, cols) logits at native size from (1, channels, size, size)."""
        (top, left), (rows, cols) = self.offset, self.inner
        inner = logits[:, :, top:top + rows, left:left + cols]
        return F.interpolate(inner, size=self.shape, mode="bilinear", align_corners=False)[0]
