"""The baselines of the counterfactual benchmark (docs/methods.md §6), run through the same
engine as MedCF's methods (one sampler, one attention controller, the same prompts,
encoding, guard and native-resolution transfer) so that only the method differs.

Each runs in two forms from one sampling run. As published, none of them knows the edit
region: the change is transferred onto the whole image, as a user of these methods would
get it. The ``+mask`` form (:data:`MASKED_BASELINES`) transfers the same change into
MedCF's edit region exactly as MedCF's own methods are transferred (same region, same
feathering, same native-resolution difference transfer): it separates what the attention
methods add from what the compositing alone gives (RadEdit, the closest published CXR
editor, masks too). Names and settings (:data:`BASELINE_SETTINGS`) are recorded with
every result. Each form is an edit method registered under its name
(:mod:`medcf.editing.methods.base`), so the editor core runs it as it runs MedCF's own.

- ``reprompt``: DDIM-invert the film to its initial noise (the film's "seed") under the
  factual prompt, sample again from it with the counterfactual prompt.
- ``sdedit``: noise the latent to strength ``s`` (seeded) and denoise with the
  counterfactual prompt (Meng et al., 2022).
- ``ddim+p2p``: DDIM inversion; a reconstruction pass records attention; the edit pass
  injects the source's cross-attention for the tokens both prompts share and its
  self-attention maps early (Hertz et al., Prompt-to-Prompt, 2023).
- ``pnp``: DDIM inversion; the edit pass injects the source pass's self-attention maps and
  self-attention layer outputs in the decoder's finest attention level early
  (after Tumanyan et al., Plug-and-Play, 2023: they inject residual-block features; the
  attention controller injects the attention layers' outputs, its closest seam).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks
from medcf.editing.baseline_names import (BASELINE_SETTINGS, BASELINES, MASK_SUFFIX,  # noqa: F401
                                          MASKED_BASELINES, unmasked_name)
from medcf.editing.control import AttentionCall, AttentionController, ControlMethod
from medcf.editing.film import Counterfactual, EditInputs, finish, prepare
from medcf.editing.inversion import ddim_inversion
from medcf.editing.methods.base import MethodPass, Need, register
from medcf.editing.spec import GENERIC_DEPTH, EditSpec
from medcf.editing.steering import SteeringVectors
from medcf.errors import InputError
from medcf.models.base import CROSS, SELF, Generator
from medcf.models.sampling import sample
from medcf.vocab import ViewPosition

@dataclass
class AttentionStore(ControlMethod):
    """Records attention probabilities (and, with ``outputs``, layer outputs) of chosen sites
    during one pass; in ``inject`` mode hands them back to the same (site, step) of a
    second pass within ``window``."""

    kinds: tuple[str, ...]
    window: tuple[float, float] = (0.0, 1.0)
    outputs: set[str] = field(default_factory=set)  # site names whose layer outputs are stored too
    output_window: tuple[float, float] = (0.0, 1.0)
    shared_tokens: list[int] | None = None  # cross-attention: inject only these key columns
    inject: bool = False
    needs_maps: bool = True
    maps: dict = field(default_factory=dict, repr=False)
    hidden: dict = field(default_factory=dict, repr=False)

    def maps_wanted(self, call: AttentionCall) -> bool:
        return call.site.kind in self.kinds and (not self.inject or call.within(self.window))

    def observe(self, call, probabilities):
        key = (call.site.name, call.step)
        if not self.inject:
            self.maps[key] = probabilities.detach().clone()
            return None
        source = self.maps.get(key)
        if source is None or source.shape != probabilities.shape:
            return None
        if call.site.kind == SELF or self.shared_tokens is None:
            return source
        mixed = probabilities.clone()
        mixed[..., self.shared_tokens] = source[..., self.shared_tokens]
        return mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def steer(self, call, hidden):
        if call.site.name not in self.outputs:
            return hidden
        key = (call.site.name, call.step)
        if not self.inject:
            self.hidden[key] = hidden.detach().clone()
            return hidden
        if call.within(self.output_window) and key in self.hidden:
            return self.hidden[key]
        return hidden


def shared_token_positions(generator: Generator, source: str, target: str) -> list[int]:
    """Key positions where both prompts have the same token (the shared view sentence,
    padding): the cross-attention Prompt-to-Prompt may carry over."""
    a, b = generator.encode_text([source]).tokens[0], generator.encode_text([target]).tokens[0]
    return [i for i, (x, y) in enumerate(zip(a, b)) if x == y]


def _finest_decoder_self_sites(generator: Generator, latent_hw: tuple[int, int]) -> set[str]:
    sites = [s for s in generator.attention_sites() if s.kind == SELF]
    if not sites:
        return set()
    finest = max(s.grid_for(latent_hw)[0] * s.grid_for(latent_hw)[1] for s in sites)
    chosen = [s for s in sites if s.grid_for(latent_hw)[0] * s.grid_for(latent_hw)[1] == finest]
    decoder = [s for s in chosen if s.name.startswith("up")] or chosen[-1:]
    return {s.name for s in decoder}


def baseline_edit(name: str, display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
                  view: ViewPosition = ViewPosition.PA, progress: bool = False) -> Counterfactual:
    """Run baseline ``name`` (``+mask``: composited into MedCF's region) on ``display`` for the
    change ``spec`` asks (its method is ignored)."""
    return baseline_edits(unmasked_name(name), display, masks, spec, generator, view, progress,
                          forms=(name,))[name]


def baseline_edits(name: str, display: np.ndarray, masks: AnatomyMasks, spec: EditSpec, generator: Generator,
                   view: ViewPosition = ViewPosition.PA, progress: bool = False,
                   forms: tuple[str, ...] | None = None) -> dict[str, Counterfactual]:
    """Baseline ``name`` sampled once and finished in each of ``forms`` (default: the
    whole-film form and the ``+mask`` form), keyed by form name."""
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
    forms = forms or (name, name + MASK_SUFFIX)
    wrong = [form for form in forms if unmasked_name(form) != name]
    if wrong:
        raise InputError(f"{', '.join(wrong)} is not a form of baseline {name}")
    inputs = prepare(display, masks, spec, generator, view)
    latents = _baseline_latents(name, inputs, spec, generator, progress)
    return {form: finish(inputs, spec, generator, latents, *_form(form, inputs)) for form in forms}


def _form(form: str, inputs: EditInputs) -> tuple[dict, np.ndarray | None]:
    """What a form records and its transfer weight: the region's (``+mask``) or 1 everywhere."""
    masked = form.endswith(MASK_SUFFIX)
    name = unmasked_name(form)
    settings = {"baseline": name, **BASELINE_SETTINGS[name], "region": masked}
    return settings, None if masked else np.ones(inputs.display.shape, np.float32)


@dataclass(frozen=True)
class Baseline:
    """One form of a baseline as an edit method (:class:`medcf.editing.methods.base.EditMethod`):
    its own sampling, no region in it; the form decides the transfer."""

    name: str
    default_depth: float = GENERIC_DEPTH  # unused by the baselines' own settings, stated for the protocol
    needs: frozenset[Need] = frozenset()
    uses_model: bool = True

    def require(self, generator: Generator, vectors: SteeringVectors | None) -> None:
        return None

    def edit_latents(self, inputs: EditInputs, spec: EditSpec, generator: Generator,
                     vectors: SteeringVectors | None, progress: bool) -> MethodPass:
        latents = _baseline_latents(unmasked_name(self.name), inputs, spec, generator, progress)
        settings, weight = _form(self.name, inputs)
        return MethodPass(latents, settings, weight)


def _baseline_latents(name: str, inputs: EditInputs, spec: EditSpec, generator: Generator,
                      progress: bool) -> torch.Tensor:
    """The edited latent of baseline ``name`` (no region anywhere in the sampling)."""
    settings = BASELINE_SETTINGS[name]
    steps = settings["steps"]
    target = inputs.prompts["target"]
    common = dict(steps=steps, seed=spec.seed, progress=progress, decode=False)
    if name == "sdedit":
        scheduler = generator.make_scheduler("ddim")
        scheduler.set_timesteps(steps)
        start = steps - max(1, round(settings["strength"] * steps))
        noise = torch.randn(inputs.z0.shape, generator=torch.Generator().manual_seed(spec.seed)).to(inputs.z0)
        noised = scheduler.add_noise(inputs.z0, noise, scheduler.timesteps[start:start + 1])
        return sample(generator, [target], latents=noised, start_step=start, **common).latents
    path = ddim_inversion(generator, inputs.z0, inputs.source_text, inputs.uncond, steps, generator.guidance_scale)
    if name == "reprompt":
        return sample(generator, [target], latents=path.latents[0], **common).latents
    if name == "ddim+p2p":
        store = AttentionStore((CROSS, SELF))
        windows = {CROSS: (0.0, settings["cross_replace"]), SELF: (0.0, settings["self_replace"])}
    else:  # pnp
        store = AttentionStore((SELF,), window=(0.0, settings["self_attention"]),
                               outputs=_finest_decoder_self_sites(generator, inputs.latent_hw),
                               output_window=(0.0, settings["features"]))
        windows = None
    with AttentionController(generator, [store], steps=steps, latent_hw=inputs.latent_hw) as controller:
        sample(generator, [inputs.prompts["source"]], latents=path.latents[0], observer=controller, **common)
    store.inject = True
    methods: list[ControlMethod] = [store]
    if windows is not None:  # Prompt-to-Prompt: cross and self maps on their own windows
        store.kinds, store.window = (CROSS,), windows[CROSS]
        store.shared_tokens = shared_token_positions(generator, inputs.prompts["source"], target)
        self_store = AttentionStore((SELF,), window=windows[SELF], inject=True, maps=store.maps)
        methods.append(self_store)
    with AttentionController(generator, methods, steps=steps, latent_hw=inputs.latent_hw) as controller:
        return sample(generator, [target], latents=path.latents[0], observer=controller, **common).latents


for _name in (*BASELINES, *MASKED_BASELINES):
    register(Baseline(_name))
