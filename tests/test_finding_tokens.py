"""Structured finding tokens (medcf.models.findings): what a prompt states becomes one learned
token per finding beside the text tokens; training adds them to a model that had none; the
bundle saves, fingerprints and loads them with the denoiser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.errors import InputError
from medcf.models.findings import NONE_TOKEN, FindingCode, read_codes
from medcf.models.loaders import load_generator
from medcf.models.sampling import sample
from medcf.text.prompts import prompt, prompt_for
from medcf.vocab import Finding, Lobe, Severity, Side, ViewPosition, Zone
from medcf.world.pathology import LesionSpec
from tests import model_fixtures

PA = ViewPosition.PA
EFFUSION_LEFT = "PA chest radiograph. Moderate left pleural effusion."
EFFUSION_RIGHT = "PA chest radiograph. Moderate right pleural effusion."
NORMAL = "PA chest radiograph. Normal chest radiograph."


def test_prompts_are_read_into_the_findings_they_state():
    assert read_codes(EFFUSION_LEFT) == (FindingCode(Finding.PLEURAL_EFFUSION, Side.LEFT, None, Severity.MODERATE),)
    assert read_codes(NORMAL) == () and read_codes("") == () and read_codes("   ") == ()
    # the prompt builder's words for each size of nodule: small = mild, unsized = not stated, mass = severe
    assert read_codes(prompt(PA, Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.SEVERE)) == (
        FindingCode(Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.SEVERE),)
    assert read_codes(prompt(PA, Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.MILD))[0].severity is Severity.MILD
    assert read_codes(prompt(PA, Finding.NODULE, Side.LEFT, Zone.LOWER, Severity.MODERATE))[0].severity is None
    lobe = read_codes(prompt(PA, Finding.CONSOLIDATION, severity=Severity.MILD, lobe=Lobe.LEFT_LOWER))
    assert lobe == (FindingCode(Finding.CONSOLIDATION, Side.LEFT, Zone.LOWER, Severity.MILD),)
    three = prompt_for(PA, [LesionSpec(Finding.EDEMA, Side.BILATERAL, None, Severity.SEVERE, 0),
                            LesionSpec(Finding.CARDIOMEGALY, None, None, Severity.MILD, 0),
                            LesionSpec(Finding.PNEUMOTHORAX, Side.RIGHT, Zone.UPPER, Severity.MODERATE, 0)])
    assert [c.finding for c in read_codes(three)] == [Finding.EDEMA, Finding.CARDIOMEGALY, Finding.PNEUMOTHORAX]
    assert read_codes("PA chest radiograph. No pleural effusion. Possible right pneumothorax.") == ()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tokens")
    return {"plain": model_fixtures.make_default_model(root / "plain"),
            "tokens": model_fixtures.make_default_model_with_finding_tokens(root / "tokens")}


def test_the_text_tokens_are_the_plain_models_and_one_token_per_finding_follows(folders):
    plain, tokens = load_generator(folders["plain"]), load_generator(folders["tokens"])
    a, b = plain.encode_text([EFFUSION_LEFT, ""]), tokens.encode_text([EFFUSION_LEFT, ""])
    length = a.embeddings.shape[1]
    assert b.embeddings.shape == (2, length + 3, a.embeddings.shape[2])
    assert torch.equal(b.embeddings[:, :length], a.embeddings) and b.tokens[0][:length] == a.tokens[0]
    assert b.tokens[0][length:] == ["<finding:pleural_effusion,left,-,moderate>", NONE_TOKEN, NONE_TOKEN]
    assert b.tokens[1][length:] == [NONE_TOKEN] * 3
    # the side alone changes the finding's token, and nothing else
    right = tokens.encode_text([EFFUSION_RIGHT])
    assert torch.equal(right.embeddings[0, length + 1:], b.embeddings[0, length + 1:])
    assert not torch.allclose(right.embeddings[0, length], b.embeddings[0, length])
    # the editor's word lookups still find the prompt's words, never a structured token
    assert b.token_indices("effusion") == a.token_indices("effusion") != []
    # the tokens are part of the denoiser: its fingerprint covers them
    before = tokens.weights_fingerprint()
    with torch.no_grad():
        tokens.unet.finding_tokens.side.weight[1] += 1.0
    assert tokens.weights_fingerprint() != before
    assert sample(tokens, [EFFUSION_LEFT], steps=2, progress=False).images.shape == (1, 64, 64)
    assert tokens.describe()["finding_tokens"] == 3 and plain.describe()["finding_tokens"] is None


def test_a_denoiser_file_without_the_tokens_does_not_load_as_a_model_with_them(folders, tmp_path):
    import shutil

    from medcf.models.default import CONFIG_NAME

    broken = tmp_path / "broken"
    shutil.copytree(folders["plain"], broken)
    config = json.loads((broken / CONFIG_NAME).read_text())
    config["finding_tokens"] = {"slots": 3}
    (broken / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"missing key\(s\) \(e\.g\. \['finding_tokens\."):
        load_generator(broken)


def _paired_set(path: Path, size: int = 64) -> Path:
    """Left and right effusion-like films with their normal counterparts (pairs)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, records = [], []
    for i in range(6):
        base = 0.3 + 0.1 * rng.random() * yy
        side = "left" if i % 2 else "right"
        cx = 0.75 if side == "left" else 0.25  # patient left is image right
        blob = 0.4 * np.exp(-((xx - cx) ** 2 + (yy - 0.8) ** 2) / 0.02)
        text = EFFUSION_LEFT if side == "left" else EFFUSION_RIGHT
        for kind, image, caption in (("factual", base + blob, text), ("counterfactual", base, NORMAL)):
            images.append(np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
            records.append({"seed": 10 + i, "kind": kind, "prompt": caption})
    return model_fixtures.write_world_set(path, images, records)


def test_fine_tuning_adds_finding_tokens_to_a_model_without_them(folders, tmp_path):
    from safetensors.torch import load_file

    from medcf.models.default import CONFIG_NAME, UNET_FILE
    from medcf.models.findings import FindingTokens
    from medcf.models.text import minilm_encoder
    from medcf.training.export import export_default_model
    from medcf.training.generator import GeneratorOptions, train_generator

    data = _paired_set(tmp_path / "pairs.npz")
    # the denoiser frozen (lr ~0), the new tokens learning (scaled up): the tokens alone move
    train_generator(GeneratorOptions(out=str(tmp_path / "tune"), init=str(folders["plain"]), data=str(data), batch=4,
                                     steps=3, paired=True, finding_tokens=True, lr=1e-12, token_lr_scale=1e10,
                                     warmup=1, ema_decay=0.0, progress=False))
    recipe = json.loads((tmp_path / "tune" / "run.json").read_text())
    assert recipe["finding_tokens"]["slots"] == 3
    out = tmp_path / "model"
    export_default_model(folders["plain"], tmp_path / "tune", out, half=False)
    assert json.loads((out / CONFIG_NAME).read_text())["finding_tokens"]["slots"] == 3
    before, after = load_file(str(folders["plain"] / UNET_FILE)), load_file(str(out / UNET_FILE))
    assert max(float((before[k].float() - after[k]).abs().max()) for k in before) < 1e-3  # fp16 file vs fp32
    new = {k: v for k, v in after.items() if k.startswith("finding_tokens.")}
    assert set(new) == {f"finding_tokens.{t}.weight" for t in ("finding", "side", "zone", "severity")}
    # the side rows started at zero and learned: left and right (rows 1, 2) moved, "bilateral" (3) never seen
    side = new["finding_tokens.side.weight"]
    assert side[1].abs().max() > 0 and side[2].abs().max() > 0 and side[3].abs().max() == 0
    # the rows of findings the set never states kept their start: the text encoder's state of their name
    reference = FindingTokens(side.shape[1])
    reference.initialise_from_words(minilm_encoder(32))
    unseen = 1 + list(Finding).index(Finding.NODULE)
    assert torch.allclose(new["finding_tokens.finding.weight"][unseen], reference.finding.weight[unseen], rtol=1e-3, atol=1e-5)
    generator = load_generator(out)
    assert generator.encode_text([EFFUSION_LEFT]).embeddings.shape[1] == 35
    assert sample(generator, [EFFUSION_LEFT], steps=2, progress=False).images.shape == (1, 64, 64)


def test_the_editor_steers_the_finding_token_with_the_finding_words(folders):
    from medcf.editing.edit import edit
    from medcf.editing.regulation import pathology_tokens, word_tokens
    from medcf.editing.spec import EditSpec, Method
    from medcf.vocab import Action
    from tests.test_editing import phantom_masks

    generator = load_generator(folders["tokens"])
    text = generator.encode_text([EFFUSION_LEFT])
    words = word_tokens(text, ["effusion", "pleural"])
    assert pathology_tokens(text, Finding.PLEURAL_EFFUSION) == words + [text.embeddings.shape[1] - 3]
    assert pathology_tokens(text, Finding.NODULE) == []
    shape = (80, 72)
    image = np.clip(0.5 + 0.1 * np.random.default_rng(0).standard_normal(shape), 0, 1).astype(np.float32)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method=Method.REGULATED, steps=4, strength=3.0)
    result = edit(image, phantom_masks(shape), spec, generator, None, progress=False)
    outside = ~result.region.native_region
    assert np.array_equal(result.image[outside], image[outside])
    assert np.abs(result.image - image)[result.region.native_region].max() > 1e-4
