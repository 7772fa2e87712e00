"""Idle sub-envs: a sampling pass leaves the MuJoCo sub-envs whose episode has ended unstepped (their later steps
are padding the sampler discards), so that physics is spent on valid transitions only."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import VecMonitor

from sb3_meta.common.policies import MetaActorCriticPolicy
from sb3_meta.common.rollout import collect_task_batch
from sb3_meta.envs import AntDirTasks, AntVelTasks, HalfCheetahDirTasks, MujocoTaskVecEnv
from sb3_meta.envs.mujoco_vec_env import mujoco_batch

BACKENDS = [
    pytest.param(lambda: AntDirTasks(max_episode_steps=40), "threads", 2, id="ant-threads"),
    pytest.param(lambda: AntVelTasks(max_episode_steps=40), "threads", 1, id="ant-threads-1"),
    pytest.param(
        lambda: HalfCheetahDirTasks(max_episode_steps=40),
        "batch",
        2,
        id="cheetah-batch",
        marks=pytest.mark.skipif(mujoco_batch() is None, reason="mujoco.batch needs MuJoCo >= 3.17"),
    ),
]


@pytest.mark.parametrize(("make_env", "backend", "n_threads"), BACKENDS)
def test_idle_sub_envs_stand_still_and_the_others_step_as_without(make_env, backend, n_threads):
    n = 6
    venvs = [MujocoTaskVecEnv(make_env(), n, backend=backend, n_threads=n_threads) for _ in range(2)]
    for venv in venvs:
        venv.seed(3)
        venv.reset()
    rng = np.random.default_rng(0)
    low, high = venvs[0].action_space.low, venvs[0].action_space.high
    idle = np.array([False, True, False, False, True, False])
    frozen = None
    for step in range(30):
        actions = rng.uniform(low, high, (n, low.size)).astype(np.float32)
        if step == 10:
            venvs[0].set_idle_envs(idle)
            frozen = venvs[0]._observations()[idle].copy()
        out = [venv.step(actions) for venv in venvs]
        (obs, rewards, dones, _), (ref_obs, ref_rewards, ref_dones, _) = out
        busy = ~idle if step >= 10 else np.ones(n, dtype=bool)
        np.testing.assert_array_equal(obs[busy], ref_obs[busy])  # the others' physics does not depend on them
        np.testing.assert_array_equal(rewards[busy], ref_rewards[busy])
        np.testing.assert_array_equal(dones[busy], ref_dones[busy])
        if step >= 10:
            np.testing.assert_array_equal(obs[idle], frozen)
            assert not rewards[idle].any() and not dones[idle].any()
    assert not np.array_equal(frozen, ref_obs[idle])  # the reference stepped them: standing still shows
    venvs[0].reset()  # a reset ends idleness: every sub-env steps again
    before = venvs[0]._observations().copy()
    venvs[0].step(rng.uniform(low, high, (n, low.size)).astype(np.float32))
    assert (np.abs(venvs[0]._observations() - before).max(axis=1) > 0).all()
    for venv in venvs:
        venv.close()


def test_set_idle_envs_checks_the_mask():
    venv = MujocoTaskVecEnv(AntVelTasks(), 3)
    with pytest.raises(ValueError, match=r"bool mask of shape \(3,\)"):
        venv.set_idle_envs(np.zeros(2, dtype=bool))
    venv.close()


def sample_pass(skip: bool, monkeypatch) -> tuple:
    """One sampling pass of a random-init policy on AntVel (episodes end early: the Ant jumps), counting the
    sub-env steps simulated."""
    monkeypatch.setattr(MujocoTaskVecEnv, "_skips_idle_envs", skip)
    env = AntVelTasks(seed=0, frame_skip=5)  # horizon 200; at Ant-v5's 0.05 s step the random Ant falls early
    venv = MujocoTaskVecEnv(env, 8, n_threads=2)
    simulated = []
    step = venv._sims.step

    def counting_step(ctrl, nstep, ids=None):
        simulated.append(venv.num_envs if ids is None else len(ids))
        step(ctrl, nstep, ids)

    venv._sims.step = counting_step
    venv.seed(11)
    th.manual_seed(0)
    policy = MetaActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=dict(pi=[16], vf=[]))
    tasks = env.sample_tasks(2)
    batch = collect_task_batch(VecMonitor(venv), policy, tasks, 4, policy.actor_parameters(), False, 200)
    venv.close()
    return batch, simulated


def test_a_sampling_pass_skips_the_physics_of_finished_episodes(monkeypatch):
    batch, simulated = sample_pass(True, monkeypatch)
    reference, simulated_all = sample_pass(False, monkeypatch)
    for name in ("obs", "actions", "rewards", "mask"):
        assert th.equal(getattr(batch, name), getattr(reference, name)), name  # the same valid transitions
    valid = int(batch.mask.sum())
    assert sum(simulated) == valid  # a sub-env is stepped while its episode runs, never after
    assert sum(simulated_all) == len(simulated_all) * 8 > 1.5 * valid  # episodes ended early: padding was simulated
