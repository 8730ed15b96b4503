"""The generic head (arc2face_core.pose.generic_head) and its renders (pose.render), checked against independent
computations: the mesh's own topology, published adult measurements, closed-form geometry (scipy's rotations, the
eyeball's sphere), FFHQ's image_align written out here, and OpenCV's image rotation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation

from arc2face_core.errors import InvalidInputError
from arc2face_core.faces.head_pose import rotation_from_angles
from arc2face_core.pose.generic_head import build_generic_head
from arc2face_core.pose.render import generic_normal_maps, render_generic_head, render_normal_map

UP = np.array([1.0, -1.0, 1.0])      # insightface's frame (y down) <-> the hint's normals (y up)


def euler(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch) by scipy (intrinsic Z-Y-X), independent of the engine's own formula."""
    return Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()


def ffhq_map(lm: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 map image_align makes from 68 landmarks (x, y down) onto its output square, written out from FFHQ's
    definition: e = right eye - left eye, m = mouth centre - eye centre, c = eye centre + 0.1 m, x along e - rot90(m)
    (rot90(m) = (-m_y, m_x)) with |x| = max(2 |e|, 1.8 |m|), y = rot90(x); the square c - x - y (top left) ... is
    the output, top left at (0, 0), size pixels wide."""
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    e, m = eye_right - eye_left, (lm[48] + lm[54]) / 2 - (eye_left + eye_right) / 2
    x = e - np.array([-m[1], m[0]])
    x *= max(2 * np.hypot(*e), 1.8 * np.hypot(*m)) / np.hypot(*x)
    y = np.array([-x[1], x[0]])
    c = (eye_left + eye_right) / 2 + 0.1 * m
    corner = c - x - y
    linear = np.linalg.inv(np.column_stack([2 * x, 2 * y])) * size     # (2x, 2y) span the square
    return np.column_stack([linear, -linear @ corner])


def projected(points: np.ndarray, rotation: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Output pixels of head points (insightface's frame) turned by ``rotation`` and placed by ``frame``."""
    turned = points @ rotation.T
    return turned[:, :2] @ frame[:, :2].T + frame[:, 2]


def normals_of(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255 * 2 - 1


def at(image: np.ndarray, point) -> np.ndarray:
    return image[int(math.floor(point[1])), int(math.floor(point[0]))]


@pytest.fixture(scope="module")
def head():
    return build_generic_head()


@pytest.fixture(scope="module")
def frontal():
    return render_generic_head()


def eyeballs(head) -> list[tuple[np.ndarray, float]]:
    """(centre, radius) of the two eyeball meshes (image left first), from their vertices, in insightface's frame."""
    out = []
    for name in ("right_eye", "left_eye"):
        v = head.vertices[np.unique(head.faces[head.parts[name]])]
        centre = (v.max(0) + v.min(0)) / 2
        out.append((centre, float(np.linalg.norm(v - centre, axis=1).mean())))
    return out


def own(head, points: np.ndarray) -> np.ndarray:
    """Points in the frame the head was built in (mm, y up, the face looking along +z): where its sizes are measured."""
    return head.to_own(points)


# ------------------------------------------------------------------------------------------------------ mesh

def test_every_part_is_one_closed_outward_surface(head):
    up = head.vertices * UP                                   # FLAME's frame: y up, right-handed
    assert set(head.parts) == {"head", "right_eye", "left_eye"}
    for name, part in head.parts.items():
        faces = head.faces[part]
        edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
        unique, uses = np.unique(edges, axis=0, return_counts=True)
        assert (uses == 2).all(), name                                       # closed: no border, no fin
        vertices = np.unique(faces)
        assert len(vertices) - len(unique) + len(faces) == 2, name           # Euler characteristic 2: a sphere
        # Each directed edge once: the faces agree on one winding.
        directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        assert len(np.unique(directed, axis=0)) == len(directed), name
        corners = up[faces]
        volume = np.einsum("fi,fi->f", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6
        assert volume > 0, name                                              # wound outward
        # One connected piece.
        rows, cols = np.searchsorted(vertices, unique[:, 0]), np.searchsorted(vertices, unique[:, 1])
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(vertices),) * 2)
        assert connected_components(graph, directed=False)[0] == 1, name


# ----------------------------------------------------------------------------------------- proportions
# Adult ranges typed from the sources named in docs/pose_without_emoca.md ("The generic head: sources"): roughly the
# 5th percentile of women to the 95th of men, so that the check is about being an adult head, not a particular one.
HEAD_BREADTH = (139.0, 166.0)        # ANSUR II (Gordon et al. 2014): head breadth
HEAD_LENGTH = (176.0, 209.0)         # ANSUR II: head length (glabella to the back of the head)
HEAD_CIRCUMFERENCE = (525.0, 605.0)  # ANSUR II: head circumference (over the brow ridges)
NECK_CIRCUMFERENCE = (300.0, 440.0)  # ANSUR II: neck circumference
PUPILS = (54.0, 74.0)                # Dodgson 2004: adult interpupillary distance (mean 63.4, SD 3.8)
EYEBALL = (22.0, 26.0)               # Bekerman et al. 2014: adult eyeball diameters (~24 mm)
FACE_HEIGHT = (100.0, 135.0)         # Farkas 1994: face height n-gn
NOSE_HEIGHT = (44.0, 62.0)           # Farkas 1994: nose height n-sn
MOUTH_WIDTH = (44.0, 60.0)           # Farkas 1994: mouth width ch-ch
EAR_LENGTH = (52.0, 72.0)            # ANSUR II / Farkas 1994: ear length


def midline(head) -> np.ndarray:
    """The head's vertices within 0.8 mm of the midline, in its own frame."""
    v = own(head, head.vertices[np.unique(head.faces[head.parts["head"]])])
    return v[np.abs(v[:, 0]) < 0.8]


def section_perimeter(head, height: float) -> float:
    """Perimeter of the convex hull of the head's cross-section by the plane y = height (a tape round it)."""
    v = own(head, head.vertices)
    corners = v[head.faces[head.parts["head"]]]
    points = []
    for a, b in ((0, 1), (1, 2), (2, 0)):
        p, q = corners[:, a], corners[:, b]
        crossing = (p[:, 1] - height) * (q[:, 1] - height) < 0
        t = (height - p[crossing, 1]) / (q[crossing, 1] - p[crossing, 1])
        points.append((p[crossing] + t[:, None] * (q[crossing] - p[crossing]))[:, [0, 2]])
    return float(ConvexHull(np.vstack(points)).area)       # a 2D hull's "area" is its perimeter


def test_proportions_are_an_adult_heads(head):
    v = own(head, head.vertices[np.unique(head.faces[head.parts["head"]])])
    line = midline(head)
    glabella = line[(line[:, 1] > 5) & (line[:, 1] < 45)][:, 2].max()
    back = v[v[:, 1] > -40][:, 2].min()
    assert HEAD_LENGTH[0] <= glabella - back <= HEAD_LENGTH[1]
    crown = v[v[:, 1] > 20]
    assert HEAD_BREADTH[0] <= np.ptp(crown[:, 0]) <= HEAD_BREADTH[1]
    brow = line[(line[:, 1] > 5) & (line[:, 1] < 45)]
    brow_height = brow[np.argmax(brow[:, 2]), 1]
    assert HEAD_CIRCUMFERENCE[0] <= section_perimeter(head, brow_height + 5) <= HEAD_CIRCUMFERENCE[1]
    assert NECK_CIRCUMFERENCE[0] <= section_perimeter(head, -150.0) <= NECK_CIRCUMFERENCE[1]

    (right, r1), (left, r2) = eyeballs(head)
    assert PUPILS[0] <= np.linalg.norm(left - right) <= PUPILS[1]
    assert EYEBALL[0] <= 2 * r1 <= EYEBALL[1] and EYEBALL[0] <= 2 * r2 <= EYEBALL[1]

    # Face: nasion = the deepest midline point between the eyes; gnathion = the chin's lowest front point;
    # subnasale = the deepest midline point between the nose tip and the mouth.
    root = line[(line[:, 1] > -5) & (line[:, 1] < 25) & (line[:, 2] > 0)]
    nasion = root[np.argmin(root[:, 2])]
    chin = line[(line[:, 2] > 0) & (line[:, 1] < -80)]
    gnathion = chin[np.argmin(chin[:, 1])]
    assert FACE_HEIGHT[0] <= nasion[1] - gnathion[1] <= FACE_HEIGHT[1]
    nose = line[(line[:, 1] < nasion[1]) & (line[:, 1] > -55)]
    tip = nose[np.argmax(nose[:, 2])]
    under = line[(line[:, 1] < tip[1]) & (line[:, 1] > tip[1] - 25) & (line[:, 2] > 0)]
    subnasale = under[np.argmin(under[:, 2] + 0.0 * under[:, 1])]
    assert NOSE_HEIGHT[0] <= nasion[1] - subnasale[1] <= NOSE_HEIGHT[1]

    # Ears: the parts standing out beyond the skull's side behind the cheek.
    ears = v[(np.abs(v[:, 0]) > 80.0) & (v[:, 2] < -40.0)]
    for side in (-1, 1):
        ear = ears[np.sign(ears[:, 0]) == side]
        assert EAR_LENGTH[0] <= np.ptp(ear[:, 1]) + 2 * 4.0 <= EAR_LENGTH[1]     # + the rim hidden in the fillet

    assert MOUTH_WIDTH[0] <= mouth_width(head) <= MOUTH_WIDTH[1]


def mouth_width(head, step: float = 0.25) -> float:
    """From a depth map of the mouth seen from the front (the pack's rasteriser, tested on its own): the slit is the
    row where the surface lies well behind the lips just above and below it; its width from corner to corner."""
    from arc2face_core.pose.rasterizer import rasterize

    v = own(head, head.vertices)
    lips = (np.abs(v[:, 0]) < 45) & (v[:, 1] < -40) & (v[:, 1] > -90) & (v[:, 2] > -20)
    faces = head.faces[head.parts["head"]]
    faces = faces[lips[faces].all(1)]
    screen = np.column_stack([(v[:, 0] + 45.0) / step, (-40.0 - v[:, 1]) / step, v[:, 2]])   # x, y down, depth
    fragments = rasterize(screen, faces, int(50 / step), int(90 / step))
    depth = np.where(fragments.covered, fragments.depth, np.nan)
    rows = 12                                                  # 3 mm above and below
    with np.errstate(invalid="ignore"):                        # NaN (nothing drawn) compares False
        deep = (depth[rows:-rows] < depth[:-2 * rows] - 1.5) & (depth[rows:-rows] < depth[2 * rows:] - 1.5)
    columns = np.flatnonzero(deep.any(0))
    return (columns.max() - columns.min() + 1) * step


# ------------------------------------------------------------------------------------------------- renders

def test_frontal_render_basics(frontal):
    image = frontal.image
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    covered = frontal.covered
    assert (image[~covered] == 127).all() and 0.35 < covered.mean() < 0.6
    normals = normals_of(image[covered])
    assert np.linalg.norm(normals, axis=1).max() <= 1.0 + 4 / 255          # blended unit normals: |n| <= 1
    assert abs(normals[:, 0].mean()) < 0.02
    lm = frontal.landmarks_2d
    cheek = lambda i: lm[i] + 12 * (lm[30] - lm[i]) / np.linalg.norm(lm[30] - lm[i])     # noqa: E731
    assert at(image, cheek(14))[0] > 190 and at(image, cheek(2))[0] < 65           # image right is red
    crown = (lm[19] + lm[24]) / 2 - [0, 150]
    assert at(image, crown)[1] > 190                                                 # green up
    # A whole head: the neck down to the frame's bottom edge, not its corners.
    assert covered[-1, 256] and not covered[-1, [0, -1]].any()


def test_the_silhouette_is_one_piece_with_the_ears_joined(frontal):
    covered = frontal.covered
    _, pieces = ndimage.label(covered)
    _, gaps = ndimage.label(~covered)
    assert pieces == 1 and gaps == 1                 # no ear floats free, no background between ear and head
    # The ears stand out beside the face: below the eyes the silhouette is wider than the skull is anywhere above.
    eyes = int(frontal.landmarks_2d[36:48, 1].mean())
    rows = np.flatnonzero(covered.any(1))
    width = np.array([np.ptp(np.flatnonzero(covered[r])) for r in rows])
    assert width[(rows > eyes + 10) & (rows < eyes + 130)].max() > width[rows < eyes].max() + 30


def test_eyeballs_show_through_the_lid_openings(head, frontal):
    """Inside each opening the hint is the eyeball's sphere: n = (p - centre) / radius, seen from the front."""
    frame = ffhq_map(head.landmarks[:, :2], 512)
    normals = normals_of(frontal.image)
    for centre, radius in eyeballs(head):
        seen = 0
        for dx in np.linspace(-0.6, 0.6, 7) * radius:
            for dy in (-1.0, 0.0, 1.0):
                p = centre + [dx, dy, math.sqrt(radius ** 2 - dx ** 2 - dy ** 2)]     # facing the camera
                pixel = projected(p[None], np.eye(3), frame)[0]
                expected = (p - centre) / radius * UP                                # the hint's y is up
                seen += np.abs(at(normals, pixel) - expected).max() < 0.04
        assert seen >= 19, seen                      # 21 samples across the opening


def test_framing_follows_image_align_over_the_pose_grid(head):
    """Over yaw -60..60 and pitch -30..30: the render's landmarks are image_align's targets for the turned head's
    own landmarks, and the image shows the eyes and the mouth there."""
    for yaw in (-60, -30, 0, 30, 60):
        for pitch in (-30, 0, 30):
            rotation = euler(pitch, yaw, 0)
            render = render_generic_head(None, rotation_from_angles(pitch, yaw, 0), 256)
            frame = ffhq_map((head.landmarks @ rotation.T)[:, :2], 256)
            expected = projected(head.landmarks, rotation, frame)
            np.testing.assert_allclose(render.landmarks_2d, expected, atol=1e-6)
            eye_left, eye_right = expected[36:42].mean(0), expected[42:48].mean(0)
            assert np.hypot(*(eye_right - eye_left)) * 2 <= 128 + 1e-6           # FFHQ: |x| >= 2 eye distances
            normals = normals_of(render.image)
            # Each eye facing the camera enough to be seen: its cornea's apex (normal = the head's forward
            # direction) where the eyeball's centre + radius * forward lands.
            forward = (rotation @ [0.0, 0.0, 1.0]) * UP
            for centre, radius in eyeballs(head):
                near = np.sign(centre[0]) == np.sign(yaw)     # the eye on the side the nose turns to
                if abs(yaw) > 30 and not (near and pitch == 0):
                    continue
                apex = projected((centre + [0.0, 0.0, radius])[None], rotation, frame)[0]
                assert np.abs(at(normals, apex) - forward).max() < 0.12, (yaw, pitch)
            if abs(yaw) <= 30 and pitch == 0:
                # The mouth: going down through the slit's middle the normals turn from the upper lip's underside
                # (facing down) to the lower lip's top (facing up), at the slit's projected height.
                slit = projected(((head.landmarks[62] + head.landmarks[66]) / 2)[None], rotation, frame)[0]
                column = normals[:, int(slit[0]), 1]
                rows = np.arange(int(slit[1]) - 5, int(slit[1]) + 6)
                down = rows[column[rows] < -0.25]
                up = rows[column[rows] > 0.25]
                assert len(down) and len(up) and down.max() < up.min(), (yaw, column[rows].round(2))
                assert abs((down.max() + up.min()) / 2 + 0.5 - slit[1]) <= 2.0


def test_the_scalp_stays_in_the_frame(head):
    """Where the turned head's highest point lands inside FFHQ's square (worked out here from its vertices), the
    render shows the whole crown: its first covered row is that point's. A head that looks straight or up keeps its
    crown in the frame at every yaw; one that looks down far enough loses it, as an aligned photo of it would."""
    vertices = head.vertices[np.unique(head.faces[head.parts["head"]])]
    inside = 0
    for yaw in (-60, -30, 0, 30, 60):
        for pitch in (-30, -10, 0, 15, 30):
            rotation = euler(pitch, yaw, 0)
            frame = ffhq_map((head.landmarks @ rotation.T)[:, :2], 256)
            top = projected(vertices, rotation, frame)[:, 1].min()
            if pitch >= 0:
                assert top > 4.0, (yaw, pitch, top)
            if top > 1.0:
                inside += 1
                covered = render_generic_head(None, rotation_from_angles(pitch, yaw, 0), 256).covered
                first = np.flatnonzero(covered.any(1))[0]
                assert abs(first + 0.5 - top) <= 1.0, (yaw, pitch, first, top)
    assert inside >= 16


# ------------------------------------------------------------------------------------------ expression

def test_the_jaw_opens_with_jaw_open(head):
    jaw = np.array([0.3, 0.0, 0.0])
    vertices, landmarks = head.posed(jaw, None)
    # Up to the chin the lower face turns about the jaw joints' axis (scipy's rotation); the forehead, eyes and
    # nose do not move.
    from arc2face_core.pose.head_rig import JAW_PIVOT

    chin = own(head, head.landmarks[8])
    expected = (chin - JAW_PIVOT) @ Rotation.from_rotvec(jaw).as_matrix().T + JAW_PIVOT
    np.testing.assert_allclose(own(head, landmarks[8]), expected, atol=1e-9)
    assert expected[1] < chin[1] - 15                                     # 0.3 rad drops the chin ~2 cm
    upper = own(head, head.vertices)[:, 1] > -30
    np.testing.assert_array_equal(vertices[upper], head.vertices[upper])
    # Rendered: the lips part (the mouth's middle shows the pocket behind them), the upper face is unchanged.
    closed, opened = render_generic_head(), render_generic_head(jaw=jaw)
    mouth = closed.landmarks_2d[[62, 66]].mean(0)
    assert (opened.image[:200] == closed.image[:200]).all()
    gap_rows = np.flatnonzero(np.abs(opened.image[:, int(mouth[0])].astype(int) - closed.image[:, int(mouth[0])])
                              .max(-1) > 40)
    assert gap_rows.min() < mouth[1] + 4 and gap_rows.max() > mouth[1] + 30
    np.testing.assert_array_equal(render_generic_head(jaw=[0.0, 0.0, 0.0]).image, closed.image)


def test_eyelids_close_with_the_eyelid_values(head, frontal):
    """FLAME's order (left, right) is the subject's own: the left eye is at +x, on the image's right."""
    frame = ffhq_map(head.landmarks[:, :2], 512)
    (right, radius), (left, _) = eyeballs(head)
    shut = render_generic_head(eyelids=[1.0, 0.0])
    for centre, changed in ((left, True), (right, False)):
        pixel = projected((centre + [0, 0, radius])[None], np.eye(3), frame)[0]
        window = (slice(int(pixel[1]) - 6, int(pixel[1]) + 7), slice(int(pixel[0]) - 20, int(pixel[0]) + 21))
        differs = (shut.image[window] != frontal.image[window]).any(-1).mean()
        assert (differs > 0.5) if changed else (differs == 0), (changed, differs)
    # Shut: the apex of the left eyeball is under the lid (no longer the sphere's forward normal).
    pixel = projected((left + [0, 0, radius])[None], np.eye(3), frame)[0]
    assert abs(normals_of(at(shut.image, pixel))[2] - 1.0) > 0.02 or \
        np.abs(normals_of(at(shut.image, pixel)) - normals_of(at(frontal.image, pixel))).max() > 0.05


def test_expression_rows_give_one_hint_each_as_the_typed_render(frontal):
    import torch

    from arc2face_core.expression.vectors import make_expression
    from arc2face_core.pose.flame_hint import typed_face_parameters

    expression = torch.cat([make_expression(0.0), make_expression(0.25, (0.0, 1.0))])
    hints = generic_normal_maps(typed_face_parameters(10, -25, 12, expression), 128)
    assert hints.shape == (2, 128, 128, 3) and hints.dtype == np.uint8
    rotation = rotation_from_angles(10, -25, 12)
    np.testing.assert_array_equal(hints[0], render_generic_head(None, rotation, 128, roll_in_frame=True).image)
    np.testing.assert_array_equal(hints[1], render_generic_head(None, rotation, 128, roll_in_frame=True,
                                                                jaw=[0.25, 0, 0], eyelids=[0.0, 1.0]).image)
    assert (hints[0] != hints[1]).any()
    as_float = render_normal_map(None, rotation, 128, roll_in_frame=True)
    assert as_float.dtype == np.float32 and (as_float[0, 0] == np.float32(127 / 255)).all()
    np.testing.assert_array_equal(np.round(as_float * 255).astype(np.uint8), hints[0])


def test_bad_expression_values_are_refused(head):
    with pytest.raises(InvalidInputError, match="jaw must be 3 finite numbers"):
        head.posed([0.1, np.nan, 0.0])
    with pytest.raises(InvalidInputError, match="eyelids must be 2 finite numbers"):
        head.posed(None, [1.0])


# ------------------------------------------------------------------------------------------------ pose

def test_yaw_flips_x_and_mirrors_the_image():
    plus = render_generic_head(None, rotation_from_angles(0, 30, 0))
    minus = render_generic_head(None, rotation_from_angles(0, -30, 0))
    for render, sign in ((plus, 1), (minus, -1)):
        nose = normals_of(at(render.image, render.landmarks_2d[30]))
        assert sign * nose[0] > 0.2                           # yaw > 0: the nose turns to image right
        lm = render.landmarks_2d
        assert sign * (lm[30, 0] - (lm[36:42, 0].mean() + lm[42:48, 0].mean()) / 2) > 10
    mirrored = minus.image[:, ::-1].astype(np.int16)
    mirrored[..., 0] = 254 - mirrored[..., 0]                 # n_x -> -n_x (255 - c, less one for the truncation)
    both = plus.covered & minus.covered[:, ::-1]
    assert both.sum() / (plus.covered | minus.covered[:, ::-1]).sum() > 0.97
    assert np.abs(plus.image[both].astype(np.int16) - mirrored[both]).mean() < 5


def test_pitch_flips_y(frontal):
    up = render_generic_head(None, rotation_from_angles(20, 0, 0))
    down = render_generic_head(None, rotation_from_angles(-20, 0, 0))
    nose = [normals_of(at(r.image, r.landmarks_2d[30]))[1] for r in (up, frontal, down)]
    assert nose[0] > nose[1] + 0.2 > nose[2] + 0.4          # the hint's y points up: pitch > 0 looks up


def test_typed_roll_turns_the_head_in_the_image():
    roll = 15.0
    level = render_generic_head(None, rotation_from_angles(5, 10, 0), roll_in_frame=True)
    turned = render_generic_head(None, rotation_from_angles(5, 10, roll), roll_in_frame=True)
    eye_line = lambda lm: lm[42:48].mean(0) - lm[36:42].mean(0)                    # noqa: E731
    angle = lambda v: math.degrees(math.atan2(v[1], v[0]))                          # noqa: E731
    assert angle(eye_line(turned.landmarks_2d)) - angle(eye_line(level.landmarks_2d)) == pytest.approx(roll, abs=0.5)
    # The rolled render is the level one turned about the centre (clockwise on screen), normals turned with it.
    spin = cv2.getRotationMatrix2D((256.0, 256.0), -roll, 1.0)       # OpenCV: positive = counter-clockwise
    n = normals_of(cv2.warpAffine(level.image, spin, (512, 512), flags=cv2.INTER_LINEAR, borderValue=(127,) * 3))
    mask = cv2.warpAffine(level.covered.astype(np.uint8), spin, (512, 512), flags=cv2.INTER_NEAREST)
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    n[..., 0], n[..., 1] = c * n[..., 0] + s * n[..., 1], -s * n[..., 0] + c * n[..., 1]
    interior = cv2.erode(mask, np.ones((5, 5))) > 0
    assert (interior & turned.covered).sum() / interior.sum() > 0.995
    assert np.abs(normals_of(turned.image)[interior] - n[interior]).mean() < 0.03


def test_photo_framing_removes_roll():
    level = render_generic_head(None, rotation_from_angles(5, 10, 0))
    rolled = render_generic_head(None, rotation_from_angles(5, 10, 25), roll_in_frame=False)
    np.testing.assert_allclose(rolled.landmarks_2d, level.landmarks_2d, atol=1e-6)
    differs = np.abs(rolled.image.astype(np.int16) - level.image).max(-1) > 1
    assert differs.mean() < 0.003            # a few silhouette pixels from rounding, nothing else


# ------------------------------------------------------------------------------------- a photo's own shape

def test_a_photos_own_shape_shapes_the_head(frontal):
    from arc2face_core.faces.landmarks import mean_shape

    # The mean face itself: the generic head unchanged.
    same = render_generic_head(mean_shape())
    assert (np.abs(same.image.astype(int) - frontal.image).max(-1) > 1).mean() < 0.001
    # A longer lower jaw (eyes and mouth, which frame the head, unchanged): the chin comes lower.
    long_chin = mean_shape()
    long_chin[4:13, 1] += 0.05
    longer = render_generic_head(long_chin)
    np.testing.assert_allclose(longer.transform, frontal.transform, atol=0.05)
    assert (longer.image != frontal.image).any(-1).mean() > 0.01
    crown = np.abs(longer.image[:150].astype(int) - frontal.image[:150]).max(-1)
    assert (crown > 2).mean() < 0.002                                                # the crown keeps its shape
    with pytest.raises(InvalidInputError, match="68"):
        render_normal_map(np.zeros((5, 3)))
    with pytest.raises(InvalidInputError, match="NaN"):
        render_normal_map(np.full((68, 3), np.nan))


def test_the_angles_node_gives_the_generic_head_the_expressions_jaw_and_eyelids(pack):
    """Normal Map from Angles without FLAME: one hint per expression row, the generic head with that row's jaw
    opening and eyelids (what it ignored before)."""
    import torch

    from arc2face_core.expression.vectors import make_expression

    node = pack.NODE_CLASS_MAPPINGS["Arc2FaceNormalMapFromAngles"]()
    expression = torch.cat([make_expression(0.0), make_expression(0.3, (1.0, 0.0))])
    (hints,) = node.render(yaw=10.0, pitch=-5.0, roll=0.0, expression=expression)
    assert tuple(hints.shape) == (2, 512, 512, 3) and hints.dtype == torch.float32
    rotation = euler(-5, 10, 0)
    np.testing.assert_array_equal(hints[0].numpy(), render_normal_map(None, rotation, roll_in_frame=True))
    opened = render_normal_map(None, rotation, roll_in_frame=True, jaw=[np.float32(0.3), 0.0, 0.0],
                               eyelids=[1.0, 0.0])          # (the expression holds float32 values)
    np.testing.assert_array_equal(hints[1].numpy(), opened)
    assert (hints[0].numpy() != opened).any(-1).mean() > 0.005
    (alone,) = node.render(yaw=10.0, pitch=-5.0, roll=0.0)
    assert tuple(alone.shape) == (1, 512, 512, 3)
    np.testing.assert_array_equal(alone[0].numpy(), hints[0].numpy())
