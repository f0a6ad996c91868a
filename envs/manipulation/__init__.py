"""Table-top manipulation tasks with a 7-joint arm and a parallel-jaw gripper: Reach, Push, PickPlace."""

from imitlab.envs.manipulation.tasks import PickPlaceEnv, PushEnv, ReachEnv

__all__ = ["ReachEnv", "PushEnv", "PickPlaceEnv"]
