"""MuJoCo task distributions (Ant / HalfCheetah goal velocity and direction) and their batched VecEnv."""

from __future__ import annotations

import copy
import os
import pickle
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_meta.envs import (
    AntDirTask,
    AntDirTasks,
    AntVelTask,
    AntVelTasks,
    HalfCheetahDirTask,
    HalfCheetahDirTasks,
    HalfCheetahVelTask,
    HalfCheetahVelTasks,
    MujocoTaskVecEnv,
    Task,
    make_task_vec_env,
)

ENV_CLASSES = [AntVelTasks, AntDirTasks, HalfCheetahVelTasks, HalfCheetahDirTasks]
TASK_TYPES = {
    AntVelTasks: AntVelTask,
    AntDirTasks: AntDirTask,
    HalfCheetahVelTasks: HalfCheetahVelTask,
    HalfCheetahDirTasks: HalfCheetahDirTask,
}
EXAMPLE_TASKS: list[Task] = [AntVelTask(1.5), AntDirTask(-1), HalfCheetahVelTask(0.7), HalfCheetahDirTask(1)]
IDS = {
    "sb3_meta/AntVel-v0": AntVelTasks,
    "sb3_meta/AntDir-v0": AntDirTasks,
    "sb3_meta/HalfCheetahVel-v0": HalfCheetahVelTasks,
    "sb3_meta/HalfCheetahDir-v0": HalfCheetahDirTasks,
}
INFO_KEYS = {
    AntVelTasks: ("x_position", "x_velocity", "reward_forward", "reward_ctrl", "reward_contact", "reward_survive"),
    AntDirTasks: ("x_position", "x_velocity", "reward_forward", "reward_ctrl", "reward_contact", "reward_survive"),
    HalfCheetahVelTasks: ("x_position", "x_velocity", "reward_forward", "reward_ctrl"),
    HalfCheetahDirTasks: ("x_position", "x_velocity", "reward_forward", "reward_ctrl"),
}


def assert_bitwise(a: Any, b: Any, what: str = "") -> None:
    """Same dtype, shape and bytes (stricter than ==: -0.0 != 0.0, NaN == NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: values differ, max |diff| {np.max(np.abs(a - b))}"


# --- interface --------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_cls", ENV_CLASSES)
def test_sample_tasks_seeded_and_in_range(env_cls) -> None:
    tasks = env_cls(seed=3).sample_tasks(40)
    assert tasks == env_cls(seed=3).sample_tasks(40)
    assert tasks != env_cls(seed=4).sample_tasks(40)
    assert all(type(t) is TASK_TYPES[env_cls] for t in tasks)
    if "Vel" in env_cls.__name__:
        velocities = np.array([t.velocity for t in tasks])
        assert np.all((velocities >= 0.0) & (velocities <= 2.0)) and velocities.std() > 0.3
    else:
        directions = {t.direction for t in tasks}
        assert directions == {-1.0, 1.0}
    # reset(seed=...) reseeds the task RNG, so the first task after a seeded reset is reproducible
    a, b = env_cls(), env_cls()
    a.reset(seed=7)
    b.reset(seed=7)
    assert a.get_task() == b.get_task()


def test_velocity_range_parameter() -> None:
    velocities = [t.velocity for t in AntVelTasks(velocity_range=(0.0, 3.0), seed=0).sample_tasks(200)]
    assert max(velocities) > 2.5 and min(velocities) >= 0.0
    with pytest.raises(ValueError):
        AntVelTasks(velocity_range=(2.0, 1.0))
    with pytest.raises(ValueError):
        HalfCheetahVelTasks(velocity_range=(0.0, float("inf")))


@pytest.mark.parametrize("task_cls", [AntDirTask, HalfCheetahDirTask])
def test_direction_must_be_plus_minus_one(task_cls) -> None:
    assert task_cls(1).direction == 1.0 and isinstance(task_cls(1).direction, float)
    assert task_cls(-1.0) == task_cls(-1)
    for bad in (0.0, 0.5, 2, -1.5, float("nan"), True):
        with pytest.raises(ValueError):
            task_cls(bad)


@pytest.mark.parametrize("task", EXAMPLE_TASKS, ids=lambda t: type(t).__name__)
def test_task_json_and_pickle_round_trip(task: Task) -> None:
    for restored in (Task.from_json(task.to_json()), type(task).from_json(task.to_json()), pickle.loads(pickle.dumps(task))):
        assert restored == task and type(restored) is type(task) and hash(restored) == hash(task)
    others = [t for t in EXAMPLE_TASKS if type(t) is not type(task)]
    for other in others:
        with pytest.raises(ValueError):
            type(task).from_json(other.to_json())


@pytest.mark.parametrize("env_cls", ENV_CLASSES)
def test_task_of_another_distribution_is_refused(env_cls) -> None:
    env = env_cls()
    env.reset(seed=0)
    task = env.get_task()
    for other in EXAMPLE_TASKS:
        if type(other) is TASK_TYPES[env_cls]:
            continue
        with pytest.raises(ValueError):
            env.reset_task(other)
        with pytest.raises(ValueError):
            env.reset(options={"task": other})
    assert env.get_task() == task
    venv = MujocoTaskVecEnv(copy.deepcopy(env), 2)
    with pytest.raises(ValueError):
        venv.set_tasks([task, next(t for t in EXAMPLE_TASKS if type(t) is not type(task))])
    assert venv.get_tasks() == [task, task]  # nothing half-applied


@pytest.mark.parametrize("env_cls", [AntVelTasks, HalfCheetahDirTasks])
def test_task_persists_across_resets_and_auto_resets(env_cls) -> None:
    env = env_cls(max_episode_steps=3)
    tasks = env.sample_tasks(3)
    env.reset_task(tasks[0])
    for seed in (None, 1, None):
        _, info = env.reset(seed=seed)
        assert env.get_task() == tasks[0] and info["task"] == tasks[0]
    venv = MujocoTaskVecEnv(copy.deepcopy(env), 3)
    venv.set_tasks(tasks)
    venv.reset()
    n_dones = 0
    for _ in range(7):
        _, _, dones, infos = venv.step(np.zeros((3, *env.action_space.shape)))
        n_dones += int(dones.sum())
        assert [info["task"] for info in infos] == tasks
    assert n_dones >= 6 and venv.get_tasks() == tasks


@pytest.mark.parametrize("env_cls", ENV_CLASSES)
def test_copies_keep_task_rngs_and_simulation(env_cls) -> None:
    env = env_cls(seed=5)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert clone.get_task() == env.get_task()
        assert clone.sample_tasks(3) == copy.deepcopy(env).sample_tasks(3)
        action = rng.uniform(-1, 1, env.action_space.shape)
        expected = copy.deepcopy(env).step(action)
        got = clone.step(action)
        assert_bitwise(got[0], expected[0], "obs")
        assert got[1:4] == expected[1:4] and got[4] == expected[4]


# --- reward formulas, checked by hand ----------------------------------------------------------------
@pytest.mark.parametrize("env_cls", [AntVelTasks, AntDirTasks])
def test_ant_reward_by_hand(env_cls) -> None:
    env = env_cls()
    env.reset(seed=0)
    goal = env.get_task().velocity if env_cls is AntVelTasks else env.get_task().direction
    rng = np.random.default_rng(1)
    contact_seen = False
    for _ in range(40):
        action = rng.uniform(-1, 1, 8)
        x_before = env.data.body("torso").xpos[0]
        _, reward, terminated, truncated, info = env.step(action)
        # rllab's Ant time step (0.02 s: 2 substeps of Ant-v5's 0.01 s model), not Ant-v5's 0.05 s
        assert env.dt == 0.02 and env.model.opt.timestep == 0.01
        x_velocity = (env.data.body("torso").xpos[0] - x_before) / 0.02
        assert info["x_velocity"] == pytest.approx(x_velocity, rel=1e-12, abs=1e-12)
        ctrl = 0.005 * np.sum(action**2)
        contact = 0.0005 * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
        contact_seen |= contact > 0
        healthy = 0.2 <= env.data.qpos[2] <= 1.0
        survive = 0.05 if healthy else 0.0
        forward = -abs(x_velocity - goal) + 1.0 if env_cls is AntVelTasks else goal * x_velocity
        assert reward == pytest.approx(forward + survive - ctrl - contact, rel=1e-12, abs=1e-12)
        assert info["reward_ctrl"] == pytest.approx(-ctrl) and info["reward_contact"] == pytest.approx(-contact)
        assert info["reward_forward"] == pytest.approx(forward) and info["reward_survive"] == survive
        assert terminated == (not healthy) and not truncated
        if terminated:
            break
    assert contact_seen


@pytest.mark.parametrize("env_cls", [HalfCheetahVelTasks, HalfCheetahDirTasks])
def test_half_cheetah_reward_by_hand(env_cls) -> None:
    env = env_cls()
    env.reset(seed=0)
    goal = env.get_task().velocity if env_cls is HalfCheetahVelTasks else env.get_task().direction
    rng = np.random.default_rng(1)
    for _ in range(20):
        action = rng.uniform(-1, 1, 6)
        x_before = env.data.qpos[0]
        _, reward, terminated, truncated, info = env.step(action)
        x_velocity = (env.data.qpos[0] - x_before) / 0.05
        assert info["x_velocity"] == pytest.approx(x_velocity, rel=1e-12, abs=1e-12)
        forward = -abs(x_velocity - goal) if env_cls is HalfCheetahVelTasks else goal * x_velocity
        assert reward == pytest.approx(forward - 0.05 * np.sum(action**2), rel=1e-12, abs=1e-12)
        assert not terminated and not truncated


def test_coefficient_switch_reproduces_gymnasium_v5() -> None:
    """AntDir with direction +1, Ant-v5's coefficients and time step is Ant-v5 (same obs, termination, reward); likewise
    HalfCheetah."""
    cases = [
        (AntDirTasks(coefficients="ant-v5", frame_skip=5), AntDirTask(1), AntEnv(), 8),
        (HalfCheetahDirTasks(ctrl_cost_weight=0.1), HalfCheetahDirTask(1), HalfCheetahEnv(), 6),
    ]
    assert AntDirTasks(coefficients="ant-v5")._ctrl_cost_weight == 0.5
    assert AntDirTasks(coefficients="ant-v5")._healthy_reward == 1.0
    with pytest.raises(ValueError):
        AntVelTasks(coefficients="rllab")
    for ours, task, reference, act_dim in cases:
        ours.reset(seed=3, options={"task": task})
        obs_ref, _ = reference.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(60):
            action = rng.uniform(-1, 1, act_dim).astype(np.float32)
            obs, reward, terminated, _, info = ours.step(action)
            obs_ref, reward_ref, terminated_ref, _, info_ref = reference.step(action)
            assert_bitwise(obs, obs_ref, "obs")
            assert info["x_velocity"] == info_ref["x_velocity"] and terminated == terminated_ref
            # only the ctrl cost differs in rounding (gymnasium squares the float32 action)
            assert reward == pytest.approx(reward_ref, rel=1e-6, abs=1e-6)
            if terminated:
                break


# --- batched VecEnv == single env, bitwise -----------------------------------------------------------
def compare_batched_with_single(
    make_env: Callable[[], Any], n_envs: int, n_steps: int, seed: int, backend: str = "auto", n_threads: int | None = None
) -> dict[str, int]:
    """Step MujocoTaskVecEnv and a DummyVecEnv of the single env side by side; every output must match bitwise."""
    template = make_env()
    tasks = template.sample_tasks(n_envs)
    batched = MujocoTaskVecEnv(copy.deepcopy(template), n_envs, backend=backend, n_threads=n_threads)
    single = make_task_vec_env(template, n_envs, vec_env_cls="dummy")
    keys = INFO_KEYS[type(template)]
    counts = {"terminated": 0, "truncated": 0}
    seen_tasks: set[Task] = set()
    try:
        for venv in (batched, single):
            venv.seed(seed)
            venv.set_tasks(tasks)
        assert_bitwise(batched.reset(), single.reset(), "reset obs")
        rng = np.random.default_rng(seed)
        for t in range(n_steps):
            actions = rng.uniform(-1.0, 1.0, (n_envs, *template.action_space.shape))
            obs_b, rew_b, done_b, infos_b = batched.step(actions)
            obs_s, rew_s, done_s, infos_s = single.step(actions)
            assert_bitwise(obs_b, obs_s, f"obs at step {t}")
            assert_bitwise(rew_b, rew_s, f"reward at step {t}")
            assert_bitwise(done_b, done_s, f"dones at step {t}")
            for i, (info_b, info_s) in enumerate(zip(infos_b, infos_s, strict=True)):
                assert info_b["task"] == info_s["task"]
                assert template.sample_task_on_reset or info_b["task"] == tasks[i]
                seen_tasks.add(info_b["task"])
                for key in keys:
                    assert_bitwise(info_b[key], info_s[key], f"info[{key!r}] of sub-env {i} at step {t}")
                if done_s[i]:
                    assert_bitwise(info_b["terminal_observation"], info_s["terminal_observation"], "terminal obs")
                    assert info_b["TimeLimit.truncated"] == info_s["TimeLimit.truncated"]
                    counts["truncated" if info_s["TimeLimit.truncated"] else "terminated"] += 1
    finally:
        batched.close()
        single.close()
    counts["tasks"] = len(seen_tasks)
    return counts


@pytest.mark.parametrize("env_cls", ENV_CLASSES)
def test_batched_equals_single_bitwise(env_cls) -> None:
    # 4 sub-envs x 100 steps with a horizon of 40: every sub-env finishes at least 2 episodes and starts a third
    ant = env_cls in (AntVelTasks, AntDirTasks)
    # at Ant-v5's 0.05 s step, random actions make the ant jump above healthy_z_range within 40 steps: unhealthy
    # terminations and their automatic resets are compared too (at the default 0.02 s they rarely come so early)
    kwargs = dict(frame_skip=5) if ant else {}
    counts = compare_batched_with_single(
        lambda: env_cls(max_episode_steps=40, seed=1, **kwargs), n_envs=4, n_steps=100, seed=11
    )
    if ant:
        assert counts["terminated"] >= 1 and counts["truncated"] >= 1
        assert counts["terminated"] + counts["truncated"] >= 8
    else:
        assert counts["terminated"] == 0 and counts["truncated"] == 8


@pytest.mark.parametrize("env_cls", [AntVelTasks, HalfCheetahVelTasks])
def test_batched_equals_single_bitwise_default_horizon(env_cls) -> None:
    """Default settings (horizon 200, contact forces, all cores), more than 2 episodes per sub-env."""
    counts = compare_batched_with_single(lambda: env_cls(seed=2), n_envs=8, n_steps=420, seed=0)
    assert counts["truncated"] + counts["terminated"] >= 16


def test_batched_equals_single_bitwise_task_mixture() -> None:
    """sample_task_on_reset: each sub-env draws the same new task at every (auto-)reset as the single env."""
    counts = compare_batched_with_single(
        lambda: AntVelTasks(sample_task_on_reset=True, max_episode_steps=10), n_envs=3, n_steps=35, seed=4
    )
    assert counts["truncated"] + counts["terminated"] >= 9 and counts["tasks"] >= 9


@pytest.mark.parametrize(
    ("make_env", "backend", "n_threads"),
    [
        (lambda: AntVelTasks(max_episode_steps=30, include_cfrc_ext_in_observation=False, contact_cost_weight=0), "batch", 2),
        (lambda: AntDirTasks(max_episode_steps=30), "threads", 1),
        (lambda: HalfCheetahVelTasks(max_episode_steps=30), "threads", 2),
        (lambda: HalfCheetahDirTasks(max_episode_steps=30), "batch", 1),
    ],
    ids=["ant-batch-no-contact", "ant-threads-1", "cheetah-threads", "cheetah-batch-1"],
)
def test_every_backend_equals_single_bitwise(make_env, backend, n_threads) -> None:
    counts = compare_batched_with_single(make_env, n_envs=3, n_steps=65, seed=5, backend=backend, n_threads=n_threads)
    assert counts["terminated"] + counts["truncated"] >= 6


def test_backend_choice() -> None:
    assert MujocoTaskVecEnv(AntVelTasks(), 2).backend == "threads"  # cfrc_ext needed: mujoco.batch cannot compute it
    assert MujocoTaskVecEnv(HalfCheetahVelTasks(), 2).backend == "batch"
    no_contact = AntDirTasks(include_cfrc_ext_in_observation=False, contact_cost_weight=0.0)
    assert no_contact.observation_space.shape == (27,) and MujocoTaskVecEnv(no_contact, 2).backend == "batch"
    with pytest.raises(ValueError, match="cfrc_ext"):
        MujocoTaskVecEnv(AntVelTasks(), 2, backend="batch")
    with pytest.raises(ValueError):
        MujocoTaskVecEnv(AntVelTasks(), 2, backend="gpu")
    with pytest.raises(ValueError):
        MujocoTaskVecEnv(AntVelTasks(), 2, n_threads=0)


def test_seeded_sub_env_starts_like_single_env() -> None:
    venv = make_task_vec_env(AntDirTasks(), 3, seed=20)
    assert isinstance(venv, MujocoTaskVecEnv)
    obs = venv.reset()
    for i in range(3):
        env = AntDirTasks()
        env.reset_task(venv.get_tasks([i])[0])
        assert_bitwise(obs[i], env.reset(seed=20 + i)[0], f"sub-env {i}")
    assert not np.array_equal(obs[0], obs[1])


@pytest.mark.parametrize("env_cls", [AntDirTasks, HalfCheetahVelTasks])
def test_rng_states_round_trip(env_cls) -> None:
    """get_rng_states / set_rng_states (checkpoints) restore the initial-state RNGs: the same resets follow."""
    venv = make_task_vec_env(env_cls(), 3, seed=1)
    venv.reset()
    states = copy.deepcopy(venv.get_rng_states())
    first = venv.reset()
    assert not np.array_equal(first, venv.reset())
    venv.set_rng_states(states)
    assert_bitwise(venv.reset(), first, "obs after restoring the RNG states")
    with pytest.raises(ValueError):
        venv.set_rng_states({"task_rngs": states["task_rngs"], "init_rngs": states["init_rngs"][:2]})


# --- registration, horizon, bad input, checkers --------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(IDS))
def test_registered(env_id: str) -> None:
    env = gym.make(env_id)
    assert isinstance(env.unwrapped, IDS[env_id]) and env.spec.max_episode_steps == 200
    assert env.unwrapped.max_episode_steps == 200
    venv = make_task_vec_env(env_id, 2, seed=0)
    assert isinstance(venv, MujocoTaskVecEnv)
    venv.close()


def test_env_truncates_itself_at_horizon() -> None:
    env = HalfCheetahVelTasks()  # not wrapped in TimeLimit
    env.reset(seed=0)
    for t in range(1, 201):
        _, _, terminated, truncated, _ = env.step(np.zeros(6))
        assert not terminated and truncated == (t == 200)


@pytest.mark.parametrize("env_cls", [AntVelTasks, HalfCheetahDirTasks])
def test_bad_actions_raise_and_leave_state_untouched(env_cls) -> None:
    env = env_cls()
    env.reset(seed=0)
    env.step(np.full(env.action_space.shape, 0.3))
    reference = copy.deepcopy(env)
    qpos, qvel, time = env.data.qpos.copy(), env.data.qvel.copy(), env.data.time
    bad_actions = [
        np.zeros(env.action_space.shape[0] + 1),
        np.zeros((2, *env.action_space.shape)),
        np.full(env.action_space.shape, np.nan),
        np.where(np.arange(env.action_space.shape[0]) == 2, np.inf, 0.0),
    ]
    for action in bad_actions:
        with pytest.raises(ValueError):
            env.step(action)
    assert_bitwise(env.data.qpos, qpos, "qpos")
    assert_bitwise(env.data.qvel, qvel, "qvel")
    assert env.data.time == time and env._elapsed == reference._elapsed
    action = np.full(env.action_space.shape, -0.2)
    assert_bitwise(env.step(action)[0], reference.step(action)[0], "next obs")

    venv = MujocoTaskVecEnv(copy.deepcopy(env), 2)
    obs = venv.reset()
    actions = np.zeros((2, *env.action_space.shape))
    actions[1, 0] = np.nan
    for bad in (actions, np.zeros((3, *env.action_space.shape)), np.zeros(env.action_space.shape)):
        with pytest.raises(ValueError):
            venv.step(bad)
    assert_bitwise(venv._observations(), obs, "batched state")


def test_step_before_any_task_raises() -> None:
    with pytest.raises(RuntimeError, match="no task"):
        AntVelTasks().step(np.zeros(8))


UNBOUNDED_BOX_NOTICE = re.compile(r"A Box observation space (minimum|maximum) value is -?infinity")


def _unexpected_warnings(fn: Callable[[], Any]) -> list[str]:
    """Warnings raised by ``fn`` other than the notice that the observation Box is unbounded (as in Ant-v5)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if not UNBOUNDED_BOX_NOTICE.search(str(w.message))]


@pytest.mark.parametrize("env_cls", ENV_CLASSES)
def test_gymnasium_and_sb3_env_checkers(env_cls) -> None:
    assert _unexpected_warnings(lambda: gym_check_env(env_cls(), skip_render_check=True)) == []
    assert _unexpected_warnings(lambda: sb3_check_env(env_cls(), warn=True)) == []


def test_rgb_array_rendering() -> None:
    code = (
        "from sb3_meta.envs import AntVelTasks\n"
        "env = AntVelTasks(render_mode='rgb_array', width=64, height=48)\n"
        "env.reset(seed=0)\n"
        "image = env.render()\n"
        "assert image.shape == (48, 64, 3) and image.std() > 0, image.shape\n"
        "print('ok')\n"
    )
    environ = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
    if result.returncode != 0 and ("GL" in result.stderr or "glGetError" in result.stderr or "opengl" in result.stderr):
        pytest.skip(f"no OpenGL backend for MUJOCO_GL={environ['MUJOCO_GL']}: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    env = AntVelTasks(render_mode="rgb_array")
    assert env.render_mode == "rgb_array" and env.mujoco_renderer is not None


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda env: pickle.loads(pickle.dumps(env))])
def test_a_copy_keeps_what_was_set_after_construction(copier) -> None:
    """gymnasium rebuilds MuJoCo envs from their constructor arguments; a copy must still behave as the original:
    a horizon set afterwards, and a task drawn at a reset (which a reseeding reset draws again)."""
    env = HalfCheetahVelTasks()
    env.max_episode_steps = 7
    env.reset(seed=0)  # draws its task
    twin = copier(env)
    assert twin.max_episode_steps == 7
    assert twin.reset(seed=5)[1]["task"] == env.reset(seed=5)[1]["task"]  # both draw again
    for _ in range(7):
        *_, terminated, truncated, _ = twin.step(np.zeros(twin.action_space.shape))
    assert truncated and not terminated


def test_velocity_tasks_from_arrays_and_bad_numbers() -> None:
    assert HalfCheetahVelTask(np.array(0.5)) == HalfCheetahVelTask([0.5]) == HalfCheetahVelTask(0.5)
    for bad, message in [((0.5, 0.7), "must be one number, got 2"), (10**400, "must be finite"), ("fast", "finite number")]:
        with pytest.raises(ValueError, match=message):
            HalfCheetahVelTask(bad)


@pytest.mark.parametrize(
    "env_cls, kwargs, message",
    [
        (HalfCheetahVelTasks, dict(frame_skip=2.5), "frame_skip must be an integer >= 1"),
        (HalfCheetahVelTasks, dict(frame_skip=0), "frame_skip must be an integer >= 1"),
        (HalfCheetahVelTasks, dict(max_episode_steps=2.5), "max_episode_steps must be an integer >= 1"),
        (HalfCheetahVelTasks, dict(reset_noise_scale=-1.0), "reset_noise_scale must be a finite number >= 0"),
        (HalfCheetahVelTasks, dict(render_mode="bogus"), "render_mode must be None or one of"),
        (AntVelTasks, dict(healthy_z_range=(0.2,)), r"healthy_z_range must be \(low, high\) with low < high"),
        (AntVelTasks, dict(healthy_z_range=(1.0, 0.2)), r"healthy_z_range must be \(low, high\)"),
        (AntVelTasks, dict(contact_force_range=(1.0, -1.0)), r"contact_force_range must be \(low, high\)"),
    ],
)
def test_constructor_arguments_are_checked(env_cls, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        env_cls(**kwargs)


def test_set_attr_frame_skip_on_the_batched_vec_env_changes_the_time_step_too() -> None:
    batched = make_task_vec_env(HalfCheetahVelTasks(), 2, seed=0)
    dummy = make_task_vec_env(HalfCheetahVelTasks(), 2, seed=0, vec_env_cls="dummy")
    batched.reset()
    dummy.reset()
    for venv in (batched, dummy):
        venv.set_attr("frame_skip", 2)
    actions = np.full((2, 6), 0.5)
    (obs_b, rew_b, _, info_b), (obs_d, rew_d, _, info_d) = batched.step(actions), dummy.step(actions)
    np.testing.assert_array_equal(obs_b, obs_d)
    np.testing.assert_array_equal(rew_b, rew_d)
    assert [i["x_velocity"] for i in info_b] == [i["x_velocity"] for i in info_d]


@pytest.mark.parametrize("env_cls", [HalfCheetahVelTasks, AntDirTasks])
def test_batched_reset_infos_equal_those_of_sb3s_vec_env(env_cls) -> None:
    """Bit for bit: gymnasium's reset info (positions) and the task, as the single env's reset returns them."""
    batched = make_task_vec_env(env_cls(), 3, seed=0)
    dummy = make_task_vec_env(env_cls(), 3, seed=0, vec_env_cls="dummy")
    batched.reset()
    dummy.reset()
    assert batched.reset_infos == dummy.reset_infos
    assert {"x_position", "task"} <= set(batched.reset_infos[0])


def test_a_batched_vec_env_of_a_seeded_env_is_reproducible_without_a_seed() -> None:
    """As SB3's DummyVecEnv of copies: the sub-envs' initial-state RNGs derive from the seeded env's task RNG."""
    first, second = [], []
    for out in (first, second):
        env = AntVelTasks()
        env.reset(seed=0)
        venv = make_task_vec_env(env, 3)  # no seed
        out.append(venv.reset())
        out.append(venv.step(np.full((3, *env.action_space.shape), 0.2))[0])
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    unseeded = [make_task_vec_env(AntVelTasks(), 3).reset() for _ in range(2)]
    assert not np.array_equal(*unseeded)  # an unseeded env still gives fresh initial states
