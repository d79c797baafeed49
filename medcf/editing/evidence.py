"""The model's own evidence that a film shows a finding (issue 16): the diffusion model
used as a zero-shot classifier of two prompts.

Why this check: the editor must know whether an edit reached its target — and whether
the input was already there — without the benchmark's judge (which is an instrument for
measuring the editor, and must never steer it). A text-conditioned diffusion model already
holds that knowledge: noised copies of a film are denoised better under the prompt that
describes the film (Li et al., "Your Diffusion Model is Secretly a Zero-Shot Classifier",
ICCV 2023). MedCF compares the finding prompt ("... moderate left pleural effusion") with
the normal prompt, on the same noise draws, inside the edit region's latent cells.

``score = (e_normal − e_finding) / e_normal`` where ``e`` is the mean squared error of the
predicted noise: above 0 the finding prompt explains the film better. The decision
threshold is 0 — no threshold is fitted — and how far the check can be trusted per finding
is measured on the editor's tuning patients by ``benchmarks/bench_evidence.py`` and shipped
beside the model (``evidence.json``): a finding the model cannot draw (a small nodule at
256²) cannot be recognised by it either, and the editor says so instead of pretending.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from medcf.editing.inversion import predicted_noise
from medcf.io.atomic import write_new_text
from medcf.models.base import Generator, TextEncoding
from medcf.models.package import PIECE_FILES, Piece, PieceKind, Role, measured
from medcf.vocab import Finding

EVIDENCE_FILE = PIECE_FILES[PieceKind.EVIDENCE][Role.RECORD]  # the package's evidence piece: how far the check can be trusted
MIN_RELIABLE_AUC = 0.85  # below this the check's verdict is reported, not acted upon


@dataclass(frozen=True)
class EvidenceSettings:
    """Noise levels and draws of the check. Mid-range noise levels carry the layout a
    finding changes (high ones erase the film, low ones only its texture); four draws
    per level keep the check's cost about that of one edit pass at depth 0.5."""

    timesteps: tuple[int, ...] = (100, 250, 400, 550)
    draws: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.timesteps or self.draws < 1:
            raise ValueError("the evidence check needs at least one timestep and one draw")


SIGNIFICANCE = 2.0  # standard errors over the noise draws: a score within them is the draws' noise


@dataclass(frozen=True)
class EvidenceScore:
    """The check's score and its standard error over the noise draws."""

    value: float
    stderr: float

    @property
    def finding_like(self) -> bool:
        """The finding prompt explains the film better, beyond the check's own noise (on the
        demo's film an added effusion scored 6e-5 ± 1e-3: not evidence of anything)."""
        return self.value > SIGNIFICANCE * self.stderr


def evidence_score(generator: Generator, latents: torch.Tensor, normal: TextEncoding, finding: TextEncoding,
                   mask: torch.Tensor, settings: EvidenceSettings = EvidenceSettings()) -> EvidenceScore:
    """``(e_normal − e_finding) / e_normal`` inside ``mask`` (``(1, 1, h, w)`` on the latent
    grid) for one film's latents ``(1, C, h, w)``, with its standard error over the draws:
    > 0 when the finding prompt explains the film better than the normal prompt. Same
    noise for both prompts (a paired comparison)."""
    timesteps = torch.tensor([t for t in settings.timesteps for _ in range(settings.draws)], device=latents.device)
    count = len(timesteps)
    noise = torch.randn((count,) + tuple(latents.shape[1:]), generator=torch.Generator().manual_seed(settings.seed))
    noise = noise.to(latents.device, latents.dtype)
    alphas = generator.make_scheduler("ddim").alphas_cumprod.to(latents.device, latents.dtype)[timesteps]
    alphas = alphas.view(-1, 1, 1, 1)
    noisy = alphas.sqrt() * latents + (1 - alphas).sqrt() * noise
    with torch.no_grad():
        prediction = generator.denoise(torch.cat([noisy, noisy]), torch.cat([timesteps, timesteps]),
                                       TextEncoding.cat([normal.repeat(count), finding.repeat(count)]))
    epsilon = predicted_noise(generator, prediction, torch.cat([noisy, noisy]), torch.cat([alphas, alphas]))
    weight = mask.to(latents.device, latents.dtype).expand_as(latents)
    errors = (((epsilon - torch.cat([noise, noise])) ** 2) * weight).sum(dim=(1, 2, 3)) / weight.sum().clamp_min(1e-6)
    drops = (errors[:count] - errors[count:]) / errors[:count].mean().clamp_min(1e-12)  # one per draw
    stderr = float(drops.std() / count ** 0.5) if count > 1 else 0.0
    return EvidenceScore(float(drops.mean()), stderr)


@dataclass(frozen=True)
class EvidenceReliability:
    """How well the check separates films with and without each finding, measured on
    rendered tuning patients for one denoiser (``benchmarks/bench_evidence.py``);
    ``denoiser_sha256`` is :func:`medcf.editing.steering.denoiser_fingerprint`, the same
    identity the steering vectors are tied to."""

    auc: dict[str, float]
    n: int
    settings: dict
    denoiser_sha256: str

    def reliable(self, finding: Finding) -> bool:
        return self.auc.get(finding.value, 0.0) >= MIN_RELIABLE_AUC

    def save(self, path: str | Path) -> Path:
        return write_new_text(Path(path), json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "EvidenceReliability":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["auc"], data["n"], data["settings"], data["denoiser_sha256"])


def find_reliability(generator: Generator) -> EvidenceReliability | None:
    """The reliability in ``generator``'s package, if it was measured for this denoiser (a
    retrained model must be measured again before its check drives passes)."""
    return measured(generator, PieceKind.EVIDENCE, _load_piece)


def _load_piece(piece: Piece) -> EvidenceReliability:
    return EvidenceReliability.load(piece.path(Role.RECORD))
