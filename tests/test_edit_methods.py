"""Edit methods as registered plugins, the plan settled before an edit, and the typed
record behind edit.json (medcf.editing.methods, .plan, .record)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.editing.edit import edit_pass
from medcf.editing.film import prepare
from medcf.editing.methods import (EditMethod, FilmEditMethod, MethodPass, get_method, method_names, register,
                                  unregister)
from medcf.editing.methods.baselines import BASELINES, MASKED_BASELINES
from medcf.editing.plan import GENERIC_METHOD, PLANNED, EditPlan, Source, generic_depth, plan_edit
from medcf.editing.spec import GENERIC_DEPTH, EditSpec, Method
from medcf.errors import InputError
from medcf.models.loaders import load_generator
from medcf.vocab import Action, Finding, Side
from tests import model_fixtures
from tests.test_editing import phantom_masks

ROOT = Path(__file__).resolve().parents[1]


def test_every_method_and_baseline_is_registered_under_its_name():
    assert set(method_names()) == {m.value for m in Method if m is not Method.AUTO} | set(BASELINES) \
        | set(MASKED_BASELINES)
    assert all(isinstance(get_method(name), (EditMethod, FilmEditMethod)) and get_method(name).name == name
               for name in method_names())
    assert get_method(Method.CAUSAL).default_depth == 0.3 and generic_depth("steer") == GENERIC_DEPTH
    with pytest.raises(InputError, match="unknown edit method 'inpaint'; known: regulated, steer"):
        get_method("inpaint")
    with pytest.raises(ValueError, match="registered already"):
        register(get_method("steer"))


def test_the_editor_core_names_no_method():
    """What differs between methods lives in the method objects: the core modules never
    mention a method by its enum member or its name."""
    names = {m.name for m in Method} - {"AUTO"}
    for module in ("edit.py", "film.py", "pairs.py", "api.py", "record.py", "outputs.py"):
        tree = ast.parse((ROOT / "medcf" / "editing" / module).read_text(encoding="utf-8"))
        named = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id == "Method" and node.attr in names]
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                   and node.value in {m.value for m in Method} - {"auto"}]
        assert not named and not strings, f"{module} names {named or strings}"


def test_a_plan_says_where_each_setting_came_from():
    spec = EditSpec(Finding.NODULE, Action.ADD, Side.LEFT, method="causal", guidance=6.0)
    plan = plan_edit(spec, generator=None)  # an explicit method: no measured choice is looked up
    assert (plan.method, plan.depth, plan.guidance, plan.renoise, plan.denoiser) == (Method.CAUSAL, 0.3, 6.0, 0.0, None)
    assert plan.sources_dict() == {"method": "asked", "depth": "generic", "guidance": "asked", "renoise": "generic",
                                   "denoiser": "generic", "strength": "asked", "passes": "asked"}
    assert list(plan.sources_dict()) == list(PLANNED) and not plan.measured
    assert plan.spec == replace(spec, depth=0.3, renoise=0.0) and plan.request is spec
    with pytest.raises(TypeError):
        plan.sources["depth"] = Source.MEASURED  # frozen, its sources too
    with pytest.raises(ValueError, match="where passes came from"):
        EditPlan(spec, Method.STEER, 0.5, None, 0.0, None, {k: Source.ASKED for k in PLANNED if k != "passes"})
    assert GENERIC_METHOD is Method.STEER


@dataclass(frozen=True)
class Identity:
    """A method that returns the film's own latent: the smallest plugin there is."""

    name: str = "identity-test"
    default_depth: float = 0.5
    needs: frozenset = frozenset()

    def require(self, generator, vectors) -> None:
        return None

    def edit_latents(self, inputs, spec, generator, vectors, progress) -> MethodPass:
        return MethodPass(inputs.z0.clone(), {"identity": True})


def test_a_registered_method_runs_through_the_editor_core(tmp_path):
    generator = load_generator(model_fixtures.make_default_model(tmp_path / "model"))
    torch.set_num_threads(1)
    register(Identity())
    try:
        film = np.clip(np.random.default_rng(3).uniform(0.3, 0.6, (64, 64)), 0, 1).astype(np.float32)
        spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method="regulated", steps=3)
        inputs = prepare(film, phantom_masks(), spec, generator)
        result = edit_pass(inputs, spec, generator, None, method=get_method("identity-test"))
        assert result.settings["identity"] is True and result.image.shape == film.shape
        outside = result.region.native_weight == 0
        assert np.array_equal(result.image[outside], film[outside])  # the core's transfer, whatever the method
    finally:
        unregister("identity-test")


def _leaves(value, path=()):
    """Every (path, leaf) of a JSON-like value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def test_the_record_states_each_value_once():
    """edit.json: the spec in full under extra.spec, its DICOM short form at the top level,
    and nothing of either again (the check, the plan and the model say only what is theirs)."""
    from medcf.editing.edit import TargetCheck
    from medcf.editing.evidence import EvidenceScore
    from medcf.editing.film import Counterfactual
    from medcf.editing.plan import DenoiserFacts
    from medcf.editing.record import EditRecord, InputFacts, ModelInfo

    request = EditSpec(Finding.NODULE, Action.ADD, Side.LEFT, strength=1.7, seed=41)
    plan = plan_edit(replace(request, method="regulated"), generator=None)
    film = np.zeros((8, 8), np.float32)
    check = TargetCheck(Action.ADD, EvidenceScore(-0.1, 0.01), EvidenceScore(0.2, 0.01), True, 1, 1.7, 0.5)
    counterfactual = Counterfactual(film, film, plan.spec, None, {"source": "a", "target": "b", "finding": "b"}, {},
                                    {"start_step": 12, "edit_prompt": "b"}, 1.25, check, plan,
                                    DenoiserFacts("grounded", "/m/denoisers/grounded", "f" * 64))
    placement = {"device": "cpu", "dtype": "float32", "autoencoder_dtype": "float32"}
    model = ModelInfo("medcf-default", "/m", "1.0", "a" * 64, "/m/v.safetensors", "b" * 64, placement)
    record = EditRecord.of(counterfactual, model, _Image(), command="medcf edit", anatomy={"source": "segmenter"},
                           context={"batch": {"key": "k"}})
    data = record.provenance().to_dict()
    extra = data["extra"]
    assert (data["strength"], data["seed"], data["method"]) == (1.7, 41, "regulated")  # the short form
    assert (extra["spec"]["strength"], extra["spec"]["seed"]) == (1.7, 41)  # the spec, in full
    assert extra["settings"]["check"]["target_reached"] is True and extra["batch"] == {"key": "k"}
    assert extra["plan"]["sources"]["method"] == "asked" and extra["plan"]["denoiser"]["name"] == "grounded"
    # no value of the spec is repeated anywhere else under extra, nor is the placement
    elsewhere = [(path, leaf) for path, leaf in _leaves({k: v for k, v in extra.items() if k != "spec"})]
    spec_keys = ("strength", "depth", "seed", "renoise", "inversion", "placement")
    repeated = [p for p, _ in elsewhere if p[-1] in spec_keys and p != ("placement",) and p[:2] != ("plan", "sources")]
    assert not repeated
    assert extra["placement"] == placement and extra["model"] == model.details()


@dataclass
class _Image:
    """What InputFacts reads of an input film."""

    path: str = "/in/film.dcm"
    shape: tuple = (8, 8)

    @property
    def format(self):
        from medcf.io.inputs import InputFormat

        return InputFormat.DICOM
