"""The EMOCA-style normal renderer (arc2face_core.pose.emoca_render, camera) on closed-form meshes.

Expected values come from geometry (a sphere's normal at a pixel is (x, y, sqrt(r² - x² - y²)) / r), hand-worked
numbers, and for the reference's crop mapping from scikit-image's own similarity transform, as EMOCA builds it.
"""

from __future__ import annotations

import numpy as np
import pytest

from arc2face_core.errors import InvalidInputError
from arc2face_core.pose.camera import CROP_SIZE, Placement, emoca_placement, framed_placement
from arc2face_core.pose.emoca_render import encode_normals, render_normals, vertex_normals
from builders.flame import ellipsoid_mesh

SIZE = 128
CENTRE = (64.0, 60.0)        # pixels
PIXELS_PER_UNIT = 40.0


def _frame(scale: float = PIXELS_PER_UNIT, centre=CENTRE) -> np.ndarray:
    return np.array([[scale, 0.0, centre[0]], [0.0, scale, centre[1]]])


def _sphere(radius: float = 1.0, rings: int = 64, segments: int = 128, outward: bool = True, offset=(0, 0, 0)):
    vertices, faces = ellipsoid_mesh(rings, segments, axes=(radius, radius, radius), outward=outward)
    return vertices + np.asarray(offset, np.float64), faces


def _decode(image: np.ndarray) -> np.ndarray:
    """uint8 hint -> normals; each value is within 2/255 of the rendered normal (truncation)."""
    return image.astype(np.float64) / 255 * 2 - 1


def _pixel_centres(size: int = SIZE, scale: float = PIXELS_PER_UNIT, centre=CENTRE) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y up) of every output pixel centre for ``_frame``."""
    rows, cols = np.mgrid[0:size, 0:size]
    return (cols + 0.5 - centre[0]) / scale, -(rows + 0.5 - centre[1]) / scale


def test_sphere_normals_coverage_background_and_green_up():
    vertices, faces = _sphere()
    image = render_normals(framed_placement(vertices, _frame()), faces, SIZE)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    x, y = _pixel_centres()
    rho2 = x ** 2 + y ** 2
    covered = (image != 127).any(-1)
    assert covered[rho2 < 0.98 ** 2].all() and not covered[rho2 > 1.0].any()
    assert (image[rho2 > 1.0] == 127).all()                   # the background is exactly 127
    expected = np.stack([x, y, np.sqrt(np.clip(1 - rho2, 0, None))], -1)
    inner = rho2 < 0.95 ** 2
    error = np.abs(_decode(image[inner]) - expected[inner])
    assert error.max() < 0.02 and error.mean() < 0.006
    # Not renormalised: the blend of unit normals is shorter than 1, most visibly where the facets turn fastest.
    length = np.linalg.norm(_decode(image[covered]) + 1 / 255, axis=-1)
    assert length.max() <= 1.0 + 4 / 255
    # +y up is green up: the top of the sphere is green, the bottom has none; +x (image right) is red.
    top, bottom = image[int(CENTRE[1] - 0.9 * PIXELS_PER_UNIT), 64], image[int(CENTRE[1] + 0.9 * PIXELS_PER_UNIT), 64]
    assert top[1] > 230 and bottom[1] < 25 and image[60, 64 + 36, 0] > 230 and image[60, 64 - 36, 0] < 25
    # The pixel at (64.5, 60.5): x = 0.0125, y = -0.0125 -> floor((n * 0.5 + 0.5) * 255) = (129, 125, 254).
    assert tuple(image[60, 64]) == (129, 125, 254)


def test_the_winding_of_the_file_does_not_matter():
    vertices, faces = _sphere(rings=24, segments=48)
    outward = render_normals(framed_placement(vertices, _frame()), faces, SIZE)
    inward = render_normals(framed_placement(vertices, _frame()), faces[:, ::-1], SIZE)
    np.testing.assert_array_equal(outward, inward)
    assert outward[60, 64, 2] > 250                            # both: normals out of the sphere, toward the viewer


def test_the_nearer_surface_hides_the_farther():
    big, big_faces = _sphere(1.0, 32, 64)
    near, near_faces = _sphere(0.3, 16, 32, offset=(0.5, 0.0, 1.5))     # in front of the big sphere
    far, far_faces = _sphere(0.3, 16, 32, offset=(-0.5, 0.0, -1.5))     # behind it
    vertices = np.vstack([big, near, far])
    faces = np.vstack([big_faces, near_faces + len(big), far_faces + len(big) + len(near)])
    image = render_normals(framed_placement(vertices, _frame()), faces, SIZE)
    alone = render_normals(framed_placement(big, _frame()), big_faces, SIZE)
    x, y = _pixel_centres()
    on_near = (x - 0.5) ** 2 + y ** 2 < 0.25 ** 2
    on_far = (x + 0.5) ** 2 + y ** 2 < 0.25 ** 2
    np.testing.assert_array_equal(image[on_far], alone[on_far])         # the far sphere is hidden
    n = _decode(image[on_near])
    expected = np.stack([x - 0.5, y, np.sqrt(np.clip(0.09 - (x - 0.5) ** 2 - y ** 2, 0, None))], -1)[on_near] / 0.3
    assert np.abs(n - expected).max() < 0.05                          # the near one is drawn with its own normals


def test_no_back_face_culling():
    """A bowl (the back half of a sphere, open toward the viewer) shows its inside: normals pointing away."""
    vertices, faces = _sphere(rings=32, segments=64)
    back = faces[(vertices[faces][:, :, 2] <= 1e-9).all(1)]
    image = render_normals(framed_placement(vertices, _frame()), back, SIZE)
    x, y = _pixel_centres()
    inner = x ** 2 + y ** 2 < 0.9 ** 2
    n = _decode(image[inner])
    assert (image[inner] != 127).any(-1).all() and n[:, 2].max() < -0.4 + 2 / 255


def test_encoding_truncates_like_the_reference():
    normals = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [0.3, -0.3, 2.0], [-0.99, 0.999, -2.0]])
    # (n * 0.5 + 0.5) * 255, clamped to [0, 255], then truncated: 127.5 -> 127, 191.25 -> 191, 165.75 -> 165...
    assert encode_normals(normals).tolist() == [[127, 127, 127], [255, 0, 191], [165, 89, 255], [1, 254, 0]]


def test_vertex_normals_weight_faces_by_area():
    # A hinge: vertex 0 is shared by a big face in z = 0 and a small one in x = 0, both wound outward from (-1, 0, 1).
    vertices = np.array([[0, 0, 0], [0, 4, 0], [4, 0, 0], [0, 0, 1], [0, 1, 0.0]])
    faces = np.array([[0, 1, 2], [0, 3, 4]])
    n = vertex_normals(vertices, faces)
    big = np.cross(vertices[1] - vertices[0], vertices[2] - vertices[0])      # area 8 along -z
    small = np.cross(vertices[3] - vertices[0], vertices[4] - vertices[0])    # area 0.5 along -x
    np.testing.assert_allclose(n[0], (big + small) / np.linalg.norm(big + small), atol=1e-12)
    np.testing.assert_allclose(n[2], [0, 0, -1], atol=1e-12)
    assert np.linalg.norm(vertex_normals(np.zeros((3, 3)), np.array([[0, 1, 2]])), axis=1).max() == 0  # no NaN


def test_emoca_camera_and_crop_match_skimage():
    """The reference's crop: a box around the face mapped onto 0..223 by skimage's similarity; x_c = s(X + tx),
    y_c = -s(Y + ty) in crop NDC, times 224 (sic); then the crop's inverse back to the aligned image."""
    from skimage.transform import estimate_transform

    left, top, side = 150.3, 171.9, 260.4
    src = np.array([[left, top], [left, top + side], [left + side, top]])
    crop = estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]])).params
    camera = np.array([7.5, 0.01, -0.02])
    points = np.array([[0.0, 0.0, 0.1], [0.05, -0.03, 0.0], [-0.07, 0.08, -0.05]])
    placement = emoca_placement(points, camera, crop)
    x_c = camera[0] * (points[:, 0] + camera[1])
    y_c = -camera[0] * (points[:, 1] + camera[2])
    in_crop = np.column_stack([(x_c / 2 + 0.5) * 224, (y_c / 2 + 0.5) * 224])
    back = estimate_transform("similarity", src, np.array([[0, 0], [0, 223], [223, 0]])).inverse(in_crop)
    np.testing.assert_allclose(placement.pixels, back, atol=1e-9)
    np.testing.assert_allclose(placement.depth, camera[0] * points[:, 2])     # nearer = larger s·Z
    np.testing.assert_array_equal(placement.view_vertices, points)           # world normals: no turn by the crop
    assert CROP_SIZE == 224


def test_a_sphere_through_the_emoca_camera_lands_where_the_formulas_put_it():
    from skimage.transform import SimilarityTransform

    crop = SimilarityTransform(scale=224 / 300.0, translation=(-40.0, -25.0)).params
    camera = np.array([6.0, 0.02, -0.01])
    radius = 0.08
    vertices, faces = _sphere(radius, 48, 96)
    image = render_normals(emoca_placement(vertices, camera, crop), faces, 512)
    centre_crop = np.array([(camera[0] * camera[1] / 2 + 0.5) * 224, (-camera[0] * camera[2] / 2 + 0.5) * 224])
    centre = SimilarityTransform(crop).inverse(centre_crop)[0]
    radius_px = camera[0] * radius / 2 * 224 * 300 / 224
    rows, cols = np.mgrid[0:512, 0:512]
    rho = np.hypot(cols + 0.5 - centre[0], rows + 0.5 - centre[1])
    covered = (image != 127).any(-1)
    assert covered[rho < radius_px - 1].all() and not covered[rho > radius_px + 0.5].any()


@pytest.mark.parametrize("camera, crop, message", [
    ([-7.0, 0, 0], np.eye(3), "not positive"),
    ([7.0, 0, 0], np.zeros((3, 3)), "not an invertible"),
    ([np.nan, 0, 0], np.eye(3), "NaN"),
])
def test_bad_cameras_are_refused(camera, crop, message):
    with pytest.raises(InvalidInputError, match=message):
        emoca_placement(np.zeros((3, 3)), np.array(camera), crop)


def test_bad_geometry_is_refused():
    vertices, faces = _sphere(rings=8, segments=8)
    placement = framed_placement(vertices, _frame())
    broken = Placement(placement.view_vertices, np.where(placement.pixels > 70, np.nan, placement.pixels),
                       placement.depth)
    with pytest.raises(InvalidInputError, match="NaN"):
        render_normals(broken, faces, SIZE)
    with pytest.raises(InvalidInputError, match="size"):
        render_normals(placement, faces, 8)
