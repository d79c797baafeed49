"""The model's own evidence of how far a film lies from its training films: what the
autoencoder loses when it round-trips the film, and how badly the denoiser predicts the
noise added to the film's latent, inside the lungs (the place an edit changes) and over
the whole film.

Why these two: a latent diffusion model has learned only its training films. Its
autoencoder reconstructs what it was trained on and smears what it was not (a real film's
grain and vendor processing, a knee); its denoiser predicts noise well only on latents
that look like its training latents (a film inverted, a lateral view, another anatomy).
Neither needs labels or a second network, so every model MedCF loads can be measured the
same way (:mod:`medcf.domain.calibration` compares the values with their distribution on
the model's own held-out training films).

The film is taken into the model exactly as the editor takes it: the model's intensity
convention fitted on the whole film, an area resize to the working size, the encoder's
posterior mean. Fixed timesteps and noise seeds make the features a deterministic
function of the film and the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medcf.models.base import Generator
from medcf.models.convention import Intensity
from medcf.vocab import StrEnum

MIN_LUNG_SHARE = 0.02  # lungs covering less of the working film than this: the whole film stands in for them


class DomainFeature(StrEnum):
    """One measured distance from the model's training films (larger = farther)."""

    RECONSTRUCTION_LUNGS = "reconstruction_lungs"  # mean |film - decode(encode(film))| inside the lungs
    RECONSTRUCTION_FILM = "reconstruction_film"  # ... over the whole film
    DENOISING_LUNGS = "denoising_lungs"  # mean squared error of the predicted noise inside the lungs (latent grid)
    DENOISING_FILM = "denoising_film"  # ... over the whole latent
    LAYOUT_FILM = "layout_film"  # the same error at high noise levels, over the whole latent: the film's layout


@dataclass(frozen=True)
class FeatureSettings:
    """Noise levels and draws of the denoising errors. ``timesteps``, low and middle levels:
    the prediction there rests on the film's own texture (grain, edges, processing);
    ``layout_timesteps``, high levels: little of the film is left, so the prediction rests
    on what the model expects a film to be, and a film laid out otherwise (a lateral view,
    another body part) is predicted badly (on the default model every lateral render lay
    above the largest error of 16 held-out renders at 800, 3 of 10 at 50). Two draws per
    level: one batch of ten denoiser calls."""

    timesteps: tuple[int, ...] = (50, 200, 400)
    layout_timesteps: tuple[int, ...] = (600, 800)
    draws: int = 2
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "timesteps": list(self.timesteps), "layout_timesteps": list(self.layout_timesteps)}

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureSettings":
        return cls(tuple(int(t) for t in data["timesteps"]), tuple(int(t) for t in data["layout_timesteps"]),
                   int(data["draws"]), int(data["seed"]))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area resize when shrinking, bilinear when enlarging (as the editor resizes a film)."""
    tensor = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    shrinking = size[0] <= tensor.shape[2] and size[1] <= tensor.shape[3]
    out = F.interpolate(tensor, size=size, mode="area") if shrinking else \
        F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def working_film(generator: Generator, display: np.ndarray) -> np.ndarray:
    """``display`` (native size, [0, 1], bright = dense) as the model sees it: its intensity
    convention fitted on the whole film, resized to the working size."""
    display = np.asarray(display, dtype=np.float32)
    convention = generator.convention
    mapping = (convention.intensity if convention is not None else Intensity()).fit(display)
    return mapping.forward(resize(display, tuple(generator.image_size))).astype(np.float32)


def lung_weight(lungs: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """The lungs' share of each cell of a ``size`` grid; all ones when there are no lungs
    or they cover less than :data:`MIN_LUNG_SHARE` (a film with no lungs found is measured whole)."""
    if lungs is None:
        return np.ones(size, np.float32)
    weight = np.clip(resize(np.asarray(lungs, dtype=np.float32), size), 0.0, 1.0)
    return weight if float(weight.mean()) >= MIN_LUNG_SHARE else np.ones(size, np.float32)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> float:
    return float((values * weight).sum() / weight.sum().clamp_min(1e-6))


def _epsilon(generator: Generator, prediction: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The noise a prediction implies, whatever the denoiser predicts (ε, v or x₀)."""
    if generator.prediction_type == "epsilon":
        return prediction
    if generator.prediction_type == "v_prediction":
        return alpha.sqrt() * prediction + (1 - alpha).sqrt() * x
    return (x - alpha.sqrt() * prediction) / (1 - alpha).sqrt()


def measure(generator: Generator, display: np.ndarray, lungs: np.ndarray | None,
            settings: FeatureSettings = FeatureSettings()) -> dict[DomainFeature, float]:
    """Every :class:`DomainFeature` of one film (``lungs``: a boolean mask at the film's
    native size, or None). One encode, one decode and one batched denoiser call (ten films' worth of noise levels)."""
    film = working_film(generator, display)
    size = tuple(film.shape)
    device = generator.device
    with torch.no_grad():
        latents = generator.encode_images(film).to(generator.latent_dtype)
        rebuilt = generator.decode_images(latents)[0]
        levels = settings.timesteps + settings.layout_timesteps
        last = len(generator.make_scheduler("ddim").alphas_cumprod) - 1  # a short schedule: its noisiest level
        timesteps = torch.tensor([min(t, last) for t in levels for _ in range(settings.draws)], device=device)
        count = len(timesteps)
        noise = torch.randn((count,) + tuple(latents.shape[1:]),
                            generator=torch.Generator().manual_seed(settings.seed)).to(device, latents.dtype)
        alphas = generator.make_scheduler("ddim").alphas_cumprod.to(device, latents.dtype)[timesteps].view(-1, 1, 1, 1)
        noisy = alphas.sqrt() * latents + (1 - alphas).sqrt() * noise
        prediction = generator.denoise(noisy, timesteps, generator.unconditional(count))
        per_call = ((_epsilon(generator, prediction, noisy, alphas) - noise) ** 2).mean(dim=1).float().cpu()
        texture = len(settings.timesteps) * settings.draws
        errors, layout = per_call[:texture].mean(dim=0), per_call[texture:].mean(dim=0)
    pixel = torch.as_tensor(np.abs(film - rebuilt))
    in_lungs = torch.as_tensor(lung_weight(lungs, size))
    in_latent_lungs = torch.as_tensor(lung_weight(lungs, tuple(errors.shape)))
    return {
        DomainFeature.RECONSTRUCTION_LUNGS: _weighted_mean(pixel, in_lungs),
        DomainFeature.RECONSTRUCTION_FILM: float(pixel.mean()),
        DomainFeature.DENOISING_LUNGS: _weighted_mean(errors, in_latent_lungs),
        DomainFeature.DENOISING_FILM: float(errors.mean()),
        DomainFeature.LAYOUT_FILM: float(layout.mean()),
    }
