"""The factor model: a radiograph's latent split into an identity/anatomy factor ``z_id``
and a pathology factor ``z_path`` (docs/methods.md §5), and the attribute prior that names a
pathology factor from (finding, side, zone, severity).

It works on the default model's autoencoder latents (4 × 32 × 32 for a 256² film), so its
output is a latent the denoiser and decoder already understand:

- ``z_id`` keeps the latent grid (anatomy is spatial: where the ribs, heart and
  diaphragm are); group supervision makes it the same for a patient's film with and
  without the finding, so it cannot carry the finding;
- ``z_path`` is a small vector (a Gaussian posterior, as in a VAE) read from a coarse
  grid, so it can say *where* as well as *what*;
- the decoder draws a latent from ``z_id`` and ``z_path`` (``z_path`` modulates every
  block, FiLM-style, and is also painted onto the grid through a learned map);
- the attribute prior maps a structured finding (each attribute an embedding, summed) to
  the mean of ``z_path``. Attributes compose, which is what lets a rare combination
  (right upper effusion) borrow from common ones (right lower effusion, upper
  pneumothorax): the long-tail claim of the second source paper.

Why hand-written: no library ships a two-factor VAE with group supervision; the blocks
are MONAI/torch primitives.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from medcf.errors import InputError
from medcf.io.atomic import write_new_file, write_new_text
from medcf.models.base import module_fingerprint
from medcf.models.default import load_weights
from medcf.models.package import PIECE_FILES, Piece, PieceKind, Role
from medcf.vocab import Finding, Severity, Side, Zone

NONE = "none"
FORMAT = "medcf-causal-factors"
CONFIG_FILE = PIECE_FILES[PieceKind.FACTORS][Role.RECORD]  # the layout `--export` writes (medcf.models.package)
WEIGHTS_FILE = PIECE_FILES[PieceKind.FACTORS][Role.WEIGHTS]

# Every attribute's vocabulary, "none" first: a film without the finding has none of them.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "finding": (NONE, *(f.value for f in Finding)),
    "side": (NONE, *(s.value for s in Side)),
    "zone": (NONE, *(z.value for z in Zone)),
    "severity": (NONE, *(s.value for s in Severity)),
}


@dataclass(frozen=True)
class Attributes:
    """One film's main finding in structured form (``finding == "none"``: no finding).
    Lobar consolidation has no zone; cardiomegaly neither side nor zone."""

    finding: str = NONE
    side: str = NONE
    zone: str = NONE
    severity: str = NONE

    def __post_init__(self) -> None:
        for name, words in VOCABULARY.items():
            value = getattr(self, name)
            value = NONE if value is None else getattr(value, "value", value)
            if value not in words:
                raise InputError(f"{name} {value!r}: choose from {', '.join(words)}")
            object.__setattr__(self, name, value)
        if self.finding == NONE and any(getattr(self, n) != NONE for n in ("side", "zone", "severity")):
            raise InputError("a film without a finding has no side, zone or severity")

    @classmethod
    def from_record(cls, record: dict) -> "Attributes":
        """From a world-set record (:mod:`medcf.training.world_sets`)."""
        return cls(record.get("finding") or NONE, record.get("side") or NONE, record.get("zone") or NONE,
                   record.get("severity") or NONE)

    @classmethod
    def from_spec(cls, finding: Finding, side: Side | None, zone: Zone | None, severity: Severity) -> "Attributes":
        """The finding an edit asks for (sideless findings drop the side, as the world does)."""
        side = None if finding is Finding.CARDIOMEGALY else side
        return cls(finding.value, side or NONE, zone or NONE, severity.value)

    @property
    def present(self) -> bool:
        return self.finding != NONE

    def indices(self) -> list[int]:
        return [VOCABULARY[name].index(getattr(self, name)) for name in VOCABULARY]

    def key(self) -> str:
        return "/".join(getattr(self, name) for name in VOCABULARY)


def attribute_tensor(attributes: list[Attributes]) -> torch.Tensor:
    """``(B, 4)`` vocabulary indices."""
    return torch.tensor([a.indices() for a in attributes], dtype=torch.long)


@dataclass(frozen=True)
class FactorConfig:
    latent_channels: int = 4
    latent_size: int = 32
    identity_channels: int = 8
    pathology_dim: int = 32
    width: int = 48
    blocks: int = 2

    def __post_init__(self) -> None:
        if self.latent_size % 4:
            raise InputError(f"latent size {self.latent_size} must be a multiple of 4")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(8, channels)


class _ResBlock(nn.Module):
    """Conv residual block; with ``condition`` a FiLM scale/shift from ``z_path``."""

    def __init__(self, channels: int, condition: int = 0):
        super().__init__()
        self.norm1, self.conv1 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(condition, 2 * channels) if condition else None

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            scale, shift = self.film(z)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return x + self.conv2(nn.functional.silu(h))


class FactorModel(nn.Module):
    """Encoders for ``z_id`` and ``z_path``, the decoder, the attribute prior and the
    finding classifier on ``z_path`` (:mod:`medcf.training.factors` trains them)."""

    def __init__(self, config: FactorConfig = FactorConfig()):
        super().__init__()
        self.config = config
        c, w, s = config.latent_channels, config.width, config.latent_size
        self.identity_encoder = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), *[_ResBlock(w) for _ in range(config.blocks)],
            _norm(w), nn.SiLU(), nn.Conv2d(w, config.identity_channels, 3, padding=1))
        coarse = s // 4
        self.pathology_encoder = nn.Sequential(
            nn.Conv2d(c, w, 3, padding=1), _ResBlock(w), nn.Conv2d(w, w, 4, stride=2, padding=1), _ResBlock(w),
            nn.Conv2d(w, 16, 4, stride=2, padding=1), _norm(16), nn.SiLU(), nn.Flatten(),
            nn.Linear(16 * coarse * coarse, 256), nn.SiLU(), nn.Linear(256, 2 * config.pathology_dim))
        self.paint = nn.Linear(config.pathology_dim, 8 * coarse * coarse)  # z_path drawn onto the coarse grid
        self.decoder_in = nn.Conv2d(config.identity_channels + 8, w, 3, padding=1)
        self.decoder_blocks = nn.ModuleList(_ResBlock(w, config.pathology_dim) for _ in range(config.blocks))
        self.decoder_out = nn.Sequential(_norm(w), nn.SiLU(), nn.Conv2d(w, c, 3, padding=1))
        self.prior = nn.ModuleList(nn.Embedding(len(words), config.pathology_dim) for words in VOCABULARY.values())
        self.prior_mlp = nn.Sequential(nn.SiLU(), nn.Linear(config.pathology_dim, config.pathology_dim))
        self.classifier = nn.Linear(config.pathology_dim, len(VOCABULARY["finding"]))

    def identity(self, latents: torch.Tensor) -> torch.Tensor:
        """``z_id``: ``(B, identity_channels, s, s)``."""
        return self.identity_encoder(latents)

    def pathology(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior of ``z_path``: mean and log-variance, ``(B, pathology_dim)`` each."""
        mean, log_var = self.pathology_encoder(latents).chunk(2, dim=1)
        return mean, log_var.clamp(-8.0, 4.0)

    def prior_mean(self, attributes: torch.Tensor) -> torch.Tensor:
        """The prior mean of ``z_path`` for ``(B, 4)`` attribute indices."""
        summed = sum(embedding(attributes[:, k]) for k, embedding in enumerate(self.prior))
        return summed + self.prior_mlp(summed)

    def decode(self, identity: torch.Tensor, pathology: torch.Tensor) -> torch.Tensor:
        """A latent from ``z_id`` and ``z_path``."""
        s = self.config.latent_size
        painted = self.paint(pathology).view(-1, 8, s // 4, s // 4)
        painted = nn.functional.interpolate(painted, size=identity.shape[-2:], mode="bilinear", align_corners=False)
        h = self.decoder_in(torch.cat([identity, painted], dim=1))
        for block in self.decoder_blocks:
            h = block(h, pathology)
        return self.decoder_out(h)

    def counterfactual_delta(self, latents: torch.Tensor, source: list[Attributes],
                             target: list[Attributes]) -> torch.Tensor:
        """``decode(z_id, prior(target)) − decode(z_id, prior(source))``: the change the
        factors attribute to switching this film's pathology from ``source`` to ``target``,
        its anatomy pinned by ``z_id``. Both codes come from the attribute prior (the path
        the prior-swap loss trains), so the difference holds the finding alone; added to
        the input latent it keeps everything the decoder cannot reproduce."""
        identity = self.identity(latents)
        codes = self.prior_mean(attribute_tensor([*source, *target]).to(latents.device))
        return self.decode(identity, codes[len(source):]) - self.decode(identity, codes[:len(source)])


@dataclass
class FactorRecord:
    """What ``causal_factors.json`` holds: the architecture, the autoencoder the latents
    came from (its fingerprint: the factors are valid only in that latent space), the
    recipe and the measured figures."""

    config: FactorConfig
    autoencoder_sha256: str
    recipe: dict
    figures: dict

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "config": asdict(self.config),
                "autoencoder_sha256": self.autoencoder_sha256, "recipe": self.recipe, "figures": self.figures}


def save_factors(folder: str | Path, model: FactorModel, record: FactorRecord) -> list[Path]:
    """Write the weights and the record into ``folder``; never overwrites."""
    from safetensors.torch import save_file


    folder = Path(folder)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    weights = write_new_file(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    return [weights, write_new_text(folder / CONFIG_FILE, json.dumps(record.to_dict(), indent=1) + "\n")]


def load_factors(folder: str | Path) -> tuple[FactorModel, FactorRecord]:
    """The factor model and its record from a folder ``save_factors`` wrote (``causal_factors.json`` + weights)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise InputError(f"{folder}: no {CONFIG_FILE} (train one with `medcf train factors`)")
    return load_factor_files(folder / CONFIG_FILE, folder / WEIGHTS_FILE)


def load_factor_piece(piece: Piece) -> tuple[FactorModel, FactorRecord]:
    """The factor model a model package lists (its ``factors`` piece)."""
    return load_factor_files(piece.path(Role.RECORD), piece.path(Role.WEIGHTS))


def load_factor_files(path: Path, weights: Path) -> tuple[FactorModel, FactorRecord]:
    """The factor model from its record ``path`` and its ``weights``."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON ({error})") from None
    if data.get("format") != FORMAT:
        raise InputError(f"{path} is not a MedCF factor model (format {data.get('format')!r})")
    config = FactorConfig(**data["config"])
    model = FactorModel(config)
    load_weights(model, weights)
    record = FactorRecord(config, data["autoencoder_sha256"], data.get("recipe", {}), data.get("figures", {}))
    return model.eval().requires_grad_(False), record


def autoencoder_fingerprint(generator) -> str:
    """The fingerprint of ``generator``'s autoencoder: a factor model works only in the latent
    space it was trained in, so it records this and is refused beside another autoencoder."""
    return module_fingerprint(getattr(generator, "vae", None) or generator.autoencoder)
