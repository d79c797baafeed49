"""The film's attenuation domain (medcf.insertion.film_domain): the mapping from line integral
to display value is recovered from a film made with a known one, and a channel composed in
that domain reproduces the film the physics would have made.

Synthetic films are made forward with the textbook formulas: modality value ``x = a + b L``
from a known line-integral map ``L`` (water mm), then a stated VOI (linear window or DICOM
sigmoid) and polarity. A world render checks the same against the simulated physics
(scatter, detector blur, a workstation's tone curve), which the mapping was not told.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from scipy import ndimage

from medcf.anatomy.masks import AnatomyMasks
from medcf.errors import InputError
from medcf.insertion.film_domain import AttenuationMapping, VoiInverse, compose, estimate_mapping, tone_forward, \
    tone_inverse
from medcf.insertion.placed import PlacedLesion
from medcf.io.display import DisplayTransform, to_display
from medcf.vocab import Organ

SHAPE = (160, 160)
A, B = 500.0, 10.0  # modality value = A + B * L (L in water mm)
LUNG_CENTRES = ((70, 45), (70, 115))


def ellipse(centre: tuple[int, int], radii: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def chest(texture_mm: float = 4.0, seed: int = 0) -> tuple[np.ndarray, AnatomyMasks]:
    """A line-integral map (water mm) and its masks: soft tissue 240 mm, lungs 140-155 mm with
    lung markings, the heart 215 mm over the medial lower lungs."""
    right, left = ellipse(LUNG_CENTRES[0], (45, 25)), ellipse(LUNG_CENTRES[1], (45, 25))
    heart = ellipse((100, 88), (22, 30))
    rows = np.mgrid[:SHAPE[0], :SHAPE[1]][0].astype(np.float64)
    markings = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(SHAPE), 1.5)
    markings *= texture_mm / markings.std()
    line = np.full(SHAPE, 240.0)
    lungs = right | left
    line[lungs] = (140.0 + 15.0 * (rows - 25.0) / 90.0 + markings)[lungs]
    line[heart] = 215.0
    masks = AnatomyMasks({Organ.LUNG_RIGHT: right, Organ.LUNG_LEFT: left, Organ.HEART: heart}, "synthetic")
    return line, masks


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.clip((x - (center - width / 2.0)) / width, 0.0, 1.0)


def sigmoid_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))


WINDOWS = {
    "linear-exact": (linear_window, 2350.0, 1400.0, "LINEAR_EXACT"),
    "linear-clipping": (linear_window, 2400.0, 900.0, "LINEAR_EXACT"),
    "sigmoid": (sigmoid_window, 2400.0, 1500.0, "SIGMOID"),
}


def film(name: str, line: np.ndarray, noise_x: float = 0.0, seed: int = 1) -> tuple[np.ndarray, DisplayTransform]:
    window, center, width, function = WINDOWS[name]
    x = A + B * line + noise_x * np.random.default_rng(seed).standard_normal(SHAPE)
    transform = DisplayTransform(f"Window Center/Width {center:g}/{width:g} ({function})", False)
    return window(x, center, width).astype(np.float32), transform


def blob(centre: tuple[int, int], sigma: float, peak: float) -> np.ndarray:
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return peak * np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * sigma * sigma))


# --- the mapping -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_fit_recovers_the_films_mapping_through_its_window(name):
    line, masks = chest()
    display, transform = film(name, line, noise_x=5.0)
    mapping = estimate_mapping(display, masks, line, transform, pixel_mm=1.0)
    assert mapping.inverse is (VoiInverse.SIGMOID if name == "sigmoid" else VoiInverse.LINEAR)
    assert mapping.slope == pytest.approx(B, rel=0.03)
    assert mapping.intercept == pytest.approx(A, rel=0.03)
    assert mapping.scatter == 0.0  # the film was made without scatter, and the fit keeps the simplest curve
    assert mapping.residual < 0.01 and mapping.r2 > 0.99
    assert {"lung", "heart"} <= set(mapping.anchors)
    if name == "linear-clipping":
        assert mapping.clipped_share > 0 and any("clipped" in note for note in mapping.notes)
    json.dumps(mapping.to_record())


def test_unknown_voi_is_fitted_as_a_tone_curve():
    """A film whose VOI is not stated: the tone family holds the identity and the logistic,
    and composing with the fitted tone gives the sigmoid film's change."""
    line, masks = chest()
    display, _ = film("sigmoid", line)
    mapping = estimate_mapping(display, masks, line, None, pixel_mm=1.0)
    assert mapping.inverse is VoiInverse.ESTIMATED and mapping.tone == 1.0 and mapping.residual < 0.005
    assert np.allclose(tone_forward(tone_inverse(np.linspace(0.01, 0.99, 9), 0.7), 0.7), np.linspace(0.01, 0.99, 9))


def test_monochrome1_film_through_the_dicom_display_pipeline():
    """Stored values fall with density on MONOCHROME1; the reader inverts; the mapping is
    fitted in modality units (negative slope) and the composed film matches the physics."""
    line, masks = chest()
    center, width = 2000.0, 1500.0
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, "SIGMOID"
    a, b = 4000.0, -10.0

    def stored_of(integral: np.ndarray) -> np.ndarray:
        return np.round(a + b * integral).astype(np.uint16)

    display, transform = to_display(ds, stored_of(line))
    assert transform.inverted
    mapping = estimate_mapping(display, masks, line, transform, pixel_mm=1.0)
    assert mapping.slope == pytest.approx(b, rel=0.03) and mapping.intercept == pytest.approx(a, rel=0.03)
    channel = blob(LUNG_CENTRES[0], 6.0, 20.0)
    extent = channel > 0.2
    lesion = PlacedLesion(channel.astype(np.float32), extent, np.zeros(SHAPE, np.float32), line)
    expected, _ = to_display(ds, stored_of(line + channel))
    composed = compose(display, lesion, mapping, seed=0)
    contrast = np.abs(expected - display)[extent].max()
    assert contrast > 0.05
    assert np.abs(composed - expected)[extent].max() < 0.05 * contrast + 2e-3


@pytest.mark.parametrize("name", sorted(WINDOWS))
def test_compose_reproduces_the_film_the_physics_makes(name):
    """display = VOI(a + b L): composing dL gives VOI(a + b (L + dL)), a nodule in the lung
    and a pneumothorax-like loss of density alike."""
    line, masks = chest()
    display, transform = film(name, line)
    mapping = estimate_mapping(display, masks, line, transform, pixel_mm=1.0)
    window, center, width, _ = WINDOWS[name]
    for channel in (blob(LUNG_CENTRES[0], 6.0, 20.0), blob(LUNG_CENTRES[1], 8.0, -12.0)):
        extent = np.abs(channel) > 0.01 * np.abs(channel).max()
        lesion = PlacedLesion(channel.astype(np.float32), extent, np.zeros(SHAPE, np.float32), line)
        composed = compose(display, lesion, mapping, seed=3)
        expected = window(A + B * (line + channel), center, width)
        # Where the window clipped the film its pre-VOI value is lost: only the rest can match.
        seen = extent & (display > 0) & (display < 1)
        assert seen.sum() > 0.5 * extent.sum()
        contrast = np.abs(expected - display)[seen].max()
        assert contrast > 0.05
        assert np.abs(composed - expected)[seen].max() < 0.05 * contrast + 2e-3
        # Adding density brightens; removing it darkens, wherever the window is not clipped.
        assert np.sign(np.mean(composed[extent] - display[extent])) == np.sign(channel.sum())


def test_an_inverted_film_is_refused():
    line, masks = chest()
    display, transform = film("linear-exact", line)
    with pytest.raises(InputError, match="darker where the body is denser"):
        estimate_mapping(1.0 - display, masks, line, transform, pixel_mm=1.0)
    with pytest.raises(InputError, match="darker where the body is denser"):
        estimate_mapping(1.0 - display, masks, line, None, pixel_mm=1.0)


def test_a_degenerate_background_or_anatomy_is_refused():
    line, masks = chest()
    display, transform = film("linear-exact", line)
    with pytest.raises(InputError, match="degenerate"):
        estimate_mapping(display, masks, np.full(SHAPE, 200.0), transform, pixel_mm=1.0)
    empty = AnatomyMasks({organ: np.zeros(SHAPE, bool) for organ in Organ}, "empty")
    with pytest.raises(InputError, match="anchor region"):
        estimate_mapping(display, empty, line, transform, pixel_mm=1.0)
    with pytest.raises(InputError, match="share one shape"):
        estimate_mapping(display[:-1], masks, line, transform)


# --- compose: extent, determinism, texture and noise -----------------------------------


def textured_case(share: float = 0.6):
    line, masks = chest(texture_mm=6.0)
    noise_d = 0.004
    display, transform = film("linear-exact", line, noise_x=noise_d * 1400.0)
    mapping = estimate_mapping(display, masks, line, transform, pixel_mm=1.0)
    region = ellipse(LUNG_CENTRES[0], (18, 14))
    extent = ndimage.binary_dilation(region, iterations=3)
    replaced = np.where(region, share, 0.0).astype(np.float32)
    lesion = PlacedLesion(np.zeros(SHAPE, np.float32), extent, replaced, line)
    return display, mapping, lesion, region, noise_d


def test_output_equals_input_outside_the_extent_and_is_seeded():
    display, mapping, lesion, _, _ = textured_case()
    lesion = PlacedLesion(blob(LUNG_CENTRES[0], 6.0, 40.0).astype(np.float32), lesion.extent, lesion.replaced,
                          lesion.background)
    first = compose(display, lesion, mapping, seed=5)
    assert first.dtype == np.float32 and 0.0 <= first.min() and first.max() <= 1.0
    assert np.array_equal(first[~lesion.extent], display[~lesion.extent])
    assert np.array_equal(first, compose(display, lesion, mapping, seed=5))
    assert not np.array_equal(first[lesion.extent], compose(display, lesion, mapping, seed=6)[lesion.extent])
    nothing = PlacedLesion(lesion.channel, np.zeros(SHAPE, bool), lesion.replaced, lesion.background)
    assert np.array_equal(compose(display, nothing, mapping, seed=5), display)


def test_film_noise_is_measured_on_the_films_flat_regions():
    _, mapping, _, _, noise_d = textured_case()
    span = 1400.0  # modality units per display unit of the stated window
    assert mapping.noise_std / span == pytest.approx(noise_d, rel=0.2)
    assert mapping.noise_sigma_px < 0.5  # white noise: no spatial correlation
    assert mapping.sharpness_px == pytest.approx(0.35, abs=0.15)  # the detector's blur at 1 mm pixels


@pytest.mark.parametrize("share", [0.3, 0.6, 1.0])
def test_replacing_lung_removes_the_films_texture_and_keeps_its_noise(share):
    """High-pass detail at lung-marking scale falls to (1 - share) of the film's (plus the
    noise put back); what was put back is noise at the film's level, so the region's total
    noise equals the film's."""
    display, mapping, lesion, region, noise_d = textured_case(share)
    composed = compose(display, lesion, mapping, seed=2)
    inner = ndimage.binary_erosion(region, iterations=4)

    def high_pass(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float64)
        return image - ndimage.gaussian_filter(image, mapping.texture_sigma_px)

    before, after = high_pass(display)[inner].std(), high_pass(composed)[inner].std()
    assert before > 6 * noise_d  # the markings dominate the film's detail there
    # What stays: (1 - share) of the markings, and the film-level noise put back in their place.
    kept = 1.0 - (1.0 - share) ** 2
    assert after / before == pytest.approx(np.sqrt((1.0 - share) ** 2 + kept * (noise_d / before) ** 2), abs=0.08)
    smooth = ndimage.gaussian_filter(display.astype(np.float64), 2.0 * mapping.texture_sigma_px)
    put_back = composed.astype(np.float64) - (display - share * (display - smooth))
    assert put_back[inner].std() == pytest.approx(np.sqrt(kept) * noise_d, rel=0.25)


def test_record_is_plain_json():
    display, mapping, _, _, _ = textured_case()
    record = mapping.to_record()
    assert json.loads(json.dumps(record))["inverse"] == "linear"
    assert set(record) >= {"slope", "intercept", "residual", "anchors", "notes", "noise_std", "sharpness_px"}
    assert isinstance(mapping, AttenuationMapping)


# --- the world: factual = counterfactual + the projected lesion ------------------------

WORLD_SIZE = 128


@pytest.fixture(scope="module")
def world_pairs():
    from medcf.vocab import Finding, Severity, ViewPosition
    from medcf.world.ct import load_chest_ct
    from medcf.world.pathology import FINDING_SIDES, FINDING_ZONES, LesionSpec
    from medcf.world.physics import basis_weights
    from medcf.world.projector import MM_PER_CM
    from medcf.world.render import World, anatomy_channel, draw_acquisition

    world = World(load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz"))
    acquisition = draw_acquisition(12, ViewPosition.PA, WORLD_SIZE)
    water = basis_weights(acquisition.exposure.energy_kev)[0] / MM_PER_CM  # line integral per water mm
    pairs = {}
    for finding in (Finding.NODULE, Finding.PNEUMOTHORAX, Finding.PLEURAL_EFFUSION, Finding.CONSOLIDATION):
        sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
        spec = LesionSpec(finding, sides[0] if sides else None, zones[0] if zones else None, Severity.MODERATE, seed=11)
        rendering = world.render(acquisition, spec, keep_line_integrals=True)
        background = rendering.line_integrals["counterfactual"] / water
        channel = rendering.line_integrals[Severity.MODERATE.value] / water - background
        masks = AnatomyMasks({Organ.LUNG_RIGHT: anatomy_channel(rendering.anatomy, "lung_right"),
                              Organ.LUNG_LEFT: anatomy_channel(rendering.anatomy, "lung_left"),
                              Organ.HEART: anatomy_channel(rendering.anatomy, "heart")}, "world")
        pairs[finding] = (rendering, background, channel, masks)
    return pairs


def test_world_render_mapping_and_lesion_match_the_physics(world_pairs):
    """On a render (VOI unknown to the mapping), the fit is within 0.02 display units of the
    anchors, and composing the true projected channel onto the counterfactual approximates
    the factual inside the extent: error well under the lesion's own contrast, mean change
    within 30%. Measured at 128 px, seed 12: errors 0.08-0.31 of the contrast, with the
    background registered exactly or 3 px off."""
    from medcf.vocab import Severity

    for finding, (rendering, background, channel, masks) in world_pairs.items():
        counterfactual, factual = rendering.counterfactual, rendering.factual[Severity.MODERATE]
        mapping = estimate_mapping(counterfactual, masks, background, None, pixel_mm=rendering.pixel_mm)
        assert mapping.residual < 0.02 and mapping.r2 > 0.98, finding
        extent = ndimage.binary_dilation(rendering.lesion_masks[Severity.MODERATE], iterations=3)
        lesion = PlacedLesion(channel.astype(np.float32), extent, np.zeros(channel.shape, np.float32), background)
        composed = compose(counterfactual, lesion, mapping, seed=0)
        truth = (factual - counterfactual)[extent]
        contrast = float(np.sqrt(np.mean(truth ** 2)))
        error = float(np.sqrt(np.mean((composed - factual)[extent] ** 2)))
        assert error < 0.4 * contrast, (finding, error, contrast)
        assert np.mean((composed - counterfactual)[extent]) == pytest.approx(float(np.mean(truth)), rel=0.3), finding
        # A registration 3 px (8 mm) off: the fit's residual shows it, the lesion still matches.
        shifted = ndimage.shift(background, (3, -3), order=1, mode="nearest")
        off = estimate_mapping(counterfactual, masks, shifted, None, pixel_mm=rendering.pixel_mm)
        assert off.residual > 3 * mapping.residual, finding
        moved = PlacedLesion(lesion.channel, extent, lesion.replaced, shifted)
        composed_off = compose(counterfactual, moved, off, seed=0)
        assert np.sqrt(np.mean((composed_off - factual)[extent] ** 2)) < 0.4 * contrast, finding
        # Ignoring the film's scatter (a linear log signal) is measurably worse for the effusion.
        if finding.value == "pleural_effusion":
            plain = estimate_mapping(counterfactual, masks, background, None, pixel_mm=rendering.pixel_mm,
                                     scatters=(0.0,))
            naive = compose(counterfactual, lesion, plain, seed=0)
            assert np.sqrt(np.mean((naive - factual)[extent] ** 2)) > error


def test_a_large_film_is_fitted_on_a_shrunk_copy_with_the_same_result():
    """A film above FIT_SIDE is fitted on block means (a 2800 x 2300 DICOM in ~2 s); the
    mapping, and the pixel size it records, are the full film's."""
    line, masks = chest()
    display, transform = film("sigmoid", line)
    small = estimate_mapping(display, masks, line, transform, pixel_mm=0.6)
    big = lambda image: np.kron(image, np.ones((6, 6), image.dtype))  # noqa: E731
    large = estimate_mapping(big(display), AnatomyMasks({o: big(m) for o, m in masks.organs.items()}, "large"),
                             big(line), transform, pixel_mm=0.1)
    assert large.slope == pytest.approx(small.slope, rel=0.03) and large.pixel_mm == 0.1
    assert large.sharpness_px == pytest.approx(3.5, rel=0.01)  # 0.35 mm at 0.1 mm pixels


def test_full_range_and_lut_sequence_descriptions():
    """No VOI attributes: the full range is a linear window (modality units recovered); a
    VOI LUT Sequence cannot be inverted from its description, so a tone curve is fitted."""
    line, masks = chest()
    x = A + B * line
    lo, hi = float(x.min()), float(x.max())
    display = ((x - lo) / (hi - lo)).astype(np.float32)
    full = DisplayTransform(f"full range of modality values {lo:g}..{hi:g} (no VOI attributes)", False)
    mapping = estimate_mapping(display, masks, line, full, pixel_mm=1.0)
    assert mapping.inverse is VoiInverse.LINEAR and mapping.slope == pytest.approx(B, rel=0.03)
    lut = estimate_mapping(display, masks, line, DisplayTransform('VOI LUT Sequence item 1 "NORMAL"', True),
                           pixel_mm=1.0)
    assert lut.inverse is VoiInverse.ESTIMATED and not lut.inverted and "not invertible" in lut.notes[0]
    assert lut.tone == 0.0  # the film is linear in L: the identity fits best


def test_a_stated_linear_window_over_a_processed_film_keeps_the_films_tone():
    """A film "for presentation" whose stored values carry its processing's S-curve, shown
    through a stated full-range linear window (as the sample study is): the tone is fitted
    inside the window, so a dense lesion over soft tissue brightens as the S-curve allows
    and is not carried on linearly and clipped to white."""
    line, masks = chest()
    processed = sigmoid_window(A + B * line, 2400.0, 1500.0)
    transform = DisplayTransform("Window Center/Width 2048/4096 (LINEAR)", False)
    display = (np.round(processed * 4095.0) / 4095.0).astype(np.float32)
    mapping = estimate_mapping(display, masks, line, transform, pixel_mm=1.0)
    assert mapping.inverse is VoiInverse.LINEAR and mapping.tone >= 0.9 and mapping.residual < 0.01
    channel = blob((130, 40), 10.0, 120.0)  # an effusion's depth of fluid, over the soft tissue below a lung
    extent = channel > 0.01 * channel.max()
    lesion = PlacedLesion(channel.astype(np.float32), extent, np.zeros(SHAPE, np.float32), line)
    composed = compose(display, lesion, mapping, seed=0)
    expected = sigmoid_window(A + B * (line + channel), 2400.0, 1500.0)
    contrast = np.abs(expected - display)[extent].max()
    assert contrast > 0.05
    assert np.abs(composed - expected)[extent].max() < 0.1 * contrast
    assert not np.any(composed[extent] >= 0.998)


def test_adding_a_dense_lesion_never_makes_the_scatter_negative():
    """Where the registered background predicts less scatter than the lesion removes (a poor
    fit: a held-out world render gave 1112 NaN pixels), the scatter is floored at zero and
    every value stays finite."""
    mapping = AttenuationMapping(inverse=VoiInverse.ESTIMATED, slope=19.4, intercept=-199.0, residual=0.0, r2=1.0,
                                 anchors=(), scatter=0.45, pixel_mm=1.0)
    line = np.full(SHAPE, 200.0)
    values = mapping.intercept + mapping.slope * line
    added = mapping.add(values, blob((80, 80), 60.0, 150.0), np.zeros(SHAPE))
    assert np.all(np.isfinite(added)) and added.max() > values.max()
