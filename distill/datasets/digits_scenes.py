"""``digits-scenes``: real handwritten digits pasted onto real photos, with exact boxes.

Pixels: the 1797 real handwritten digits of scikit-learn's ``load_digits`` (8x8, 16 grey levels,
10 classes), upscaled to 12-64 px, composited with their stroke masks onto crops of the real
photographs that ship with scikit-image and scikit-learn. Nothing is downloaded.

Boxes: each digit's *visible* stroke mask (its pasted mask minus the digits pasted over it) is
stored as a COCO RLE segmentation and its bbox is the tight bound of that mask, so a box is
exact by construction; ``tests/datasets/test_digits_scenes.py`` checks it against the pixels.
Later digits may overlap earlier ones (occlusion), but never hide more than
``MAX_OCCLUDED`` of an earlier digit.

Image size: the long side is 256 px and the short side 160-256 px. 256 px keeps a training step
of the tiny detectors at a fraction of a second on 2 CPU cores, yet leaves room for the 12-64 px
digits to cover three FPN levels (strides 8-32) and several scales per image, like a small COCO.
Because the long side is exactly the pipeline's ``Resize`` scale, no pixel is resampled after
generation and the boxes stay exact in the model's input.

Splits: train scenes use the first 1400 digits of ``load_digits``, val scenes the remaining 397:
the student is evaluated on handwriting it has never seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from .cache import coco_skeleton, dump_json

NAME = 'digits-scenes'
VERSION = 1
CLASSES = tuple(str(d) for d in range(10))
NUM_IMAGES = dict(train=1000, val=200)
LONG_SIDE = 256
SHORT_SIDE = (160, 256)
DIGIT_SIZE = (12, 64)
DIGITS_PER_IMAGE = (3, 10)
MAX_OCCLUDED = 0.4  # an earlier digit keeps at least 60 % of its pasted stroke pixels
TRAIN_DIGITS = 1400  # load_digits indices [0, 1400) for train, [1400, 1797) for val
ALPHA_THRESHOLD = 0.25  # stroke mask = upscaled ink intensity above this (out of 1)

# Real photographs bundled with scikit-image (file names in skimage/data) and scikit-learn.
# Pages of text are left out: their glyphs would look like unlabeled digits.
SKIMAGE_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
                  'motorcycle_left.png', 'hubble_deep_field.jpg', 'grass.png', 'gravel.png',
                  'brick.png', 'camera.png', 'coins.png', 'moon.png')
SKLEARN_PHOTOS = ('china.jpg', 'flower.jpg')


def load_backgrounds() -> list[np.ndarray]:
    """The real photos, as ``uint8[H, W, 3]`` RGB arrays, in a fixed order."""
    import skimage.data
    import sklearn.datasets

    paths = [Path(skimage.data.__file__).parent / f for f in SKIMAGE_PHOTOS]
    paths += [Path(sklearn.datasets.__file__).parent / 'images' / f for f in SKLEARN_PHOTOS]
    photos = []
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f'background photo {p} is missing from the installed '
                                    'scikit-image/scikit-learn; reinstall them')
        photos.append(np.asarray(Image.open(p).convert('RGB')))
    return photos


def load_digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The handwritten digits of one split.

    Returns:
        tuple: ``images (float32[N, 8, 8])`` ink intensity in [0, 1] and ``labels (int64[N])``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    sl = slice(0, TRAIN_DIGITS) if split == 'train' else slice(TRAIN_DIGITS, None)
    return (digits.images[sl] / 16.0).astype(np.float32), digits.target[sl].astype(np.int64)


def _crop_background(rng: np.random.Generator, photo: np.ndarray, width: int,
                     height: int) -> np.ndarray:
    """A random crop of ``photo`` at a random zoom, resized to ``height x width``."""
    ph, pw = photo.shape[:2]
    # zoom < 1 upsamples a smaller crop; every bundled photo is at least 300 px on each side.
    zoom = rng.uniform(0.6, max(0.6, min(1.6, ph / height, pw / width)))
    ch, cw = min(ph, int(round(height * zoom))), min(pw, int(round(width * zoom)))
    y0 = int(rng.integers(0, ph - ch + 1))
    x0 = int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw])
    return np.asarray(crop.resize((width, height), Image.BILINEAR))


def _digit_alpha(digit: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upscale an 8x8 ink image; returns alpha ``float32[h, w]``, zero outside the stroke mask."""
    up = Image.fromarray((digit * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    alpha = np.asarray(up, dtype=np.float32) / 255.0
    return np.where(alpha > ALPHA_THRESHOLD, alpha, 0.0).astype(np.float32)


def _ink_color(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """A random ink colour that contrasts with the mean luminance of ``patch``."""
    lum = float(patch.reshape(-1, 3).mean(0) @ np.array([0.299, 0.587, 0.114]))
    hue = rng.uniform(0, 1, size=3)
    hue = hue / max(hue @ np.array([0.299, 0.587, 0.114]), 1e-3)  # unit luminance
    target = rng.uniform(10, 60) if lum > 128 else rng.uniform(190, 250)
    return np.clip(hue * target, 0, 255).astype(np.float32)


def render_scene(rng: np.random.Generator, photos: list[np.ndarray], digit_images: np.ndarray,
                 digit_labels: np.ndarray) -> dict:
    """Render one scene.

    Args:
        rng (np.random.Generator): The only source of randomness.
        photos (list[np.ndarray]): Backgrounds from :func:`load_backgrounds`.
        digit_images (np.ndarray): ``float32[N, 8, 8]`` ink intensities of the split.
        digit_labels (np.ndarray): ``int64[N]`` their classes.

    Returns:
        dict: ``image (uint8[H, W, 3])``, ``background (uint8[H, W, 3])`` (the photo crop before
        pasting), ``masks (list of bool[H, W])`` visible stroke masks, ``pasted_masks`` the
        full stroke masks as pasted (before later digits covered them), ``labels (list[int])``.
    """
    short = int(rng.integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1))
    width, height = (LONG_SIDE, short) if rng.random() < 0.5 else (short, LONG_SIDE)
    background = _crop_background(rng, photos[int(rng.integers(len(photos)))], width, height)
    canvas = background.astype(np.float32)
    full_masks: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(DIGITS_PER_IMAGE[0], DIGITS_PER_IMAGE[1] + 1))):
        idx = int(rng.integers(len(digit_images)))
        dh = int(rng.integers(DIGIT_SIZE[0], DIGIT_SIZE[1] + 1))
        dw = max(DIGIT_SIZE[0] // 2, int(round(dh * rng.uniform(0.7, 1.0))))
        alpha = _digit_alpha(digit_images[idx], dh, dw)
        if not alpha.any():
            continue
        for _attempt in range(30):
            y0 = int(rng.integers(0, height - dh + 1))
            x0 = int(rng.integers(0, width - dw + 1))
            new = np.zeros((height, width), bool)
            new[y0:y0 + dh, x0:x0 + dw] = alpha > 0
            # Occlusion is allowed, but every earlier digit must stay recognisable.
            if all((v & ~new).sum() >= (1 - MAX_OCCLUDED) * f.sum()
                   for v, f in zip(visible, full_masks)):
                break
        else:
            continue
        region = canvas[y0:y0 + dh, x0:x0 + dw]
        ink = _ink_color(rng, region)
        a = alpha[..., None]
        canvas[y0:y0 + dh, x0:x0 + dw] = region * (1 - a) + ink * a
        visible = [v & ~new for v in visible]
        visible.append(new)
        full_masks.append(new)
        labels.append(int(digit_labels[idx]))
    return dict(image=np.clip(np.rint(canvas), 0, 255).astype(np.uint8), background=background,
                masks=visible, pasted_masks=full_masks, labels=labels)


def mask_to_coco(mask: np.ndarray) -> dict:
    """COCO fields of one binary mask: RLE ``segmentation``, ``area`` and tight ``bbox``.

    The box is ``[x, y, w, h]`` in pixel-edge coordinates: a mask whose pixels span columns
    ``x0..x1`` gives ``x = x0`` and ``w = x1 - x0 + 1``.
    """
    ys, xs = np.nonzero(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return dict(segmentation=rle, area=int(mask.sum()),
                bbox=[float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)])


def build(out_dir: Path, seed: int, num_images: dict | None = None) -> dict:
    """Generate both splits into ``out_dir`` (see :mod:`distill.datasets.cache` for the layout).

    Args:
        out_dir (Path): Destination (created).
        seed (int): Seed; each split gets its own stream derived from it.
        num_images (dict, optional): Images per split; defaults to :data:`NUM_IMAGES`.

    Returns:
        dict: Per split, the number of images and boxes.
    """
    num_images = num_images or NUM_IMAGES
    photos = load_backgrounds()
    summary = {}
    for split_idx, split in enumerate(('train', 'val')):
        rng = np.random.default_rng([seed, split_idx])
        digit_images, digit_labels = load_digit_pool(split)
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        coco = coco_skeleton(CLASSES)
        for i in tqdm(range(num_images[split]), desc=f'{NAME} {split}', unit='img',
                      dynamic_ncols=True, mininterval=1.0):
            scene = render_scene(rng, photos, digit_images, digit_labels)
            file_name = f'{i:06d}.jpg'
            h, w = scene['image'].shape[:2]
            Image.fromarray(scene['image']).save(out_dir / split / file_name, quality=95)
            coco['images'].append(dict(id=i + 1, file_name=file_name, width=w, height=h))
            for mask, label in zip(scene['masks'], scene['labels']):
                if not mask.any():
                    continue
                coco['annotations'].append(dict(
                    id=len(coco['annotations']) + 1, image_id=i + 1, category_id=label + 1,
                    iscrowd=0, **mask_to_coco(mask)))
        dump_json(coco, out_dir / 'annotations' / f'instances_{split}.json')
        summary[split] = dict(images=len(coco['images']), boxes=len(coco['annotations']))
    return summary
