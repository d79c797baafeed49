"""One options schema: EditSpec's field metadata states every edit option once, and the command
lines, the bundle's configs/edit.json, the Slicer panel and the MONAI Label app agree with it."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from medcf.cli import build_parser, main
from medcf.editing.config import SETTING_KEYS
from medcf.editing.options import (EditCommand, chosen_settings, namespaced_values, offered, schema_document,
                                   schema_json)
from medcf.editing.schema import Kind, Scope
from medcf.editing.spec import EDIT_OPTIONS, GENERIC_DEPTH, OPTIONS, EditConstants, EditSpec, Method
from medcf.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SLICER_MODULE = ROOT / "MedCFExtension" / "MedCF"
SLICER_COPY = SLICER_MODULE / "Resources" / "edit_options.json"
MONAILABEL_COPY = ROOT / "monailabel_app" / "lib" / "edit_options.json"
REGENERATE = "regenerate it with: python -m medcf options --json > {}"


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings}


def _load(path: Path, name: str):
    """A module of a shell (Slicer, MONAI Label) by path: it does not import medcf, nor its package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the schema itself --------------------------------------------------------------------------


def test_every_edit_spec_field_but_the_constants_is_an_option_of_the_schema():
    fields = [f for f in EditSpec.__dataclass_fields__ if f != "constants"]
    assert [o.name for o in EDIT_OPTIONS] == fields
    assert SETTING_KEYS == tuple(o.name for o in EDIT_OPTIONS if o.spec.scope is Scope.SETTING)
    kinds = {o.name: o.kind for o in EDIT_OPTIONS}
    assert (kinds["method"], kinds["strength"], kinds["steps"], kinds["energy"]) == (
        Kind.CHOICE, Kind.FLOAT, Kind.INT, Kind.FLAG)
    assert OPTIONS["method"].choices is Method and OPTIONS["depth"].optional and not OPTIONS["steps"].optional


@pytest.mark.parametrize("option", [o for o in EDIT_OPTIONS if o.spec.range is not None], ids=lambda o: o.name)
def test_each_range_is_checked_in_one_place_whichever_door_a_value_comes_in_by(option, tmp_path, monkeypatch):
    bounds = option.spec.range
    step = 1 if option.kind is Kind.INT else 0.01
    inside = [bounds.high] + ([] if bounds.low_open else [bounds.low])
    outside = [bounds.high + step, bounds.low - step] + ([bounds.low] if bounds.low_open else [])
    for value in inside:
        assert getattr(EditSpec("nodule", "add", "left", **{option.name: value}), option.name) == value
    for value in outside:
        with pytest.raises(InputError, match="^" + re.escape(f"{option.flag} {value:g} is outside {bounds.describe()}")):
            EditSpec("nodule", "add", "left", **{option.name: value})
    # the command line reaches the same check (argparse itself checks only the type) ...
    parser = build_parser()
    from medcf.commands.edit import _spec

    args = parser.parse_args(["edit", "x.png", "--finding", "nodule", "--action", "add", "--side", "left",
                              "--out", "o", option.flag, str(outside[0])])
    with pytest.raises(InputError, match=f"{option.flag} {outside[0]:g} is outside"):
        _spec(args)
    # ... and so does a plan's cell or a bundle config's value, with the same message
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    config = json.loads((ROOT / "monai_bundle" / "configs" / "edit.json").read_text())
    (bundle / "configs" / "edit.json").write_text(json.dumps({**config, option.name: outside[0]}))
    monkeypatch.setenv("MEDCF_BUNDLE", str(bundle))
    with pytest.raises(InputError, match=f"edit.json: {option.flag} {outside[0]:g} is outside"):
        _spec(parser.parse_args(["edit", "x.png", "--finding", "nodule", "--action", "add", "--side", "left",
                                 "--out", "o"]))


def test_types_are_checked_with_the_ranges():
    with pytest.raises(InputError, match=r"^--steps: 2\.5 is not an integer"):
        EditSpec("nodule", "add", "left", steps=2.5)
    with pytest.raises(InputError, match=r"^--strength: '2' is not a number"):
        EditSpec("nodule", "add", "left", strength="2")
    with pytest.raises(InputError, match=r"^--method: 'fast' is not a valid Method"):
        EditSpec("nodule", "add", "left", method="fast")
    assert OPTIONS["seed"].from_text("7") == 7 and OPTIONS["energy"].from_text("yes") is True
    with pytest.raises(InputError, match="seed 'x' is not an integer"):
        OPTIONS["seed"].from_text("x")


def test_the_depth_left_out_is_what_the_help_says():
    """Two help texts once said depth defaults to 0.5: it is auto's measured choice, and the
    generic depth only for a method named (medcf.editing.plan)."""
    from medcf.editing.plan import generic_depth

    unset = OPTIONS["depth"].spec.unset
    assert "measured" in unset and f"with a method named, {GENERIC_DEPTH:g}" in unset
    assert generic_depth(Method.STEER) == generic_depth(Method.REGULATED) == GENERIC_DEPTH
    assert generic_depth(Method.CAUSAL) < GENERIC_DEPTH  # "causal: its own, shorter re-draw"
    edit_help = _actions(_subparser(build_parser(), "edit"))["--depth"].help
    assert unset in edit_help and "default 0.5" not in edit_help and "else 0.5" not in edit_help


# --- the command lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(EditCommand))
def test_edit_pairs_and_batch_offer_every_option_as_the_schema_states_it(command):
    actions = _actions(_subparser(build_parser(), command.value))
    for option in EDIT_OPTIONS:
        if option not in offered(command):
            assert option.flag not in actions, option.flag
            continue
        action = actions[option.flag]
        assert action.dest == option.name
        assert (action.choices or []) == option.values, option.flag
        if option.kind is Kind.FLAG:
            assert isinstance(action, argparse._StoreTrueAction)
        else:
            assert action.type is {Kind.INT: int, Kind.FLOAT: float, Kind.CHOICE: None}[option.kind]
        # settings: None, filled from the bundle's configs/edit.json; an edit's own options: the schema's default
        expected = None if option.spec.scope is Scope.SETTING or option.required else option.default
        assert action.default == expected, option.flag
        assert option.spec.help in action.help
    assert "--optimize-noise" in actions if command is EditCommand.PAIRS else "--optimize-noise" not in actions


def test_options_left_out_take_the_bundle_config_then_the_schema_default():
    args = build_parser().parse_args(["edit", "x.png", "--finding", "nodule", "--action", "add", "--side", "left",
                                      "--out", "o"])
    chosen = chosen_settings(args)
    assert {k: chosen[k] for k in SETTING_KEYS} == {o.name: o.default for o in EDIT_OPTIONS if o.name in SETTING_KEYS}
    assert chosen["seed"] == OPTIONS["seed"].default and chosen["constants"] == EditConstants()


def test_medcf_options_prints_the_schema(capsys):
    assert main(["options", "--json"]) == 0
    assert capsys.readouterr().out == schema_json()
    assert main(["options"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table] == [o.flag for o in EDIT_OPTIONS]
    assert any(line.startswith("--strength") and "(0, 4]" in line for line in table)


# --- medcf bench: the MedCF overrides come from the schema, and no suite reads another's options --------------


def _bench(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv, "--out", "out"])


def test_bench_overrides_are_the_schemas_settings_under_their_own_dest():
    from medcf.eval.bench import OUR_SETTINGS
    from medcf.eval.cli import OURS_PREFIX

    actions = _actions(_subparser(build_parser(), "bench"))
    for name in OUR_SETTINGS:
        action = actions[OPTIONS[name].flag]
        assert action.dest == f"{OURS_PREFIX}.{name}" and action.default is None
        assert (action.choices or []) == OPTIONS[name].values and OPTIONS[name].spec.help in action.help
    args = _bench("--depth", "0.4", "--renoise", "0.2", "--energy")
    assert namespaced_values(args, OURS_PREFIX) == {"depth": 0.4, "renoise": 0.2, "energy": True}
    assert not hasattr(args, "depth")  # an edit option of the bench is never read as a plain name


def test_a_suite_cannot_read_nor_be_given_another_suites_option():
    from medcf.eval.cli import SuiteOptionError

    args = _bench("--suite", "counterfactual", "--first-seed", "6000000")
    scopes = args.func.keywords["scopes"]
    view = scopes.view(args)
    assert view.first_seed == 6000000 and view.out == Path("out") and view.quiet is False
    with pytest.raises(SuiteOptionError, match="--classifier-first-seed is an option of --suite augmentation"):
        view.classifier_first_seed
    augmentation = scopes.view(_bench("--suite", "augmentation", "--classifier-first-seed", "4"))
    assert augmentation.classifier_first_seed == 4
    with pytest.raises(SuiteOptionError, match="--first-seed is an option of --suite counterfactual"):
        augmentation.first_seed
    with pytest.raises(SuiteOptionError):
        augmentation.namespaced("ours")
    with pytest.raises(InputError, match="--first-seed: not an option of --suite augmentation"):
        scopes.view(_bench("--suite", "augmentation", "--first-seed", "5"))
    with pytest.raises(InputError, match="--size, --depth: not an option of --suite judge"):
        scopes.view(_bench("--suite", "judge", "--size", "64", "--depth", "0.3"))
    # every option but the common ones (suite, out, quiet, the device) belongs to named suites
    common = {"--suite", "--out", "--quiet", "--device", "--dtype", "-h"}
    flags = set(_actions(_subparser(build_parser(), "bench"))) - common
    assert flags == set(scopes.flags.values())


def test_each_suite_gets_its_own_options(monkeypatch, tmp_path):
    """The counterfactual suite's patients come from --first-seed, the augmentation suite's
    classifier seeds from --classifier-first-seed, given together on one command line."""
    import medcf.eval.augment as augment
    import medcf.eval.bench as bench

    calls = {}

    def counterfactual(n, out, **kwargs):
        calls["counterfactual"] = {"n": n, **kwargs}
        return {"rows": [], "out": str(tmp_path)}

    def augmentation(options, placement=None):
        calls["augmentation"] = options
        return {"summary": {}, "out": str(tmp_path)}

    monkeypatch.setattr(bench, "run_counterfactual_suite", counterfactual)
    monkeypatch.setattr(augment, "run_augmentation_suite", augmentation)
    args = _bench("--suite", "counterfactual", "--first-seed", "6000000", "--n", "3", "--depth", "0.4")
    assert args.func(args) == 0
    sent = calls["counterfactual"]
    assert (sent["first_seed"], sent["n"], sent["ours"]) == (6000000, 3, {"depth": 0.4})
    args = _bench("--suite", "augmentation", "--classifier-first-seed", "7", "--n", "5", "--steps", "11")
    assert args.func(args) == 0
    options = calls["augmentation"]
    assert (options.first_seed, options.n, options.steps) == (7, 5, 11)


# --- the shells: the bundle config, the Slicer panel, the MONAI Label app ----------------------------


def test_bundle_edit_config_states_the_schemas_defaults():
    config = json.loads((ROOT / "monai_bundle" / "configs" / "edit.json").read_text())
    example = {"finding", "action", "side"}  # the edit the config runs when its caller names none
    for option in EDIT_OPTIONS:
        if option.name not in example and option.spec.scope is not Scope.PAIRS:
            assert config[option.name] == option.to_json()["default"], option.name
    assert config["constants"] == EditConstants().__dict__
    # the spec it builds passes every option of an edit (not the pairs-only ones) and the constants
    spec = {k: v for k, v in config["spec"].items() if k != "_target_"}
    names = [o.name for o in EDIT_OPTIONS if o.spec.scope is not Scope.PAIRS]
    assert spec == {name: f"@{name}" for name in [*names, "constants"]}
    assert config["spec"]["_target_"] == f"{EditSpec.__module__}.EditSpec"


@pytest.mark.parametrize("copy", [SLICER_COPY, MONAILABEL_COPY], ids=["slicer", "monailabel"])
def test_committed_copies_of_the_schema_equal_it(copy):
    assert copy.read_text(encoding="utf-8") == schema_json(), REGENERATE.format(copy.relative_to(ROOT))
    assert json.loads(copy.read_text())["options"] == schema_document()["options"]


def test_slicer_panel_choices_and_start_come_from_the_schema():
    logic = _load(SLICER_MODULE / "MedCFLib" / "logic.py", "medcf_slicer_logic")
    assert logic.EDIT_OPTIONS_FILE == SLICER_COPY
    for name, items in logic.EDIT_CHOICES.items():
        option = OPTIONS[name]
        assert [i for i in items if i != logic.NOT_GIVEN] == option.values, name
        assert (logic.NOT_GIVEN in items) == (option.default is None and not option.required), name
        start = logic.EDIT_START[name]
        expected = option.to_json().get("default")
        assert start in items and (expected is None or start == expected), name
    assert logic.EDIT_START["zone"] == logic.NOT_GIVEN  # where the finding starts
    assert logic.EDIT_START["side"] == "left"  # most findings need a side: the panel starts on one
    # every combo is in the .ui; the strength spin box offers a part of the schema's range, started by the module
    ui = ET.parse(SLICER_MODULE / "Resources" / "UI" / "MedCF.ui").getroot()
    widgets = {w.get("name"): w for w in ui.iter("widget")}
    assert {f"{name}ComboBox" for name in logic.PANEL_COMBOS} <= set(widgets)
    spin = {p.get("name"): float(p[0].text) for p in widgets["strengthSpinBox"].findall("property")
            if p.get("name") in ("minimum", "maximum", "value")}
    assert "value" not in spin  # the module sets it from the schema, stated there once
    assert spin["minimum"] in OPTIONS["strength"].spec.range and spin["maximum"] in OPTIONS["strength"].spec.range
    module = (SLICER_MODULE / "MedCF.py").read_text()
    assert 'EDIT_OPTIONS["strength"]["default"]' in module and 'setCurrentText(EDIT_START[name])' in module


def test_monailabel_params_are_options_of_the_schema_with_its_defaults():
    options = _load(ROOT / "monailabel_app" / "lib" / "options.py", "medcf_monailabel_options")
    assert options.EDIT_OPTIONS_FILE == MONAILABEL_COPY
    params = options.served_params()
    assert set(params) <= set(OPTIONS)
    for name, default in params.items():
        option = OPTIONS[name]
        # an edit's own option carries the schema's default; a setting is left to medcf edit (the bundle config)
        assert default == (option.to_json().get("default") if option.spec.scope is Scope.EDIT else None), name
    infer = (ROOT / "monailabel_app" / "lib" / "infers" / "counterfactual.py").read_text()
    assert "PARAMS = served_params()" in infer
