"""FFHQ alignment (NVlabs' ``image_align``, as Arc2Face's ``utils.py`` uses it) from 68 iBUG-ordered landmarks.

The reference aligns a photo before it becomes a pose reference (EMOCA/SMIRK) or the Reference Adapter's input, so
every step below follows it (docs/pose_hints.md, 'FFHQ alignment'): an oriented square ``quad`` from the eyes and
mouth; the photo shrunk by a whole factor when the face is more than twice the output size (LANCZOS); cropped to the
quad's box plus a border; padded by reflection, blurred and blended to the median colour where the quad leaves the
photo; mapped onto a ``transform_size`` square by PIL's bilinear QUAD transform and LANCZOS-resized to
``output_size``.

Coordinates: landmarks and quads use pixel centres at integer positions (as face-alignment and insightface report
them); PIL's transform counts from pixel corners, hence the +0.5 the reference adds. ``quad_to_square(quad, size)``
maps a photo point to the aligned image with pixel corners at integers (subtract 0.5 for pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

DEFAULT_OUTPUT_SIZE = 512      # the size Arc2Face's demos align to
DEFAULT_TRANSFORM_SIZE = 4096  # the reference's (and FFHQ's) intermediate supersampled square
MIN_QUAD_SIZE = 8.0            # pixels: below this the landmarks do not describe a visible face


@dataclass(frozen=True)
class FfhqAlignment:
    """An aligned face and where it came from in the photo."""

    image: np.ndarray   # [output_size, output_size, 3] uint8 RGB
    quad: np.ndarray    # [4, 2] float64 photo coordinates of the output's corners: top-left, bottom-left,
                        # bottom-right, top-right (the square the output shows)


def ffhq_quad(points_2d: np.ndarray) -> np.ndarray:
    """FFHQ ``image_align``'s crop quad from 68 2D landmarks: [top-left, bottom-left, bottom-right, top-right]."""
    lm = np.asarray(points_2d, np.float64)[:, :2]
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) * 0.5, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    with np.errstate(invalid="ignore", divide="ignore"):   # degenerate landmarks: NaN, which callers check
        x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_to_square(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine map sending quad[0] to (0, 0), quad[1] to (0, size) and quad[3] to (size, 0) (pixel corners)."""
    edges = np.column_stack([quad[3] - quad[0], quad[1] - quad[0]])
    linear = size * np.linalg.inv(edges)
    return np.column_stack([linear, -linear @ quad[0]])


def image_align(image: np.ndarray, landmarks: np.ndarray, output_size: int = DEFAULT_OUTPUT_SIZE, *,
                transform_size: int = DEFAULT_TRANSFORM_SIZE, enable_padding: bool = True) -> FfhqAlignment:
    """The FFHQ-aligned square of the face whose 68 iBUG landmarks (x, y in pixels) are given.

    ``image``: uint8 RGB [H, W, 3]. Returns the aligned uint8 RGB [output_size, output_size, 3] and the quad.
    """
    from PIL import Image

    photo = _check_photo(image)
    points = _check_landmarks(landmarks)
    for name, value in (("output_size", output_size), ("transform_size", transform_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 16 <= value <= 8192:
            raise InvalidInputError(f"{name} must be a whole number from 16 to 8192, got {value!r}.")
    quad = ffhq_quad(points)
    if not np.isfinite(quad).all() or np.hypot(*(quad[3] - quad[0])) < MIN_QUAD_SIZE:
        raise InvalidInputError("The landmarks are degenerate: the eyes and mouth (nearly) coincide, so they frame "
                                "no face. Check that they are 68 points in iBUG order, in pixels.")
    original = quad.copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    img = Image.fromarray(photo, "RGB")

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:   # a big face: resample once here rather than through the 4096 square
        img = img.resize((int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink))), Image.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    left, top, right, bottom = _bounds(quad)
    crop = (max(left - border, 0), max(top - border, 0), min(right + border, img.size[0]),
            min(bottom + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[:2]

    left, top, right, bottom = _bounds(quad)
    pad = (max(border - left, 0), max(border - top, 0), max(right - img.size[0] + border, 0),
           max(bottom - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = tuple(int(p) for p in np.maximum(pad, int(np.rint(qsize * 0.3))))
        img = Image.fromarray(_pad_and_soften(np.asarray(img, np.float32), pad, qsize), "RGB")
        quad = quad + pad[:2]

    img = img.transform((transform_size, transform_size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return FfhqAlignment(image=np.asarray(img, np.uint8).copy(), quad=original)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    """The quad's pixel box: floor of the minima, ceiling of the maxima."""
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())), int(np.ceil(quad[:, 0].max())),
            int(np.ceil(quad[:, 1].max())))


def _pad_and_soften(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Reflect-pad (left, top, right, bottom), then fade the padding into a blur and the median colour, as FFHQ
    does so that the mirrored background does not read as a second face."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), "reflect")
    h, w, _ = img.shape
    ys, xs = np.ogrid[:h, :w]
    xs, ys = xs.astype(np.float32)[..., None], ys.astype(np.float32)[..., None]
    # 0 inside the photo, rising to 1 at the outer edge of the padding
    mask = np.maximum(1.0 - np.minimum(xs / left, (w - 1 - xs) / right),
                      1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom))
    sigma = qsize * 0.02
    img = img + (gaussian_filter(img, [sigma, sigma, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(img), 0, 255))


def _check_photo(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInputError(f"image_align needs a uint8 RGB photo of shape H x W x 3, got a {what}.")
    if min(image.shape[:2]) < 2:
        raise InvalidInputError(f"The photo has too few pixels to align (shape {image.shape}).")
    return np.ascontiguousarray(image)


def _check_landmarks(landmarks: object) -> np.ndarray:
    points = np.asarray(landmarks, np.float64) if not isinstance(landmarks, str) else np.empty(0)
    if points.ndim != 2 or points.shape[0] != 68 or points.shape[1] not in (2, 3):
        raise InvalidInputError(f"FFHQ alignment needs 68 landmarks in iBUG order, shape [68, 2] (or [68, 3]), got "
                                f"shape {points.shape}.")
    if not np.isfinite(points).all():
        raise InvalidInputError("The landmarks contain NaN or infinite values.")
    return points[:, :2]
