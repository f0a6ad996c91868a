"""End-effector displacement -> joint targets: damped-least-squares IK on the grip site.

The IK solves position and orientation together (gripper pointing straight down, fingers closing along the
world y axis) so the hand never tilts, and pulls the one redundant degree of freedom (the elbow) towards a
home posture in the Jacobian's null space so that the arm's shape does not drift over an episode.
It works on its own ``MjData`` so solving never disturbs the simulated state.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from imitlab.core.scalars import norm

#: Grip-site orientation the IK holds: z (approach axis) down, y (finger axis) along -world y.
DOWN = np.diag([1.0, -1.0, -1.0])
#: Arm posture the null-space term pulls towards (Panda-style "ready" pose, gripper over the table).
HOME_QPOS = np.array([0.0, 0.0, 0.0, -1.5708, 0.0, 1.5708, 0.0])
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))


def _rotation_error(xmat: np.ndarray) -> list[float]:
    """Small-angle rotation (axis * angle, world frame) taking the flat row-major 3x3 ``xmat`` to ``DOWN``:
    0.5 * sum_i rot_i x down_i. DOWN's columns are +x, -y, -z, so each cross product reduces to a signed pick of
    two entries; Python floats, because numpy's per-element indexing costs more here than the arithmetic."""
    r10, r01, r20, r02, r21, r12 = (float(xmat[i]) for i in (3, 1, 6, 2, 7, 5))
    return [0.5 * (r21 - r12), 0.5 * (r20 + r02), 0.5 * (-r10 - r01)]


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box the commanded grip-site position is clipped to, metres in the world frame."""

    low: np.ndarray
    high: np.ndarray

    def clip(self, pos: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(pos, self.low), self.high)  # np.clip's numbers, less dispatch


class IKController:
    """Damped least squares over the 7 arm joints, 6D task (position + orientation) plus a null-space posture."""

    def __init__(self, model: mujoco.MjModel, site: str = "grip", damping: float = 0.03,
                 posture_gain: float = 0.2, iterations: int = 2, tolerance: float = 2e-4):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        self.qpos_adr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.dof_adr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.q_low = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 0]
        self.q_high = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 1]
        self._damping = damping**2 * np.eye(6)
        self.posture_gain = posture_gain
        self.iterations = iterations
        self.tolerance = tolerance
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._jac = np.zeros((6, len(ARM_JOINTS)), order="F")  # the layout the gathers gave: BLAS rounds by layout
        self._err = np.zeros(6)

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grip-site position and rotation matrix at arm configuration ``q`` (fingers at their model default)."""
        self._forward(q)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def _forward(self, q: np.ndarray) -> None:
        """Kinematics (and the com frames ``mj_jacSite`` needs) of this solver's data at arm configuration ``q``."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def solve(self, q: np.ndarray, target: np.ndarray, iterations: int | None = None) -> np.ndarray:
        """Joint configuration near ``q`` that puts the grip site at ``target`` pointing down (within limits).

        This runs every control step, so it works in preallocated buffers and skips numpy's wrappers where a
        plain operation gives the same numbers (``np.linalg.norm`` is ``sqrt(x.dot(x))``, ``np.clip`` is
        ``minimum(maximum())``). The linear solves stay numpy's: scipy's LAPACK is another OpenBLAS build, whose
        kernels round differently from numpy's on some CPUs (AVX-512 Xeons). The arithmetic and the memory layouts
        are the same (BLAS rounds by layout), so trajectories are bit-identical to the plain version's
        (``test_ik_equals_plain_numpy_bit_for_bit``).
        """
        q = np.array(q, dtype=np.float64)
        err, jac = self._err, self._jac
        site_xpos, site_xmat = self.data.site_xpos[self.site_id], self.data.site_xmat[self.site_id]
        for _ in range(self.iterations if iterations is None else iterations):
            self._forward(q)
            np.subtract(target, site_xpos, out=err[:3])
            err[3:] = _rotation_error(site_xmat)
            if norm(err) < self.tolerance:
                break
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac[:3] = self._jacp[:, self.dof_adr]
            jac[3:] = self._jacr[:, self.dof_adr]
            jjt = jac @ jac.T
            posture = self.posture_gain * (HOME_QPOS - q)
            # The posture step is projected with the undamped pseudo-inverse: it must not leak into the task.
            posture -= jac.T @ np.linalg.solve(jjt, jac @ posture)
            dq = jac.T @ np.linalg.solve(jjt + self._damping, err) + posture
            q = np.minimum(np.maximum(q + dq, self.q_low), self.q_high)
        return q
