"""The world toward real films (medcf.world.film): each step does what it says, measurably,
and keeps image and label consistent; the training pipeline draws them reproducibly."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import ellipse, polygon
from skimage.measure import label as connected, regionprops

from medcf.errors import InputError
from medcf.world import film
from medcf.world.film import CollimationFill, FilmLook, GridOrientation, VoiFunction

ROOT = Path(__file__).resolve().parents[1]


def chest_like(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth display image with structure at every scale (so filters have work to do)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    image = sum(gaussian_filter(rng.normal(size=(size, size)), s) * s for s in (1, 3, 9))
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def oval_lungs(size: int = 64) -> np.ndarray:
    """Two upright ellipses: the 'world' lungs of the registration tests."""
    mask = np.zeros((size, size), bool)
    for centre in (0.3, 0.7):
        rr, cc = ellipse(size * 0.5, size * centre, size * 0.33, size * 0.13, shape=mask.shape)
        mask[rr, cc] = True
    return mask


def tapered_lungs(size: int = 64) -> np.ndarray:
    """Two lungs narrow at the apex and wide at the base (a real lung's outline, roughly)."""
    mask = np.zeros((size, size), bool)
    for side in (-1, 1):
        mid = size * (0.5 + side * 0.2)
        rows = np.array([0.15, 0.15, 0.85, 0.85]) * size
        cols = np.array([mid - side * 0.02 * size, mid + side * 0.06 * size, mid + side * 0.18 * size,
                         mid - side * 0.1 * size])
        rr, cc = polygon(rows, cols, shape=mask.shape)
        mask[rr, cc] = True
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


# --- post-processing --------------------------------------------------------------------


@pytest.mark.parametrize("function", list(VoiFunction))
@pytest.mark.parametrize("center,width", [(0.5, 1.0), (0.3, 0.4), (0.7, 0.2)])
def test_voi_lut_is_monotone_and_centred(function, center, width):
    x = np.linspace(-0.2, 1.2, 2001, dtype=np.float32)
    y = film.voi_lut(x, function, center, width)
    assert np.all(np.diff(y) >= 0), "a display LUT must never reverse the order of two values"
    assert y.min() >= 0 and y.max() <= 1
    assert film.voi_lut(np.array([center]), function, center, width)[0] == pytest.approx(0.5, abs=1e-6)
    assert y[-1] - y[0] > 0.8  # it spans most of the display, not a constant
    with pytest.raises(InputError, match="width"):
        film.voi_lut(x, function, center, 0.0)


def test_voi_window_is_drawn_relative_to_the_films_own_range():
    """A reader windows the film in front of it: the same film stored darker and with less
    contrast (any affine change of its values) gets the same display, and a dark film is not
    clipped to black. Fails with a window drawn in absolute display units."""
    image = chest_like(seed=3)
    dark = 0.05 + 0.25 * image  # the same film, dark and flat
    only_voi = FilmLook(multiscale_prob=0.0, unsharp_prob=0.0, compression_prob=0.0, voi_prob=1.0)
    outs = []
    for pixels in (image, dark):
        step = film.RandFilmProcessingd(only_voi, prob=1.0)
        step.set_random_state(seed=5)
        outs.append(step({"image": torch.as_tensor(pixels[None])})["image"][0].numpy())
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-3)
    for out in outs:
        assert float(np.mean(out <= 0.0)) < 0.2 and float(np.mean(out >= 1.0)) < 0.2  # at most a little clipped
        assert np.percentile(out, 99) - np.percentile(out, 1) > 0.5  # and it spans the display
    center, width = film.relative_window(dark, 0.5, 1.0)
    low, high = np.percentile(dark, film.VOI_PERCENTILES)
    assert center == pytest.approx((low + high) / 2, rel=1e-5) and width == pytest.approx(high - low, rel=1e-5)


def test_multiscale_contrast_reconstructs_at_unit_gain_and_lifts_detail():
    image = chest_like()
    same = film.multiscale_contrast(image, (1.0,) * 5, 1.0)
    np.testing.assert_allclose(same, image, atol=1e-5)  # the bands sum back to the image
    boosted = film.multiscale_contrast(image, (2.0, 2.0, 1.5, 1.0, 1.0), 0.7)
    detail = lambda x: float(np.std(x - film.blur(x, 2.0)))  # noqa: E731
    assert detail(boosted) > 1.8 * detail(image)
    assert abs(float(boosted.mean()) - float(image.mean())) < 0.02  # the coarse picture stays


def test_unsharp_adds_edge_contrast():
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 0.6
    image += 0.2
    sharpened = film.unsharp(image, radius=2.0, amount=1.0)
    assert sharpened[:, 33].mean() > 0.8 + 0.05 and sharpened[:, 30].mean() < 0.2 - 0.05  # over- and undershoot
    np.testing.assert_allclose(sharpened[:, :20], image[:, :20], atol=1e-4)  # flat areas untouched


def test_range_compression_shrinks_the_low_frequency_range_by_its_strength():
    image = np.tile(np.linspace(0.1, 0.9, 256, dtype=np.float32), (256, 1))  # a ramp: all low frequency
    image += 0.05 * (np.indices((256, 256)).sum(axis=0) % 2)  # plus the finest detail
    compressed = film.compress_range(image, sigma=25.6, strength=0.5)
    low = lambda x: film.blur(x, 8.0)[128, 40:216]  # noqa: E731  away from the reflected borders
    assert np.ptp(low(compressed)) == pytest.approx(0.5 * np.ptp(low(image)), rel=0.25)
    fine = lambda x: np.abs(x - film.blur(x, 1.0)).mean()  # noqa: E731
    assert fine(compressed) == pytest.approx(fine(image), rel=0.05)  # detail kept


@pytest.mark.parametrize("orientation", list(GridOrientation))
@pytest.mark.parametrize("frequency", [0.1, 0.3125, 0.45])
def test_grid_lines_add_one_periodic_component_at_the_stated_frequency(orientation, frequency):
    image = chest_like(256)
    lined = film.grid_lines(image, frequency, 0.02, orientation, phase=0.3)
    axis = 1 if orientation is GridOrientation.COLUMNS else 0
    difference = lined - image
    assert np.allclose(difference, difference.mean(axis=1 - axis, keepdims=True), atol=1e-6)  # lines, not a pattern
    profile = difference.mean(axis=1 - axis)
    spectrum = np.abs(np.fft.rfft(profile))
    frequencies = np.fft.rfftfreq(profile.size)
    assert abs(frequencies[np.argmax(spectrum)] - frequency) <= 1.0 / profile.size
    assert np.ptp(difference) == pytest.approx(0.04, rel=0.05)


# --- collimation ------------------------------------------------------------------------


@pytest.mark.parametrize("fill", list(CollimationFill))
def test_collimation_blanks_the_border_and_the_label_follows(fill):
    image = chest_like(100)
    label = np.zeros((3, 100, 100), np.float32)
    label[:, 5:95, 5:95] = 1
    value = 1.0 if fill is CollimationFill.UNEXPOSED else 0.0
    out, out_label = film.collimate(image, label, (0.1, 0.2, 0.05, 0.15), value)
    field = np.zeros((100, 100), bool)
    field[10:80, 5:85] = True
    assert np.all(out[~field] == value) and np.array_equal(out[field], image[field])
    assert np.all(out_label[:, ~field] == 0) and np.array_equal(out_label[:, field], label[:, field])
    transform = film.RandCollimationd(prob=1.0)
    transform.set_random_state(seed=5)
    sample = transform({"image": torch.as_tensor(image[None]), "label": torch.as_tensor(label)})
    blank = sample["image"][0].numpy() == sample["image"][0, 0, 0].item()
    assert blank.any() and torch.all(sample["label"][:, torch.as_tensor(blank)] == 0)


# --- lung shapes ------------------------------------------------------------------------


def test_registration_moves_the_outline_to_the_target_and_keeps_each_lung_one_smooth_region():
    moving, target = oval_lungs(), tapered_lungs()
    field = film.register_shape(moving, target)
    warped, _ = film.warp(torch.as_tensor(moving, dtype=torch.float32)[None], None, field)
    moved = warped[0].numpy() > 0.5
    before, after = dice(moving, target), dice(moved, target)
    assert before < 0.85 and after > 0.93 and after - before > 0.1
    regions = regionprops(connected(moved))
    assert len(regions) == 2 and all(r.solidity > 0.9 for r in regions)
    assert film.register_shape(moving, target).tobytes() == field.tobytes()  # the same field every run


def test_lung_shape_transform_warps_image_and_label_together_on_any_framing(tmp_path):
    world, target = oval_lungs(), tapered_lungs()
    bank = film.ShapeBank(film.register_shape(world, target)[None], np.array([0.0]), np.array([1.0]))
    bank = film.ShapeBank.load(bank.save(tmp_path / "bank.npz"))
    # The film: the same lungs, smaller and off-centre on a 160 px image; the image is the
    # label plus texture, so a warp that moved them apart would show.
    size = 160
    lungs = np.zeros((size, size), bool)
    small = np.asarray(Image.fromarray(world.astype(np.uint8) * 255).resize((70, 90), Image.NEAREST)) > 127
    lungs[30:120, 60:130] = small
    right, left = lungs.copy(), lungs.copy()
    right[:, 95:] = False
    left[:, :95] = False
    label = np.stack([right, left, np.zeros_like(lungs)]).astype(np.float32)
    image = 0.3 + 0.5 * lungs.astype(np.float32)
    transform = film.RandLungShaped(bank, (0, 1), FilmLook(lung_shape_strength=(1.0, 1.0)), prob=1.0)
    out = transform({"image": torch.as_tensor(image[None]), "label": torch.as_tensor(label)})
    new_lungs = out["label"][:2].amax(dim=0).numpy() > 0.5
    assert np.array_equal(out["image"][0].numpy() > 0.55, new_lungs) or \
        dice(out["image"][0].numpy() > 0.55, new_lungs) > 0.98  # image and label moved together
    target_on_film = np.asarray(Image.fromarray(target.astype(np.uint8) * 255).resize((70, 90), Image.NEAREST)) > 127
    expected = np.zeros_like(lungs)
    expected[30:120, 60:130] = target_on_film
    # The frame of the film's lungs is their box widened, the box of the frame test's lungs too.
    assert dice(new_lungs, expected) > dice(lungs, expected) + 0.05
    assert all(len(regionprops(connected(out["label"][c].numpy() > 0.5))) == 1 for c in (0, 1))
    # Far from the lungs nothing moves.
    np.testing.assert_allclose(out["image"][0, :5].numpy(), image[:5], atol=1e-6)


def test_warp_tapers_to_zero_at_the_image_edge():
    """Lungs whose frame runs past the image (here the bases touch the bottom edge): the
    placed field is zero on the edge and samples inside the image everywhere, so no border
    row is repeated into streaks. Fails when the field is cut at the edge, not tapered."""
    world, target = oval_lungs(), tapered_lungs()
    field = film.register_shape(world, target)
    size = 128
    lungs = np.zeros((size, size), bool)
    small = Image.fromarray(world.astype(np.uint8) * 255).resize((88, 88), Image.NEAREST)
    lungs[40:, 20:108] = np.asarray(small) > 127
    placed = film.place_field(field, lungs, 1.0)
    assert np.abs(placed).max() > 1.0  # the lungs do move
    for edge in (placed[:, 0, :], placed[:, -1, :], placed[:, :, 0], placed[:, :, -1]):
        assert np.abs(edge).max() < 1e-6
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    assert (rows + placed[0]).min() >= -0.5 and (rows + placed[0]).max() <= size - 0.5
    assert (cols + placed[1]).min() >= -0.5 and (cols + placed[1]).max() <= size - 0.5
    # and the warp never folds the film onto itself: the map x -> x + d(x) keeps its orientation
    jacobian = ((1 + np.gradient(placed[0], axis=0)) * (1 + np.gradient(placed[1], axis=1))
                - np.gradient(placed[0], axis=1) * np.gradient(placed[1], axis=0))
    assert jacobian.min() > 0
    weights = film.edge_taper(size, size)
    assert weights[0].max() == 0 and weights[size // 2, size // 2] == 1.0
    assert np.all(np.diff(weights[: size // 2, 64]) >= 0)


def two_lung_png(tmp_path: Path) -> bytes:
    picture = np.zeros((300, 280), np.uint8)
    picture[40:260, 30:120] = 255
    picture[40:250, 160:250] = 255
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_masks_keep_only_two_lung_drawings(tmp_path):
    one = np.zeros((200, 200), np.uint8)
    one[20:180, 20:90] = 255
    buffer = io.BytesIO()
    Image.fromarray(one).save(buffer, format="PNG")
    source = tmp_path / "masks.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("masks/", "")
        archive.writestr("masks/a.png", two_lung_png(tmp_path))
        archive.writestr("masks/b.png", buffer.getvalue())  # one lung only
        archive.writestr("masks/c.png", b"not an image")
    masks = film.real_lung_masks(source)
    assert len(masks) == 1 and masks[0].shape == (film.FRAME, film.FRAME)
    assert len(regionprops(connected(masks[0]))) == 2
    bank = film.cached_shape_bank([oval_lungs(100)], source, 3, 0, tmp_path / "cache")
    assert len(bank) == 1 and bank.dice_after[0] > bank.dice_before[0]
    again = film.cached_shape_bank([oval_lungs(100)], source, 3, 0, tmp_path / "cache")
    assert np.array_equal(again.fields, bank.fields) and len(list((tmp_path / "cache").iterdir())) == 1


# --- in the training pipeline -----------------------------------------------------------


def test_training_transform_with_film_look_is_seeded_and_keeps_labels_binary():
    from medcf.training.anatomy_augment import training_transform
    from medcf.training.anatomy_data import AnatomySet

    data = AnatomySet.load(ROOT / "tests" / "data" / "anatomy_heldout.npz")
    bank = film.ShapeBank(film.register_shape(oval_lungs(), tapered_lungs())[None], np.zeros(1), np.ones(1))
    look = FilmLook(multiscale_prob=1, unsharp_prob=1, compression_prob=1, voi_prob=1, grid_prob=1,
                    collimation_prob=1, lung_shape_prob=1)

    def draw(seed: int) -> list[dict]:
        transform = training_transform(data.images.shape[-1], seed, look, bank)
        return [transform({"image": data.images[i][None], "label": data.masks[i].astype(np.float32)})
                for i in range(2)]

    first, second, other = draw(1), draw(1), draw(2)
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(first[0]["image"], other[0]["image"])
    for sample in first:
        assert sample["image"].shape == (1, 256, 256) and sample["label"].shape == (3, 256, 256)
        assert set(torch.unique(sample["label"]).tolist()) <= {0.0, 1.0}
    plain = training_transform(256, 1)
    assert len(plain.transforms) + 4 == len(training_transform(256, 1, look, bank).transforms)


def test_missing_lung_shapes_are_one_line(tmp_path):
    from medcf.training.anatomy_data import AnatomySet
    from medcf.training.segmenter import TrainConfig, lung_shape_bank

    data = AnatomySet.load(ROOT / "tests" / "data" / "anatomy_heldout.npz")
    config = TrainConfig(out_dir=tmp_path, lung_shape_source=tmp_path / "absent.zip")
    with pytest.raises(InputError, match="--lung-shapes 0"):
        lung_shape_bank(config, data)
    assert lung_shape_bank(TrainConfig(out_dir=tmp_path, lung_shapes=0), data) is None
    assert lung_shape_bank(TrainConfig(out_dir=tmp_path, film_look=None), data) is None


def test_train_options_reach_the_recipe(tmp_path, monkeypatch):
    import medcf.training.segmenter as train_module
    from medcf.cli import build_parser

    seen = {}

    def capture(config, resume=False, progress=True):
        seen["config"] = config
        return tmp_path / "anatomy_unet.safetensors"

    monkeypatch.setattr(train_module, "train_segmenter", capture)
    parser = build_parser()
    args = parser.parse_args(["train", "segmenter", "--out", str(tmp_path), "--quiet"])
    args.func(args)
    assert seen["config"].film_look == FilmLook() and seen["config"].lung_shapes == 48
    args = parser.parse_args(["train", "segmenter", "--out", str(tmp_path), "--no-film-look", "--lung-shapes", "0",
                              "--lung-shape-source", str(tmp_path / "m.zip")])
    args.func(args)
    assert seen["config"].film_look is None and seen["config"].lung_shapes == 0
    assert seen["config"].lung_shape_source == tmp_path / "m.zip"
