"""FLAME 2020 in torch: the model a user supplies (``generic_model.pkl``), its LBS forward and SMIRK's eyelids.

The forward is FLAME's linear blend skinning as EMOCA and SMIRK run it (docs/pose_hints.md, 'LBS'):
1. ``v_s = v_T + S·[shape 300, expression 50]`` (shape components 0..299, expression components 300..349);
2. joints ``J = J_regressor·v_s``;
3. the 15-value pose [global 3, neck 3 (= 0), jaw 3, eyes 6 (= 0)] to rotation matrices by Rodrigues'
   formula (angle ``|r + 1e-8|``, as the references compute it);
4. pose blendshapes ``v_p = v_s + P·vec(R_1..R_4 - I)``;
5. the rigid chain along ``kintree_table`` and skinning ``v = Σ_j w_j·G_j·[v_p; 1]``, ``G_j`` the posed joint
   transform less its rest position.
SMIRK's eyelid blendshapes (``l_eyelid.npy``, ``r_eyelid.npy``; ``v += l·e_0 + r·e_1``) are added *after* skinning,
so they do not turn with the head (exactly as SMIRK does), when the user has them.

The faces are stored wound outward (a file wound the other way is turned round at load), so normals computed the
usual way point out of the head.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import CorruptWeightsError
from .face_parameters import N_SHAPE, FaceParameters
from .flame_file import FLAME_SOURCE, as_array, read_pickle

log = logging.getLogger(__name__)

N_EXPRESSION = 50          # SMIRK's expression components (FLAME's 300..349)
N_JOINTS = 5               # global, neck, jaw, left eye, right eye
EXPRESSION_OFFSET = 300    # FLAME 2020: shapedirs[..., :300] shape, [..., 300:400] expression
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
EYELID_FILES = ("l_eyelid.npy", "r_eyelid.npy")
EYELID_SOURCE = ("SMIRK's repository (https://github.com/georgeretsi/smirk, assets/l_eyelid.npy and "
                 "assets/r_eyelid.npy); put both beside generic_model.pkl")
FLAME_2020_VERTICES = 5023


@dataclass(frozen=True)
class FlameArrays:
    """FLAME's arrays as read from the file, checked (float64 / int64 numpy)."""

    v_template: np.ndarray     # [V, 3]
    faces: np.ndarray          # [F, 3], wound outward
    shapedirs: np.ndarray      # [V, 3, 350]: shape 300, then expression 50
    posedirs: np.ndarray       # [V, 3, 36]
    J_regressor: np.ndarray    # [5, V]
    weights: np.ndarray        # [V, 5]
    parents: np.ndarray        # [5], parents[0] = -1


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Σ (v0-c)·((v1-c)×(v2-c)) / 6 about the centroid: positive when the faces wind outward (counter-clockwise
    seen from outside). Translation-invariant, and near the enclosed volume for a mesh with small holes (FLAME's
    neck and mouth)."""
    corners = vertices[faces] - vertices.mean(0)
    return float(np.einsum("fi,fi->f", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6.0)


def outward_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The faces, wound outward: reversed when the mesh's signed volume is negative."""
    return faces if signed_volume(vertices, faces) >= 0 else np.ascontiguousarray(faces[:, ::-1])


def read_flame_arrays(path: str | os.PathLike) -> FlameArrays:
    """Read and check FLAME's arrays from ``generic_model.pkl`` (see ``flame_file`` for how it is unpickled)."""
    path = Path(path)
    data = read_pickle(path)
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CorruptWeightsError(f"The FLAME model {path} has no {', '.join(missing)} (it has: "
                                  f"{', '.join(sorted(map(str, data)))}); it should be FLAME 2020's generic_model.pkl "
                                  f"from {FLAME_SOURCE}.")
    arrays = {key: as_array(data[key], key, path) for key in REQUIRED_KEYS}

    def bad(message: str) -> CorruptWeightsError:
        return CorruptWeightsError(f"The FLAME model {path}: {message}; it should be FLAME 2020's generic_model.pkl "
                                   f"from {FLAME_SOURCE}.")

    try:
        numbers = {key: np.asarray(value, np.float64) for key, value in arrays.items()}
    except (TypeError, ValueError) as exc:
        raise bad(f"an array is not numeric ({exc})") from None
    v_template = numbers["v_template"]
    if v_template.ndim != 2 or v_template.shape[1] != 3 or len(v_template) < 4:
        raise bad(f"v_template has shape {v_template.shape}, expected [V, 3]")
    count = len(v_template)
    expected = {"shapedirs": (count, 3, None), "posedirs": (count, 3, 36), "J_regressor": (N_JOINTS, count),
                "weights": (count, N_JOINTS), "kintree_table": (2, N_JOINTS), "f": (None, 3)}
    for key, shape in expected.items():
        got = numbers[key].shape
        if len(got) != len(shape) or any(want is not None and have != want for have, want in zip(got, shape)):
            shown = tuple("*" if want is None else want for want in shape)
            raise bad(f"{key} has shape {got}, expected {shown} for {count} vertices")
    if numbers["shapedirs"].shape[2] < EXPRESSION_OFFSET + N_EXPRESSION:
        raise bad(f"shapedirs has {numbers['shapedirs'].shape[2]} components; FLAME 2020 has 400 (300 shape, "
                  "100 expression) and SMIRK needs the first 300 and 50")
    for key, value in numbers.items():
        if not np.isfinite(value).all():
            raise bad(f"{key} contains NaN or infinite values")
    faces = numbers["f"]
    if len(faces) == 0 or (faces != np.round(faces)).any() or faces.min() < 0 or faces.max() >= count:
        raise bad(f"f must hold vertex indices 0..{count - 1}")
    parents = numbers["kintree_table"][0].astype(np.int64)
    parents[0] = -1                                       # stored as uint32 -1 (4294967295)
    if any(not 0 <= parents[j] < j for j in range(1, N_JOINTS)):
        raise bad(f"kintree_table's parents {parents.tolist()} are not a tree rooted at joint 0")
    if count != FLAME_2020_VERTICES:
        log.warning("Arc2Face: the FLAME model %s has %d vertices, FLAME 2020 has %d; SMIRK's parameters are made "
                    "for FLAME 2020.", path, count, FLAME_2020_VERTICES)
    shapedirs = numbers["shapedirs"]
    return FlameArrays(
        v_template=v_template, faces=outward_faces(v_template, faces.astype(np.int64)),
        shapedirs=np.concatenate([shapedirs[:, :, :N_SHAPE],
                                  shapedirs[:, :, EXPRESSION_OFFSET:EXPRESSION_OFFSET + N_EXPRESSION]], axis=2),
        posedirs=numbers["posedirs"], J_regressor=numbers["J_regressor"], weights=numbers["weights"],
        parents=parents)


def read_eyelids(folder: Path, count: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """SMIRK's eyelid blendshapes beside the model, or None when neither file is there."""
    paths = [folder / name for name in EYELID_FILES]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        have, lack = (paths[0], paths[1]) if present[0] else (paths[1], paths[0])
        raise CorruptWeightsError(f"Found {have} but not {lack}: SMIRK's eyelids come as a pair; get both from "
                                  f"{EYELID_SOURCE} (or remove {have.name} to render without eyelids).")
    arrays = []
    for path in paths:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptWeightsError(f"Cannot read {path} ({exc}); get it again from {EYELID_SOURCE}.") from None
        if array.shape != (count, 3) or not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise CorruptWeightsError(f"{path} holds {array.dtype} {array.shape}, expected finite float ({count}, 3) "
                                      f"for this FLAME model; get it from {EYELID_SOURCE}.")
        arrays.append(array.astype(np.float64))
    return arrays[0], arrays[1]


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis-angle -> [..., 3, 3] rotation matrices (angle = |r + 1e-8|, as EMOCA/SMIRK compute it)."""
    angle = torch.norm(axis_angle + 1e-8, dim=-1, keepdim=True)
    axis = axis_angle / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(axis.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    sin, cos = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    return eye + sin * cross + (1 - cos) * cross @ cross


class FlameModel(nn.Module):
    """FLAME 2020's LBS, with SMIRK's 300 shape and 50 expression components and optional eyelid blendshapes."""

    def __init__(self, arrays: FlameArrays, eyelids: Optional[tuple[np.ndarray, np.ndarray]] = None,
                 source: str = "FLAME") -> None:
        super().__init__()
        self.source = source
        f32 = torch.float32
        self.register_buffer("v_template", torch.tensor(arrays.v_template, dtype=f32))
        self.register_buffer("faces", torch.tensor(arrays.faces, dtype=torch.long))
        self.register_buffer("shapedirs", torch.tensor(arrays.shapedirs, dtype=f32))
        self.register_buffer("posedirs", torch.tensor(arrays.posedirs.reshape(-1, 36).T.copy(), dtype=f32))
        self.register_buffer("J_regressor", torch.tensor(arrays.J_regressor, dtype=f32))
        self.register_buffer("lbs_weights", torch.tensor(arrays.weights, dtype=f32))
        self.parents = [int(p) for p in arrays.parents]
        self.has_eyelids = eyelids is not None
        if eyelids is not None:
            self.register_buffer("eyelids", torch.tensor(np.stack(eyelids), dtype=f32))   # [2, V, 3]

    @property
    def vertex_count(self) -> int:
        return self.v_template.shape[0]

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor, jaw: torch.Tensor,
                eyelids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed vertices [N, V, 3] and joints [N, 5, 3], in FLAME's world frame (metres, +y up, face toward +z)."""
        device, dtype = self.v_template.device, self.v_template.dtype
        pose, jaw = pose.to(device, dtype), jaw.to(device, dtype)
        count = pose.shape[0]
        v_shaped = self._shaped(shape, expression)
        joints = torch.einsum("jv,nvk->njk", self.J_regressor, v_shaped)
        zero = torch.zeros_like(pose)
        full_pose = torch.cat([pose, zero, jaw, zero, zero], dim=1).reshape(count, N_JOINTS, 3)
        rotations = rodrigues(full_pose)                                        # [N, 5, 3, 3]
        eye = torch.eye(3, dtype=dtype, device=device)
        pose_feature = (rotations[:, 1:] - eye).reshape(count, -1)              # [N, 36]
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(count, -1, 3)
        world, posed_joints = self._rigid_chain(rotations, joints)
        skinning = torch.einsum("vj,njab->nvab", self.lbs_weights, world)       # [N, V, 4, 4]
        vertices = (skinning[..., :3, :3] @ v_posed[..., None])[..., 0] + skinning[..., :3, 3]
        if eyelids is not None and self.has_eyelids:
            eyelids = eyelids.to(device, dtype)
            vertices = (vertices + eyelids[:, 0, None, None] * self.eyelids[0]
                        + eyelids[:, 1, None, None] * self.eyelids[1])
        return vertices, posed_joints

    def _shaped(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        betas = torch.cat([shape, expression], dim=1).to(self.v_template.device, self.v_template.dtype)
        return self.v_template + torch.einsum("nl,vkl->nvk", betas, self.shapedirs)

    def rest_joints(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[N, 5, 3] joints of the shaped, unposed head (``J_regressor · v_shaped``)."""
        return torch.einsum("jv,nvk->njk", self.J_regressor, self._shaped(shape, expression))

    def _rigid_chain(self, rotations: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per joint, the 4x4 map from rest to posed positions (``G_j`` less the rest joint), and the posed joints."""
        count = joints.shape[0]
        chain = []
        for j, parent in enumerate(self.parents):
            local = torch.zeros(count, 4, 4, dtype=joints.dtype, device=joints.device)
            local[:, :3, :3] = rotations[:, j]
            local[:, :3, 3] = joints[:, j] - (joints[:, parent] if parent >= 0 else 0)
            local[:, 3, 3] = 1
            chain.append(local if parent < 0 else chain[parent] @ local)
        world = torch.stack(chain, dim=1)                                        # [N, 5, 4, 4]
        posed_joints = world[..., :3, 3].clone()
        rest = (world[..., :3, :3] @ joints[..., None])[..., 0]
        world = world.clone()
        world[..., :3, 3] = world[..., :3, 3] - rest
        return world, posed_joints

    def vertices_of(self, params: FaceParameters) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices and joints of a FaceParameters batch (eyelids applied when this model has them)."""
        if not self.has_eyelids and bool((params.eyelids != 0).any()):
            log.warning("Arc2Face: the FLAME parameters close the eyelids, but SMIRK's l_eyelid.npy/r_eyelid.npy are "
                        "not beside generic_model.pkl, so the rendered eyelids stay open (%s).", EYELID_SOURCE)
        with torch.no_grad():
            return self(params.shape, params.expression, params.pose, params.jaw, params.eyelids)


def load_flame(path: str | os.PathLike) -> FlameModel:
    """FLAME from ``generic_model.pkl``, with SMIRK's eyelids if ``l_eyelid.npy`` and ``r_eyelid.npy`` lie beside it."""
    path = Path(path)
    arrays = read_flame_arrays(path)
    eyelids = read_eyelids(path.parent, len(arrays.v_template))
    return FlameModel(arrays, eyelids, source=str(path)).eval()
