"""MedCF's own methods (docs/methods.md §1–4): the film is inverted to ``depth`` and the edit
region re-sampled under the attention controller, latents outside it held on the input's
trajectory. They differ only in what they contribute to the controller and which prompts
they sample with (:meth:`GuidedMethod.controls`), and in the latent they invert
(:meth:`GuidedMethod.proposal`: the film itself, or e.g. the factor model's swap).

- ``regulated``: the target prompt with anatomy regulation and pathology enhancement
  (and, with ``spec.energy``, the concentration energy);
- ``steer``: the factual prompt, pushed by the finding's steering vectors inside the region;
- ``regulated+steer``: both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medcf.editing.control import AttentionController, ControlMethod
from medcf.editing.energy import ConcentrationEnergy
from medcf.editing.film import EditInputs
from medcf.editing.inversion import Trajectory, ddim_inversion, edit_friendly_inversion, refresh_noise_maps
from medcf.editing.methods.base import MethodPass, Need, register
from medcf.editing.regions import EditRegion
from medcf.editing.regulation import AnatomyRegulation, PathologyEnhancement, pathology_tokens
from medcf.editing.spec import GENERIC_DEPTH, EditSpec, Inversion
from medcf.editing.steering import Steering, SteeringVectors
from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.models.sampling import UNCOND, sample
from medcf.vocab import Action


@dataclass
class LatentBlend(ControlMethod):
    """After every step, latents outside the region return to the reference trajectory."""

    trajectory: Trajectory
    mask: torch.Tensor  # (1, 1, h, w) in [0, 1]

    def end_step(self, step, timestep, latents):
        reference = self.trajectory.latents[step + 1].to(latents.device, latents.dtype)
        mask = self.mask.to(latents.device, latents.dtype)
        return mask * latents + (1 - mask) * reference


def region_guidance(mask: torch.Tensor, spec: EditSpec, base: float) -> float | torch.Tensor:
    """The guidance scale as a latent map: ``spec.guidance`` on the region's latent cells
    (``mask``, the latent blend's), the model's own outside (where the latents are held on
    the input's trajectory anyway), so the prompt is pushed hard only where the finding goes."""
    if spec.guidance is None or spec.guidance == base:
        return base
    return base + (spec.guidance - base) * mask


@dataclass(frozen=True)
class Controls:
    """What a method contributes to one re-sampling: its control methods for the attention
    controller, the prompt to sample with and the negative prompt."""

    methods: list[ControlMethod]
    prompt: str
    negative: str


def push_scale(spec: EditSpec) -> float:
    """How hard every push is: ``strength`` times the severity's scale."""
    return spec.strength * spec.constants.severity_scale(spec.severity)


class GuidedMethod:
    """A method that re-samples the edit region of the inverted film under the attention
    controller (the editor's own pass). Subclasses say what they contribute
    (:meth:`controls`) and, if not the film itself, what latent they invert (:meth:`proposal`)."""

    name: str = ""
    default_depth: float = GENERIC_DEPTH
    needs: frozenset[Need] = frozenset()
    uses_model: bool = True
    #: whether :meth:`proposal` changes the film's latent: such a method needs a film's final
    #: latent, so a pair is re-sampled by it as an edit of the factual film
    proposes: bool = False

    def require(self, generator: Generator, vectors: SteeringVectors | None) -> None:
        if Need.STEERING_VECTORS in self.needs and vectors is None:
            raise InputError(f"method {self.name} needs steering vectors (none were given or shipped)")

    def proposal(self, generator: Generator, latents: torch.Tensor, spec: EditSpec) -> torch.Tensor | None:
        """The latent to invert instead of the film's own (None: the film's own)."""
        return None

    def controls(self, generator: Generator, spec: EditSpec, region: EditRegion, prompts: dict[str, str],
                 vectors: SteeringVectors | None) -> Controls:
        raise NotImplementedError

    def edit_latents(self, inputs: EditInputs, spec: EditSpec, generator: Generator,
                     vectors: SteeringVectors | None, progress: bool) -> MethodPass:
        """Invert to ``spec.depth`` (the proposal, if the method makes one; the transfer is
        always against the input), re-sample under the controller, latents outside the
        region held on the trajectory."""
        guidance = generator.guidance_scale  # the inversion's, and the re-sampling's outside the region
        start = spec.steps - max(1, round(spec.depth * spec.steps))
        proposal = self.proposal(generator, inputs.z0, spec)
        z_start = inputs.z0 if proposal is None else proposal
        if spec.inversion is Inversion.DDPM:
            trajectory = edit_friendly_inversion(generator, z_start, inputs.source_text, inputs.uncond, spec.steps,
                                                 guidance, spec.seed, start)
        else:
            trajectory = ddim_inversion(generator, z_start, inputs.source_text, inputs.uncond, spec.steps, guidance)
        controls = self.controls(generator, spec, inputs.region, inputs.prompts, vectors)
        methods = list(controls.methods)
        mask = inputs.region.latent_mask(inputs.latent_hw)[None, None]
        trajectory = refresh_noise_maps(generator, trajectory, mask, spec.renoise or 0.0, spec.seed)
        methods.append(LatentBlend(trajectory, mask))
        with AttentionController(generator, methods, steps=spec.steps, first_step=start,
                                 latent_hw=inputs.latent_hw) as controller:
            result = sample(generator, [controls.prompt], seed=spec.seed, steps=spec.steps,
                            guidance_scale=region_guidance(mask, spec, guidance),
                            negative_prompt=controls.negative, latents=trajectory.latents[start], start_step=start,
                            noise_maps=trajectory.noise_maps, observer=controller, progress=progress, decode=False)
        energy = [m for m in methods if isinstance(m, ConcentrationEnergy)]
        return MethodPass(result.latents, {
            "start_step": start, "region_guidance": spec.guidance or guidance, "edit_prompt": controls.prompt,
            "negative_prompt": controls.negative, "methods": [type(m).__name__ for m in methods],
            "timesteps": result.settings["timesteps"],
            "energy": [[s, round(e, 4)] for s, e in energy[0].history] if energy else None})


def regulation(generator: Generator, spec: EditSpec, region: EditRegion, prompts: dict[str, str]) -> Controls:
    """Anatomy regulation and pathology enhancement under the target prompt. An addition
    enhances the finding's tokens of the target prompt (and, with ``spec.energy``, adds the
    concentration energy); a removal puts the finding in the negative prompt and makes its
    tokens attend to the region they must leave."""
    constants = spec.constants
    scale = push_scale(spec)
    gamma, gamma_out = constants.enhancement_gamma * scale, constants.enhancement_gamma_out * scale
    edit_prompt = prompts["target"]
    negative = "" if spec.action is Action.ADD else prompts["finding"]
    text = generator.encode_text([edit_prompt])
    methods: list[ControlMethod] = [AnatomyRegulation(region, text, beta_self=constants.regulation_beta_self)]
    if spec.action is Action.ADD:
        tokens = pathology_tokens(text, spec.finding)
        methods.append(PathologyEnhancement(region, tokens, gamma=gamma, gamma_out=gamma_out))
        if spec.energy:
            methods.append(ConcentrationEnergy(generator, text, region=region, tokens=tokens,
                                               step_size=constants.energy_step))
    else:
        tokens = pathology_tokens(generator.encode_text([negative]), spec.finding)
        methods.append(PathologyEnhancement(region, tokens, gamma=gamma, gamma_out=gamma_out, branches=(UNCOND,)))
    return Controls(methods, edit_prompt, negative)


def steering(method: str, spec: EditSpec, region: EditRegion, vectors: SteeringVectors | None) -> Steering:
    """The finding's steering vectors, pushed inside the region (``method`` names the
    method in the error when there are none)."""
    if vectors is None:
        raise InputError(f"method {method} needs steering vectors (none were given or shipped)")
    return Steering(vectors.for_finding(spec.finding), vectors.timesteps, spec.action,
                    alpha=spec.constants.steering_alpha * push_scale(spec), region=region)


class Regulated(GuidedMethod):
    name = "regulated"

    def controls(self, generator, spec, region, prompts, vectors) -> Controls:
        return regulation(generator, spec, region, prompts)


class Steer(GuidedMethod):
    name = "steer"
    needs = frozenset({Need.STEERING_VECTORS})

    def controls(self, generator, spec, region, prompts, vectors) -> Controls:
        return Controls([steering(self.name, spec, region, vectors)], prompts["source"], "")


class RegulatedSteer(GuidedMethod):
    name = "regulated+steer"
    needs = frozenset({Need.STEERING_VECTORS})

    def controls(self, generator, spec, region, prompts, vectors) -> Controls:
        regulated = regulation(generator, spec, region, prompts)
        return Controls([*regulated.methods, steering(self.name, spec, region, vectors)], regulated.prompt,
                        regulated.negative)


for _method in (Regulated(), Steer(), RegulatedSteer()):
    register(_method)
