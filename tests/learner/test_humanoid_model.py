"""The humanoid MJCF: structure, exact clip playback, kinematics against DeepMimic and MimicKit."""

from __future__ import annotations

import json
from pathlib import Path

import mujoco
import numpy as np
import pytest

from learner import clips as cl
from learner import humanoid as hm
from learner import quaternions as quat

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DEEPMIMIC = DATA / "deepmimic"
MIMICKIT_XML = DATA / "mimickit" / "humanoid.xml"
needs_data = pytest.mark.skipif(
    not (DEEPMIMIC / "humanoid3d.txt").is_file(), reason="../shared/data not present"
)


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return hm.load_model()


def _deepmimic_poses(name: str) -> np.ndarray:
    frames = json.loads((DEEPMIMIC / f"humanoid3d_{name}.txt").read_text())["Frames"]
    return np.asarray(frames, dtype=np.float64)[:, 1:]


def _test_poses() -> np.ndarray:
    """(F, 43) qpos to test kinematics on: real clips when present, else built-in gaits."""
    if (DEEPMIMIC / "humanoid3d_walk.txt").is_file():
        return np.concatenate(
            [hm.deepmimic_pose_to_qpos(_deepmimic_poses(n)) for n in ("walk", "run")]
        )
    built = cl.builtin_clips()
    return np.concatenate([built["walk"].qpos, built["run"].qpos])


def test_model_has_the_deepmimic_humanoid_structure(model: mujoco.MjModel) -> None:
    assert model.nbody == 14  # world + 13
    assert (model.nq, model.nv, model.nu) == (hm.NQ, hm.NV, hm.NUM_ACTUATORS)
    assert model.body_mass.sum() == pytest.approx(45.0)
    kinds = {int(mujoco.mjtJoint.mjJNT_BALL): "ball", int(mujoco.mjtJoint.mjJNT_HINGE): "hinge"}
    joints = [(model.joint(j).name, kinds[int(model.jnt_type[j])]) for j in range(1, model.njnt)]
    assert tuple(joints) == hm.JOINTS
    assert model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    idx = hm.MODEL_INDEX
    for b, name in enumerate(idx.ball_names):
        assert model.joint(name).qposadr[0] == idx.ball_qpos[b, 0]
        assert model.joint(name).dofadr[0] == idx.ball_qvel[b, 0]
    for h, name in enumerate(idx.hinge_names):
        assert model.joint(name).qposadr[0] == idx.hinge_qpos[h]
        assert model.joint(name).dofadr[0] == idx.hinge_qvel[h]
    # actuator i drives dof 6 + i: its joint's first dof plus the gear axis it turns about
    for i in range(model.nu):
        joint = model.actuator_trnid[i, 0]
        axis = int(np.argmax(np.abs(model.actuator_gear[i, :3])))
        assert model.jnt_dofadr[joint] + axis == 6 + i


def test_deepmimic_pose_round_trips_through_qpos() -> None:
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(6, hm.NQ))
    for cols in np.concatenate([[3], hm.DEEPMIMIC_INDEX.ball_qpos[:, 0]]):
        pose[:, cols : cols + 4] /= np.linalg.norm(pose[:, cols : cols + 4], axis=1, keepdims=True)
    back = hm.qpos_to_deepmimic_pose(hm.deepmimic_pose_to_qpos(pose))
    np.testing.assert_allclose(back, pose, atol=1e-12)


def _local_rotations(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """(F, nbody, 4) rotation of every body relative to its parent, read back from MuJoCo."""
    world = hm.Kinematics(model).body_quaternions(qpos)
    parents = model.body_parentid
    return quat.multiply(quat.conjugate(world[:, parents]), world)


@needs_data
@pytest.mark.parametrize("name", ["walk", "jog", "run"])
def test_playback_reproduces_the_clip_joint_rotations_exactly(
    model: mujoco.MjModel, name: str
) -> None:
    pose = _deepmimic_poses(name)
    local = _local_rotations(model, hm.deepmimic_pose_to_qpos(pose))
    to_yup = hm.YUP_TO_ZUP.T  # z-up vector v -> y-up P^T v
    index = hm.DEEPMIMIC_INDEX
    for b, joint in enumerate(index.ball_names):
        got = local[:, model.body(joint).id]
        got_yup = np.concatenate([got[:, :1], got[:, 1:] @ to_yup.T], axis=1)
        expected = quat.normalize(pose[:, index.ball_qpos[b]])
        assert np.all(quat.angle_between(got_yup, expected) < 1e-6), joint
    for h, joint in enumerate(index.hinge_names):
        got = local[:, model.body(joint).id]
        # a hinge about (0, -1, 0): q = (cos(a/2), 0, -sin(a/2), 0)
        angle = 2 * np.arctan2(-got[:, 2], got[:, 0])
        np.testing.assert_allclose(angle, pose[:, index.hinge_qpos[h]], atol=1e-9)


def _deepmimic_forward_kinematics(pose: np.ndarray) -> dict[str, np.ndarray]:
    """World positions (y-up) of every DeepMimic joint, straight from humanoid3d.txt."""
    skeleton = json.loads((DEEPMIMIC / "humanoid3d.txt").read_text())["Skeleton"]["Joints"]
    index = hm.DEEPMIMIC_INDEX
    local = {n: quat.normalize(pose[index.ball_qpos[b]]) for b, n in enumerate(index.ball_names)}
    for h, n in enumerate(index.hinge_names):  # DeepMimic revolute joints turn about z
        local[n] = quat.from_axis_angle(np.array([0.0, 0.0, 1.0]), pose[index.hinge_qpos[h]])
    position = {"root": pose[0:3]}
    rotation = {"root": quat.normalize(pose[3:7])}
    for joint in skeleton[1:]:
        name, parent = joint["Name"], skeleton[joint["Parent"]]["Name"]
        offset = np.array([joint["AttachX"], joint["AttachY"], joint["AttachZ"]])
        position[name] = position[parent] + quat.rotate(rotation[parent], offset)
        identity = np.array([1.0, 0.0, 0.0, 0.0])
        rotation[name] = quat.multiply(rotation[parent], local.get(name, identity))
    return position


@needs_data
def test_forward_kinematics_matches_the_deepmimic_skeleton(model: mujoco.MjModel) -> None:
    pose = _deepmimic_poses("run")
    qpos = hm.deepmimic_pose_to_qpos(pose)
    kinematics = hm.Kinematics(model)
    bodies = kinematics.body_positions(qpos)
    sites = kinematics.end_effectors(qpos)
    for f in range(len(pose)):
        expected = _deepmimic_forward_kinematics(pose[f])
        for name, position in expected.items():
            zup = hm.YUP_TO_ZUP @ position
            if name in hm.END_EFFECTORS and name.endswith("wrist"):
                got = sites[f, hm.END_EFFECTORS.index(name)]
            else:
                got = bodies[f, model.body(name).id]
            np.testing.assert_allclose(got, zup, atol=1e-9, err_msg=name)


def _euler_xyz(rotation: np.ndarray) -> np.ndarray:
    """Angles (a, b, c) with R = Rx(a) Ry(b) Rz(c), for (..., 3, 3) matrices."""
    a = np.arctan2(-rotation[..., 1, 2], rotation[..., 2, 2])
    b = np.arcsin(np.clip(rotation[..., 0, 2], -1.0, 1.0))
    c = np.arctan2(-rotation[..., 0, 1], rotation[..., 0, 0])
    return np.stack([a, b, c], axis=-1)


@pytest.mark.skipif(not MIMICKIT_XML.is_file(), reason="../shared/data not present")
def test_kinematics_match_the_mimickit_model_of_the_same_humanoid(model: mujoco.MjModel) -> None:
    """MimicKit splits each ball joint into x, y, z hinges and rests its arms sideways
    (T-pose); converting our poses to its joints must put every body in the same place."""
    theirs = mujoco.MjModel.from_xml_path(str(MIMICKIT_XML))
    their_data = mujoco.MjData(theirs)
    qpos = _test_poses()[::3]
    idx = hm.MODEL_INDEX
    ball_joint = {
        "chest": "abdomen",
        "neck": "neck",
        "right_hip": "right_hip",
        "left_hip": "left_hip",
        "right_ankle": "right_ankle",
        "left_ankle": "left_ankle",
        "right_shoulder": "right_shoulder",
        "left_shoulder": "left_shoulder",
    }
    # their arm rest direction is ours turned by R0: +90 deg about x (right), -90 (left)
    arm_rest = {
        "right_shoulder": quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), np.pi / 2),
        "left_shoulder": quat.from_axis_angle(np.array([1.0, 0.0, 0.0]), -np.pi / 2),
    }
    # hinges: ours turn about -y; theirs: knees about +y, elbows about z (right) / -z (left)
    hinge_sign = {"right_knee": -1.0, "left_knee": -1.0, "right_elbow": 1.0, "left_elbow": -1.0}
    body = {
        "root": "pelvis",
        "chest": "torso",
        "neck": "head",
        "right_hip": "right_thigh",
        "right_knee": "right_shin",
        "right_ankle": "right_foot",
        "left_hip": "left_thigh",
        "left_knee": "left_shin",
        "left_ankle": "left_foot",
        "right_shoulder": "right_upper_arm",
        "right_elbow": "right_lower_arm",
        "left_shoulder": "left_upper_arm",
        "left_elbow": "left_lower_arm",
    }
    ours = hm.Kinematics(model).body_positions(qpos)
    hands = hm.Kinematics(model).end_effectors(qpos)[:, :2]
    for f, pose in enumerate(qpos):
        their_data.qpos[:7] = pose[:7]
        for b, name in enumerate(idx.ball_names):
            rotation = pose[idx.ball_qpos[b]]
            if name in arm_rest:
                rotation = quat.multiply(rotation, arm_rest[name])
            angles = _euler_xyz(quat.to_matrix(rotation))
            for axis, angle in zip("xyz", angles, strict=True):
                their_data.qpos[theirs.joint(f"{ball_joint[name]}_{axis}").qposadr[0]] = angle
        for h, name in enumerate(idx.hinge_names):
            adr = theirs.joint(name).qposadr[0]
            their_data.qpos[adr] = hinge_sign[name] * pose[idx.hinge_qpos[h]]
        mujoco.mj_kinematics(theirs, their_data)
        for name, their_name in body.items():
            np.testing.assert_allclose(
                their_data.xpos[theirs.body(their_name).id],
                ours[f, model.body(name).id],
                atol=1e-6,
                err_msg=name,
            )
        for s, hand in enumerate(("right_hand", "left_hand")):
            np.testing.assert_allclose(
                their_data.xpos[theirs.body(hand).id], hands[f, s], atol=1e-6
            )


def test_qpos_velocity_matches_mujoco_differentiate_pos(model: mujoco.MjModel) -> None:
    poses = _test_poses()
    a, b = poses[3], poses[4]
    expected = np.zeros(model.nv)
    mujoco.mj_differentiatePos(model, expected, 0.02, a, b)
    np.testing.assert_allclose(hm.qpos_velocity(a, b, 0.02), expected, atol=1e-9)


def test_ball_joint_servos_drive_joints_to_their_target_rotations(
    model: mujoco.MjModel,
) -> None:
    """With gravity off, PD targets taken from a pose (``pd_targets``) bring the joints there."""
    weightless = hm.load_model()
    weightless.opt.gravity[:] = 0.0
    data = mujoco.MjData(weightless)
    data.qpos[:] = hm.rest_qpos()
    target = _test_poses()[10]
    data.ctrl[:] = hm.pd_targets(target)
    mujoco.mj_step(weightless, data, nstep=480)  # 2 s at 240 Hz
    idx = hm.MODEL_INDEX
    errors = quat.angle_between(data.qpos[idx.ball_qpos], target[idx.ball_qpos])
    assert errors.max() < 0.05
    np.testing.assert_allclose(data.qpos[idx.hinge_qpos], target[idx.hinge_qpos], atol=0.05)


def test_mirroring_makes_the_left_side_the_reflection_of_the_right(
    model: mujoco.MjModel,
) -> None:
    pose = _test_poses()[5].copy()
    pose[:3] = [0.0, 0.0, 1.0]
    pose[hm.ROOT_QUAT] = [1.0, 0.0, 0.0, 0.0]
    chest = hm.MODEL_INDEX.ball_order(["chest"])[0]
    pose[hm.MODEL_INDEX.ball_qpos[chest]] = [1.0, 0.0, 0.0, 0.0]
    positions = hm.Kinematics(model).body_positions(hm.mirror_right_to_left(pose))[0]
    for part in ("hip", "knee", "ankle", "shoulder", "elbow"):
        right = positions[model.body(f"right_{part}").id]
        left = positions[model.body(f"left_{part}").id]
        np.testing.assert_allclose(left, right * [1.0, -1.0, 1.0], atol=1e-12, err_msg=part)
