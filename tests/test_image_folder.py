"""The image-folder source and the ImageNet transforms: class numbering, decoding to RGB, the
random-resized crop's boxes against the ranges it promises, and the evaluation transform against
PIL calls with hand-computed sizes."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from jdistill.data.image_folder import (
    ImageFolder,
    RandomResizedCrop,
    ResizeCenterCrop,
    central_box,
    crop_box,
    load_rgb,
)

CLASSES = ("cat", "dog", "eel")
GRAYSCALE = ("dog", 2)  # (class, image) stored as one-channel PNG
RGBA = ("eel", 1)  # stored as a PNG with an alpha channel


def make_image_folder(root, per_class: int = 4):
    """``root/<class>/`` for :data:`CLASSES`, ``per_class`` images each, all of different sizes:
    JPEG and PNG with lower- and upper-case suffixes, one grayscale, one RGBA, the last image of
    each class in a subfolder; plus a text file to be ignored. Returns ``root``."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        folder = root / name
        (folder / "more").mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (20 + 7 * k + 3 * c, 28 + 5 * k, 3), dtype=np.uint8)
            where = folder / "more" if k == per_class - 1 else folder
            if (name, k) == GRAYSCALE:
                Image.fromarray(pixels[..., 0], "L").save(where / f"img{k}.png")
            elif (name, k) == RGBA:
                alpha = np.full(pixels.shape[:2] + (1,), 128, np.uint8)
                Image.fromarray(np.concatenate([pixels, alpha], -1), "RGBA").save(where / f"img{k}.png")
            elif k % 2:
                Image.fromarray(pixels).save(where / f"img{k}.PNG", format="PNG")
            else:
                Image.fromarray(pixels).save(where / f"img{k}.{'JPEG' if c else 'jpg'}", format="JPEG")
        (folder / "notes.txt").write_text("not an image")
    return root


def test_classes_are_numbered_in_name_order(tmp_path):
    folder = ImageFolder(make_image_folder(tmp_path))
    assert folder.classes == CLASSES and folder.num_classes == 3
    assert folder.class_to_index == {"cat": 0, "dog": 1, "eel": 2}
    assert len(folder) == 12
    np.testing.assert_array_equal(folder.labels, np.repeat([0, 1, 2], 4))
    # torchvision's order: a folder's own files (sorted) before its subfolders'
    assert folder.paths[:4] == ("cat/img0.jpg", "cat/img1.PNG", "cat/img2.jpg", "cat/more/img3.PNG")
    for name in ("B", "a", "c"):
        (tmp_path / "other" / name).mkdir(parents=True)
        Image.new("RGB", (3, 2)).save(tmp_path / "other" / name / "x.png")
    assert ImageFolder(tmp_path / "other").classes == ("B", "a", "c")  # byte order, as sorted()


def test_images_decode_to_rgb(tmp_path):
    folder = ImageFolder(make_image_folder(tmp_path))
    for i in range(len(folder)):
        example = folder[i]
        image = example["image"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
        assert example["label"] == i // 4
        with Image.open(tmp_path / folder.paths[i]) as direct:
            assert image.shape[:2] == (direct.height, direct.width)
    gray = folder[folder.paths.index(f"{GRAYSCALE[0]}/img{GRAYSCALE[1]}.png")]["image"]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    rgba_path = tmp_path / f"{RGBA[0]}/img{RGBA[1]}.png"
    with Image.open(rgba_path) as direct:
        np.testing.assert_array_equal(load_rgb(rgba_path), np.asarray(direct)[..., :3])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda root: root / "missing", "is not a directory"),
        (lambda root: root, "no class folders"),
        (lambda root: (root / "a").mkdir() or (root / "b").mkdir() or root, "class folder\\(s\\) a, b"),
    ],
)
def test_bad_folders_are_refused_in_one_line(tmp_path, make, match):
    with pytest.raises(ValueError, match=match) as error:
        ImageFolder(make(tmp_path))
    assert "\n" not in str(error.value)


def within_ranges(box, height, width, scale, ratio) -> bool:
    """Whether a sampled box could come from an area fraction in ``scale`` and a width/height ratio
    in ``ratio`` once its sides are rounded to integers (each side within 1/2 of the real one)."""
    _, _, h, w = box
    area = height * width
    return (
        (w - 0.5) * (h - 0.5) <= scale[1] * area
        and (w + 0.5) * (h + 0.5) >= scale[0] * area
        and (w - 0.5) / (h + 0.5) <= ratio[1]
        and (w + 0.5) / (h - 0.5) >= ratio[0]
    )


@pytest.mark.parametrize("height, width", [(48, 64), (375, 500), (7, 5), (10, 300), (300, 10)])
def test_crop_boxes_stay_inside_and_within_the_ranges(height, width):
    rng = np.random.default_rng(1)
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    fallback = central_box(height, width, ratio)
    for _ in range(2000):
        box = crop_box(rng, height, width, scale, ratio)
        top, left, h, w = box
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        if box != fallback:  # a sampled box (the fallback only where no try fitted)
            assert within_ranges(box, height, width, scale, ratio), box


def test_crop_boxes_cover_the_ranges():
    rng = np.random.default_rng(2)
    boxes = np.array([crop_box(rng, 1000, 1000) for _ in range(4000)])
    areas = boxes[:, 2] * boxes[:, 3] / 1e6
    ratios = boxes[:, 3] / boxes[:, 2]
    assert 0.079 <= areas.min() < 0.09 and 0.95 < areas.max() <= 1.0
    assert 0.74 < ratios.min() < 0.77 and 1.30 < ratios.max() < 1.34
    assert (boxes[:, 0] == 0).any() and (boxes[:, 0] + boxes[:, 2] == 1000).any()  # placed anywhere


def test_central_box_clamps_the_ratio():
    assert central_box(10, 100) == (0, 43, 10, 13)  # 4/3 * 10 = 13.3 wide, centred
    assert central_box(100, 10) == (43, 0, 13, 10)  # 10 / (3/4) = 13.3 high
    assert central_box(50, 60) == (0, 0, 50, 60)  # ratio 1.2 within: the whole image
    assert central_box(11, 200) == (0, 92, 11, 15)  # 4/3 * 11 = 14.67 -> 15
    # no box of 90-100 % of a 10 x 100 image has a ratio within [3/4, 4/3]: always the fallback
    rng = np.random.default_rng(0)
    assert {crop_box(rng, 10, 100, scale=(0.9, 1.0)) for _ in range(50)} == {(0, 43, 10, 13)}


def test_random_resized_crop_gives_the_size_and_flips_half_the_time():
    pixels = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for size in (8, 16, 50):
        out = RandomResizedCrop(size)(pixels, np.random.default_rng(size))
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
    gray = RandomResizedCrop(8)(pixels[..., 0], np.random.default_rng(0))
    assert gray.shape == (8, 8, 3)
    # area fraction 1 at the image's own ratio: the box is the whole image
    whole = RandomResizedCrop(12, scale=(1, 1), ratio=(40 / 30, 40 / 30))
    resized = np.asarray(Image.fromarray(pixels).resize((12, 12), Image.Resampling.BILINEAR))
    flipped = 0
    for seed in range(200):
        out = whole(pixels, np.random.default_rng(seed))
        assert np.array_equal(out, resized) or np.array_equal(out, resized[:, ::-1])
        flipped += not np.array_equal(out, resized)
    assert 70 < flipped < 130
    unflipped = dataclasses.replace(whole, flip=False)
    assert all(np.array_equal(unflipped(pixels, np.random.default_rng(seed)), resized) for seed in range(20))


def test_random_resized_crop_resizes_its_box():
    pixels = np.random.default_rng(4).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for seed in range(20):
        box_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed)
        top, left, h, w = crop_box(box_rng, 37, 53)
        expected = np.asarray(
            Image.fromarray(pixels[top : top + h, left : left + w]).resize(
                (16, 16), Image.Resampling.BILINEAR
            )
        )
        if box_rng.random() < 0.5:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(RandomResizedCrop(16)(pixels, rng), expected)


@pytest.mark.parametrize(
    "width, height, size, resize, resized, top, left",
    [
        (40, 30, 16, None, (24, 18), 1, 4),  # resize floor(16 / 0.875) = 18; 18 * 40 / 30 = 24
        (30, 45, 16, 20, (20, 30), 7, 2),
        (500, 375, 224, None, (341, 256), 16, 58),  # int(341.3); round(58.5) = 58 (half to even)
        (256, 300, 224, None, (256, 300), 38, 16),  # the shorter side is 256 already: no resize
        (291, 256, 224, None, (291, 256), 16, 34),  # round(33.5) = 34: rounded, not floored
        (403, 300, 224, None, (343, 256), 16, 60),  # 343.89 truncated; round(59.5) = 60
    ],
)
def test_eval_transform_is_resize_then_centre_crop(width, height, size, resize, resized, top, left):
    pixels = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if resized != (width, height):
        image = image.resize(resized, Image.Resampling.BILINEAR)
    expected = np.asarray(image)[top : top + size, left : left + size]
    out = ResizeCenterCrop(size, resize)(pixels)
    assert out.shape == (size, size, 3)
    np.testing.assert_array_equal(out, expected)
    assert ResizeCenterCrop(224).resize == 256


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomResizedCrop(0), "size must be positive"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), "scale must be"),
        (lambda: RandomResizedCrop(8, ratio=(0, 1)), "ratio must be"),
        (lambda: ResizeCenterCrop(32, resize=20), "resize 20 is smaller"),
        (lambda: RandomResizedCrop(8)(np.zeros((4, 4, 3), np.float32), None), "expected a uint8 image"),
    ],
)
def test_bad_transforms_are_refused_in_one_line(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)
