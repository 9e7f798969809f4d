"""Gymnasium-Robotics' Fetch tasks with a faster observation: the same arrays, from addresses looked up once.

gymnasium-robotics 1.4.2 builds every Fetch observation by name: each of the 15 robot joints is found with
`mj_name2id` twice (position, velocity), and each site again for its position and its velocity, about 40 lookups
per step. On the 2-core test machine that is 0.57 ms of the 2.6 ms a FetchPush step costs. These subclasses look
the addresses up once and compute each quantity the same way (the same MuJoCo calls, the same numpy arithmetic),
so the observations are bit for bit the ones of the stock env; tests/test_envs.py checks every step of random
episodes of all four tasks. `envs.make("FetchPush")` returns them; a full id (`FetchPush-v4`) as well.
"""

import mujoco
import numpy as np
from gymnasium_robotics.envs.fetch.pick_and_place import MujocoFetchPickAndPlaceEnv
from gymnasium_robotics.envs.fetch.push import MujocoFetchPushEnv
from gymnasium_robotics.envs.fetch.reach import MujocoFetchReachEnv
from gymnasium_robotics.envs.fetch.slide import MujocoFetchSlideEnv
from gymnasium_robotics.utils import rotations


class CachedObservation:
    """Mixin over a MujocoFetchEnv: `generate_mujoco_observations` from cached joint and site addresses."""

    def _lookup(self):
        m, joint = self.model, mujoco.mjtObj.mjOBJ_JOINT
        ids = [mujoco.mj_name2id(m, joint, n) for n in self._model_names.joint_names if n.startswith("robot")]
        one_dof = (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
        assert all(m.jnt_type[i] in one_dof for i in ids), "Fetch robot joints are hinges and slides"
        self._qpos_adr, self._dof_adr = m.jnt_qposadr[ids], m.jnt_dofadr[ids]
        self._grip = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")
        self._object = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "object0") if self.has_object else -1

    def _site_velocities(self, site):
        """(linear, angular) world velocity of a site: its Jacobians times qvel, as mujoco_utils.get_site_xvel*."""
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacp, jacr, site)
        return jacp @ self.data.qvel, jacr @ self.data.qvel

    def generate_mujoco_observations(self):
        if not hasattr(self, "_grip"):  # the parent's __init__ already asks for an observation
            self._lookup()
        data = self.data
        dt = self.n_substeps * self.model.opt.timestep
        grip_pos = data.site_xpos[self._grip]
        grip_velp = self._site_velocities(self._grip)[0] * dt
        robot_qpos, robot_qvel = data.qpos[self._qpos_adr], data.qvel[self._dof_adr]
        if self.has_object:
            object_pos = data.site_xpos[self._object]
            object_rot = rotations.mat2euler(data.site_xmat[self._object].reshape(3, 3))
            object_velp, object_velr = self._site_velocities(self._object)
            object_velp, object_velr = object_velp * dt, object_velr * dt
            object_rel_pos = object_pos - grip_pos
            object_velp -= grip_velp
        else:
            object_pos = object_rot = object_velp = object_velr = object_rel_pos = np.zeros(0)
        gripper_state, gripper_vel = robot_qpos[-2:], robot_qvel[-2:] * dt
        return (grip_pos, object_pos, object_rel_pos, gripper_state, object_rot, object_velp, object_velr,
                grip_velp, gripper_vel)


class FetchReach(CachedObservation, MujocoFetchReachEnv):
    pass


class FetchPush(CachedObservation, MujocoFetchPushEnv):
    pass


class FetchPickAndPlace(CachedObservation, MujocoFetchPickAndPlaceEnv):
    pass


class FetchSlide(CachedObservation, MujocoFetchSlideEnv):
    pass


# gymnasium-robotics' entry point -> the subclass `envs.make` builds instead
FASTER = {f"{base.__module__}:{base.__name__}": cls for cls in (FetchReach, FetchPush, FetchPickAndPlace, FetchSlide)
          for base in cls.__bases__[1:]}
