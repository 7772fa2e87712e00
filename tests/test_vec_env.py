"""Task VecEnvs: the batched PointMassVecEnv, the DummyVecEnv / SubprocVecEnv fallbacks, make_task_vec_env."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_meta.envs import (
    AntVelTasks,
    OracleObservation,
    PointMassTask,
    PointMassTasks,
    PointMassVecEnv,
    Task,
    TaskDummyVecEnv,
    TaskMixture,
    TaskSubprocVecEnv,
    is_task_vec_env,
    make_task_vec_env,
)
from sb3_meta.envs.vec_env import check_actions

KINDS = ["batched", "dummy"]  # subproc is slower to start: tested separately, with fewer steps


@dataclasses.dataclass(frozen=True)
class ForeignTask(Task):
    """A task of another distribution, with the same fields as PointMassTask."""

    goal: tuple[float, float] = (0.0, 0.0)
    start: tuple[float, float] = (0.0, 0.0)


def tasks_of(n: int, seed: int = 0) -> list[PointMassTask]:
    return PointMassTasks(seed=seed).sample_tasks(n)


def positions(venv: VecEnv) -> np.ndarray:
    """Positions of all sub-envs, read from the env state (without stepping)."""
    if isinstance(venv, PointMassVecEnv):
        return venv._positions.copy()
    return np.array([env.unwrapped._position for env in venv.envs])  # type: ignore[attr-defined]


# --- make_task_vec_env ---------------------------------------------------------------------------------


def test_make_task_vec_env_picks_the_vec_env():
    assert type(make_task_vec_env(PointMassTasks(), 2)) is PointMassVecEnv
    assert type(make_task_vec_env("sb3_meta/PointMass-v0", 2)) is PointMassVecEnv
    assert type(make_task_vec_env(PointMassTasks(), 2, vec_env_cls="dummy")) is TaskDummyVecEnv
    assert type(make_task_vec_env(PointMassTasks(), 2, vec_env_cls=DummyVecEnv)) is TaskDummyVecEnv
    # wrappers that change the env are kept: no batched VecEnv for them
    oracle = make_task_vec_env(OracleObservation(PointMassTasks()), 2)
    assert type(oracle) is TaskDummyVecEnv and oracle.observation_space.shape == (6,)
    assert type(make_task_vec_env("sb3_meta/PointMassOracle-v0", 2)) is TaskDummyVecEnv
    assert type(make_task_vec_env(TaskMixture(PointMassTasks()), 2)) is TaskDummyVecEnv
    shorter = gym.make("sb3_meta/PointMass-v0", max_episode_steps=10)
    assert type(make_task_vec_env(shorter, 2)) is TaskDummyVecEnv
    with pytest.raises(ValueError, match=r"wrappers or a render_mode that a batched VecEnv .* would drop"):
        make_task_vec_env(OracleObservation(PointMassTasks()), 2, vec_env_cls="batched")
    venv = make_task_vec_env("sb3_meta/PointMass-v0", 3, env_kwargs={"goal_range": 2.0})
    assert venv.num_envs == 3 and venv.get_attr("goal_range") == [2.0] * 3
    # an env that renders gets SB3's VecEnv, which renders (the batched VecEnvs do not)
    rendering = make_task_vec_env(PointMassTasks(render_mode="rgb_array"), 2, seed=0)
    assert type(rendering) is TaskDummyVecEnv
    rendering.reset()
    frames = rendering.get_images()
    assert len(frames) == 2 and all(f is not None and f.ndim == 3 for f in frames)
    assert is_task_vec_env(venv) and not is_task_vec_env(DummyVecEnv([lambda: gym.make("CartPole-v1")]))


def test_make_task_vec_env_bad_arguments():
    for n in [0, -2, 1.5, True]:
        with pytest.raises(ValueError, match="n_envs must be an integer >= 1"):
            make_task_vec_env(PointMassTasks(), n)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a task distribution"):
        make_task_vec_env("CartPole-v1", 2)
    with pytest.raises(ValueError, match="vec_env_cls must be"):
        make_task_vec_env(PointMassTasks(), 2, vec_env_cls="threads")
    with pytest.raises(ValueError, match="env_kwargs only applies"):
        make_task_vec_env(PointMassTasks(), 2, env_kwargs={"goal_range": 1.0})
    with pytest.raises(ValueError, match="Expected a task-distribution env"):
        make_task_vec_env(42, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_envs must be"):
        PointMassVecEnv(PointMassTasks(), 0)


# --- tasks: set / get / env_method, persistence --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_set_get_tasks_and_env_method(kind):
    venv = make_task_vec_env(PointMassTasks(), 4, seed=0, vec_env_cls=kind)
    tasks = tasks_of(4)
    venv.set_tasks(tasks)
    assert venv.get_tasks() == tasks
    assert venv.get_tasks(indices=[1, 3]) == [tasks[1], tasks[3]]
    obs = venv.reset()
    np.testing.assert_array_equal(obs, np.array([t.start for t in tasks], dtype=np.float32))
    new = PointMassTask(goal=(0.4, 0.4), start=(-0.1, 0.2))
    assert venv.env_method("reset_task", new, indices=[0, 2]) == [None, None]
    assert venv.get_tasks() == [new, tasks[1], new, tasks[3]]
    assert venv.env_method("get_task", indices=[2]) == [new]
    assert venv.get_attr("task_type", indices=[0]) == [PointMassTask]
    assert venv.get_attr("task") == venv.get_tasks() and venv.get_attr("task", indices=[-1]) == [tasks[3]]  # every kind
    venv.set_tasks([tasks[0]], indices=[2])
    assert venv.get_tasks() == [new, tasks[1], tasks[0], tasks[3]]
    drawn = venv.env_method("sample_tasks", 3, indices=[1])
    assert len(drawn) == 1 and len(drawn[0]) == 3 and all(isinstance(t, PointMassTask) for t in drawn[0])
    assert len(venv.sample_task_batch(2)) == 2


def test_sb3_vec_envs_get_one_env_method_call_per_distinct_task():
    """A meta-batch gives each task to several sub-envs: one call per task and method, not one per sub-env."""
    venv = make_task_vec_env(PointMassTasks(), 6, seed=0, vec_env_cls="dummy")
    calls = []
    env_method = venv.env_method

    def spy(name, *args, indices=None, **kwargs):
        calls.append((name, None if indices is None else list(indices)))
        return env_method(name, *args, indices=indices, **kwargs)

    venv.env_method = spy
    a, b = tasks_of(2)
    venv.set_tasks([a, a, a, b, b, b])
    assert calls[-4:] == [("validate_task", [0, 1, 2]), ("validate_task", [3, 4, 5]), ("reset_task", [0, 1, 2]),
                          ("reset_task", [3, 4, 5])]  # fmt: skip
    assert venv.get_tasks() == [a, a, a, b, b, b]
    calls.clear()
    venv.set_tasks([b, a], indices=[1, 4])
    assert [c for c in calls if c[0] == "reset_task"] == [("reset_task", [1]), ("reset_task", [4])]
    assert venv.get_tasks() == [a, b, a, b, a, b]


@pytest.mark.parametrize("kind", KINDS)
def test_tasks_persist_across_automatic_resets(kind):
    env = PointMassTasks(max_episode_steps=5)
    venv = make_task_vec_env(env, 3, seed=0, vec_env_cls=kind)
    tasks = tasks_of(3, seed=1)
    venv.set_tasks(tasks)
    venv.reset()
    for step in range(1, 13):
        obs, _, dones, infos = venv.step(np.full((3, 2), 0.3, dtype=np.float32))
        assert [info["task"] for info in infos] == tasks
        assert dones.tolist() == [step % 5 == 0] * 3
        if step % 5 == 0:  # auto-reset: back at the task's start, same task
            np.testing.assert_array_equal(obs, np.array([t.start for t in tasks], dtype=np.float32))
            assert all(info["TimeLimit.truncated"] for info in infos)
    assert venv.get_tasks() == tasks
    venv.reset()  # an explicit reset keeps them as well
    assert venv.get_tasks() == tasks


def test_subproc_fallback():
    venv = make_task_vec_env(PointMassTasks(max_episode_steps=3), 2, seed=0, vec_env_cls="subproc")
    try:
        assert type(venv) is TaskSubprocVecEnv
        tasks = tasks_of(2)
        venv.set_tasks(tasks)
        assert venv.get_tasks() == tasks
        venv.reset()
        for _ in range(4):
            _, _, _, infos = venv.step(np.zeros((2, 2), dtype=np.float32))
        assert [info["task"] for info in infos] == tasks and venv.get_tasks() == tasks
        new = PointMassTask(goal=(0.2, 0.2))
        venv.env_method("reset_task", new, indices=[1])
        assert venv.get_tasks() == [tasks[0], new]
        with pytest.raises(ValueError, match=r"set_tasks\[1\]: expected a PointMassTask"):
            venv.set_tasks([new, ForeignTask()])
        assert venv.get_tasks() == [tasks[0], new]
    finally:
        venv.close()


# --- bad input: nothing half-applied -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_set_tasks_is_all_or_nothing(kind):
    venv = make_task_vec_env(PointMassTasks(), 3, seed=0, vec_env_cls=kind)
    tasks = tasks_of(3)
    venv.set_tasks(tasks)
    venv.reset()
    good = PointMassTask(goal=(0.3, 0.3))
    bad_cases = [
        ([good, ForeignTask(), good], None, r"set_tasks\[1\]: expected a PointMassTask, got ForeignTask"),
        ([good, good, {"goal": (0, 0)}], None, r"set_tasks\[2\]: expected a PointMassTask"),
        ([good, good], None, r"expected 3 tasks \(one per sub-env\), got 2"),
        (good, None, "expected a sequence of 3 PointMassTask"),
        ([good], [5], r"indices \[5\] out of range"),
    ]
    for bad, indices, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            venv.set_tasks(bad, indices=indices)
        assert venv.get_tasks() == tasks
    with pytest.raises(ValueError, match="expected a PointMassTask"):
        venv.env_method("reset_task", ForeignTask(), indices=[0])
    assert venv.get_tasks() == tasks
    # the dynamics still use the old tasks
    _, rewards, _, _ = venv.step(np.zeros((3, 2), dtype=np.float32))
    expected = [-np.hypot(t.start[0] - t.goal[0], t.start[1] - t.goal[1]) for t in tasks]
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_actions_raise_and_leave_the_state_unchanged(kind):
    venv = make_task_vec_env(PointMassTasks(), 2, seed=0, vec_env_cls=kind)
    venv.reset()
    before = positions(venv)
    for bad, message in [
        (np.array([[0.1, np.nan], [0.0, 0.0]]), "must be finite"),
        (np.array([[0.1, 0.0], [np.inf, 0.0]]), "must be finite"),
        (np.zeros((2, 3)), r"Expected actions of shape \(2, 2\)"),
        (np.zeros((3, 2)), r"Expected actions of shape \(2, 2\)"),
        (np.zeros(2), r"Expected actions of shape \(2, 2\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            venv.step(bad)
        np.testing.assert_array_equal(positions(venv), before)
    obs, *_ = venv.step(np.full((2, 2), 0.5))
    np.testing.assert_allclose(obs, before + 0.05, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_reset_options(kind):
    venv = make_task_vec_env(PointMassTasks(), 2, seed=0, vec_env_cls=kind)
    tasks = tasks_of(2)
    venv.set_tasks(tasks)
    venv.reset()
    new = PointMassTask(goal=(0.1, 0.0), start=(0.3, 0.3))
    venv.set_options([{"task": new}, {}])
    obs = venv.reset()
    assert venv.get_tasks() == [new, tasks[1]]
    np.testing.assert_array_equal(obs[0], np.float32([0.3, 0.3]))
    venv.set_options([{}, {"sample_task": True}])
    venv.reset()
    assert venv.get_tasks()[0] == new and venv.get_tasks()[1] not in tasks
    current = venv.get_tasks()
    venv.set_options([{"task": new}, {"task": ForeignTask()}])
    with pytest.raises(ValueError, match="expected a PointMassTask"):
        venv.reset()
    assert venv.get_tasks() == current


# --- seeding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_sub_envs_are_reproducible_and_independent(kind):
    state = np.random.get_state()

    def first_tasks(seed, mixture=False):
        venv = make_task_vec_env(PointMassTasks(sample_task_on_reset=mixture), 3, seed=seed, vec_env_cls=kind)
        venv.reset()
        return venv.get_tasks()

    a, b, c = first_tasks(0), first_tasks(0), first_tasks(1)
    assert a == b and a != c and len(set(a)) == 3
    # sub-env i is seeded with seed + i, like a single env reset with that seed
    single = PointMassTasks()
    single.reset(seed=2)
    assert a[2] == single.get_task()
    after = np.random.get_state()
    assert np.array_equal(after[1], state[1]) and after[2:] == state[2:]


@pytest.mark.parametrize("kind", KINDS)
def test_reseeding_redraws_a_drawn_task_and_keeps_a_given_one(kind):
    """``seed(s)`` + ``reset()`` after some episodes starts what a fresh VecEnv seeded with ``s`` starts (gymnasium's
    meaning of a seed), for tasks the sub-envs drew themselves; tasks given with ``set_tasks`` stay."""
    fresh = make_task_vec_env(PointMassTasks(), 3, seed=5, vec_env_cls=kind)
    fresh_obs = fresh.reset()
    used = make_task_vec_env(PointMassTasks(), 3, seed=1, vec_env_cls=kind)
    used.reset()
    used.step(np.full((3, 2), 0.3, dtype=np.float32))
    assert used.get_tasks() != fresh.get_tasks()
    used.seed(5)
    np.testing.assert_array_equal(used.reset(), fresh_obs)
    assert used.get_tasks() == fresh.get_tasks()
    given = tasks_of(3, seed=9)
    used.set_tasks(given)
    used.seed(7)
    used.reset()
    assert used.get_tasks() == given


@pytest.mark.parametrize("make", [PointMassTasks, AntVelTasks], ids=["pointmass", "antvel"])
def test_single_env_reset_with_a_seed_equals_a_fresh_env(make):
    fresh_obs, fresh_info = make().reset(seed=3)
    env = make()
    env.reset(seed=0)
    env.step(env.action_space.sample())
    obs, info = env.reset(seed=3)
    np.testing.assert_array_equal(obs, fresh_obs)
    assert info["task"] == fresh_info["task"]
    given = make().sample_tasks(1)[0]
    env.reset_task(given)
    assert env.reset(seed=4)[1]["task"] == given  # a given task stays across reseeding


@pytest.mark.parametrize("kind", KINDS)
def test_unseeded_mixture_differs_across_sub_envs(kind):
    # Regression: copies of one env used to share one task RNG, so every sub-env drew the same tasks.
    venv = make_task_vec_env(PointMassTasks(sample_task_on_reset=True, max_episode_steps=2), 4, vec_env_cls=kind)
    venv.reset()
    assert len(set(venv.get_tasks())) == 4
    venv.step(np.zeros((4, 2)))
    venv.step(np.zeros((4, 2)))
    assert len(set(venv.get_tasks())) == 4
    # a seeded template gives reproducible sub-env RNGs even without a seed argument
    runs = []
    for _ in range(2):
        venv = make_task_vec_env(PointMassTasks(seed=3, sample_task_on_reset=True), 4, vec_env_cls=kind)
        venv.reset()
        runs.append(venv.get_tasks())
    assert runs[0] == runs[1]


def test_sub_envs_start_with_the_template_task():
    env = PointMassTasks(seed=0)
    env.reset()
    for kind in KINDS:
        venv = make_task_vec_env(env, 3, seed=5, vec_env_cls=kind)
        venv.reset()
        assert venv.get_tasks() == [env.get_task()] * 3


# --- batched == single envs, bitwise ------------------------------------------------------------------


@pytest.mark.parametrize("mixture", [False, True], ids=["fixed_tasks", "mixture"])
def test_batched_equals_single_envs_bitwise(mixture):
    n, horizon = 5, 12
    env = PointMassTasks(max_episode_steps=horizon, goal_radius=0.05, sample_task_on_reset=mixture)
    rng = np.random.default_rng(0)
    # mostly towards the goal (so that some episodes terminate early), with out-of-range values to clip
    actions = rng.normal(0.0, 1.5, size=(60, n, 2)).astype(np.float32)
    runs = {}
    for kind in KINDS:
        venv = make_task_vec_env(env, n, seed=10, vec_env_cls=kind)
        if not mixture:
            venv.set_tasks(tasks_of(n, seed=4))
        steered = actions.copy()
        out = {"obs": [venv.reset()], "rewards": [], "dones": [], "tasks": [], "terminal": [], "truncated": []}
        for t in range(len(actions)):
            goals = np.array([task.goal for task in venv.get_tasks()])
            if t % 2:  # steer towards the goal every other step
                steered[t] = np.clip((goals - out["obs"][-1]) / env.action_scale, -1.0, 1.0).astype(np.float32)
            obs, rewards, dones, infos = venv.step(steered[t])
            out["obs"].append(obs)
            out["rewards"].append(rewards)
            out["dones"].append(dones)
            out["tasks"].append([info["task"] for info in infos] + venv.get_tasks())
            out["terminal"].append([info.get("terminal_observation") for info in infos])
            out["truncated"].append([info.get("TimeLimit.truncated") for info in infos])
        runs[kind] = out
    batched, dummy = runs["batched"], runs["dummy"]
    for key in ("obs", "rewards", "dones"):
        a, b = np.array(batched[key]), np.array(dummy[key])
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), key
    assert batched["tasks"] == dummy["tasks"] and batched["truncated"] == dummy["truncated"]
    for row_a, row_b in zip(batched["terminal"], dummy["terminal"], strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            assert (x is None and y is None) or x.tobytes() == y.tobytes()
    dones = np.array(batched["dones"])
    truncated = np.array([[bool(v) for v in row] for row in batched["truncated"]])
    assert (dones & ~truncated).sum() >= 3 and truncated.sum() >= 3  # both kinds of episode end happened
    if mixture:
        assert len({task for row in batched["tasks"] for task in row}) > 2 * n
    else:
        assert len({task for row in batched["tasks"] for task in row}) == n


def test_batched_matches_a_hand_rolled_single_env():
    env = PointMassTasks(max_episode_steps=4)
    tasks = tasks_of(2, seed=9)
    venv = PointMassVecEnv(env, 2)
    venv.set_tasks(tasks)
    singles = [PointMassTasks(max_episode_steps=4) for _ in tasks]
    obs = venv.reset()
    expected = np.array([s.reset(options={"task": t})[0] for s, t in zip(singles, tasks, strict=True)])
    assert obs.tobytes() == expected.tobytes()
    rng = np.random.default_rng(1)
    for _ in range(9):
        actions = rng.uniform(-2, 2, size=(2, 2)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        for i, single in enumerate(singles):
            o, r, term, trunc, _ = single.step(actions[i])
            assert np.float32(r) == rewards[i] and (term or trunc) == dones[i]
            if term or trunc:
                assert infos[i]["terminal_observation"].tobytes() == o.tobytes()
                o, _ = single.reset()
            assert o.tobytes() == obs[i].tobytes()


# --- helpers ------------------------------------------------------------------------------------------


def test_check_actions():
    box = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    assert check_actions(np.zeros((3, 2), dtype=np.float32), box, 3).dtype == np.float64
    assert check_actions([0.5, 0.5], box, 1).shape == (1, 2)
    with pytest.raises(ValueError, match="Expected 2 actions"):
        check_actions([[0.5, 0.5], [0.1]], box, 2)
    discrete = gym.spaces.Discrete(3)
    np.testing.assert_array_equal(check_actions([0, 2, 1.0], discrete, 3), [0, 2, 1])
    for bad, message in [([0, 3], r"lie in \[0, 3\)"), ([0.5, 1], "must be integers"), ([np.nan, 1], "must be integers")]:
        with pytest.raises(ValueError, match=message):
            check_actions(bad, discrete, 2)
    with pytest.raises(ValueError, match="Unsupported action space"):
        check_actions([0], gym.spaces.MultiBinary(1), 1)


def test_batched_vec_env_only_supports_task_methods():
    venv = make_task_vec_env(PointMassTasks(), 2)
    with pytest.raises(NotImplementedError, match="vec_env_cls='dummy'"):
        venv.env_method("render")
    with pytest.raises(ValueError, match="needs all indices"):
        venv.set_attr("goal_radius", 0.1, indices=[0])
    venv.set_attr("goal_radius", 0.1)
    assert venv.get_attr("goal_radius") == [0.1, 0.1]
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]


def test_packed_infos_unpack_into_the_infos_of_a_step_and_slice_like_shards():
    from sb3_meta.envs import AntVelTasks

    venvs = [make_task_vec_env(AntVelTasks(max_episode_steps=7), 5, seed=2) for _ in range(2)]
    for venv in venvs:
        venv.reset()
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 8)).astype(np.float32)
    ended = 0
    for _ in range(8):  # past the horizon: terminal observations appear
        obs, rewards, dones, infos = venvs[0].step(actions)
        ended += sum("terminal_observation" in i for i in infos)
        packed_obs, packed_rewards, packed_dones, packed = venvs[1].step_packed(actions)
        assert np.array_equal(obs, packed_obs) and np.array_equal(rewards, packed_rewards)
        assert np.array_equal(dones, packed_dones)
        unpacked = packed.unpack()
        assert [sorted(i) for i in unpacked] == [sorted(i) for i in infos]
        for mine, theirs in zip(unpacked, infos):
            for key, value in theirs.items():
                assert np.array_equal(mine[key], value) and type(mine[key]) is type(value), key
        shards = packed.slice(0, 2).unpack() + packed.slice(2, 5).unpack()
        assert all(
            np.array_equal(a.get("terminal_observation", 0), b.get("terminal_observation", 0)) for a, b in zip(shards, infos)
        )
        assert [a["x_velocity"] for a in shards] == [b["x_velocity"] for b in infos]
    assert ended >= 5


def test_an_explicit_batched_class_refuses_wrappers_it_would_drop():
    """vec_env_cls=PointMassVecEnv (the class) is checked like vec_env_cls="batched"."""
    import gymnasium as gym

    from sb3_meta.envs import OracleObservation, PointMassTasks
    from sb3_meta.envs.point_mass import PointMassVecEnv

    for wrapped in (gym.make("sb3_meta/PointMass-v0", max_episode_steps=5), OracleObservation(PointMassTasks())):
        with pytest.raises(
            ValueError, match=r"carries wrappers or a render_mode that a batched VecEnv \(PointMassVecEnv\) would drop"
        ):
            make_task_vec_env(wrapped, 2, vec_env_cls=PointMassVecEnv)
    assert isinstance(make_task_vec_env(PointMassTasks(), 2, vec_env_cls=PointMassVecEnv), PointMassVecEnv)


def test_oracle_vec_env_over_sb3_sub_envs_that_have_no_task_yet():
    """OracleVecEnv over a TaskDummyVecEnv before its first reset (the mixture builder's oracle path for an env
    with a render_mode): the task size comes from the distribution, the observations from the sub-envs' tasks."""
    from sb3_meta.envs import OracleObservation, OracleVecEnv, PointMassTasks, make_mixture_vec_env

    venv = OracleVecEnv(make_task_vec_env(PointMassTasks(), 2, seed=0, vec_env_cls="dummy"))
    obs = venv.reset()
    assert obs.shape == (2, 6)
    np.testing.assert_array_equal(obs[:, 2:], np.stack([task.as_array() for task in venv.get_tasks()]).astype(obs.dtype))
    assert make_mixture_vec_env(PointMassTasks(render_mode="rgb_array"), 2, seed=0, oracle=True).reset().shape == (2, 6)
    single = OracleObservation(PointMassTasks())
    assert venv.observation_space == single.observation_space


def test_a_time_limit_longer_than_the_distributions_own_warns():
    import gymnasium as gym

    with pytest.warns(
        UserWarning, match=r"own max_episode_steps=100 ends the episodes first.*PointMassTasks\(max_episode_steps=500\)"
    ):
        make_task_vec_env(gym.make("sb3_meta/PointMass-v0", max_episode_steps=500), 2)


@pytest.mark.parametrize("kind", KINDS)
def test_negative_indices_count_from_the_end_as_in_sb3(kind):
    venv = make_task_vec_env(PointMassTasks(), 3, seed=0, vec_env_cls=kind)
    tasks = tasks_of(3)
    venv.set_tasks(tasks)
    assert venv.get_tasks(indices=-1) == [tasks[2]] and venv.get_tasks(indices=[-3, 1]) == [tasks[0], tasks[1]]
    venv.set_tasks([tasks[0]], indices=-1)
    assert venv.get_tasks() == [tasks[0], tasks[1], tasks[0]]
    with pytest.raises(ValueError, match=r"indices \[-4\] out of range"):
        venv.get_tasks(indices=[-4])


def test_a_models_sb3_vec_env_chain_gains_the_task_api_in_place_and_only_once_accepted():
    """``make_vec_env`` VecEnvs keep their objects: the DummyVecEnv at the bottom of the chain becomes a
    TaskDummyVecEnv (no layer is added); a refused env is left as it was; another VecEnv class gets a wrapper."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from sb3_meta import FOMAML
    from sb3_meta.envs.vec_env import TaskVecEnvWrapper

    venv = VecFrameStack(make_vec_env("sb3_meta/PointMass-v0", n_envs=4, seed=0), n_stack=2)
    base = venv.venv
    with pytest.raises(ValueError, match="meta_batch_size x fast_batch_size = 6"):
        FOMAML("MlpPolicy", venv, meta_batch_size=3, fast_batch_size=2)
    assert type(base) is DummyVecEnv  # nothing half-applied

    model = FOMAML("MlpPolicy", venv, meta_batch_size=2, fast_batch_size=2, seed=0)
    assert model.get_env().venv is venv and venv.venv is base and type(base) is TaskDummyVecEnv
    tasks = tasks_of(2)
    venv.set_tasks([tasks[0], tasks[0], tasks[1], tasks[1]])  # through SB3's attribute forwarding
    assert base.get_tasks() == [tasks[0], tasks[0], tasks[1], tasks[1]] == base.get_attr("task")
    obs = venv.reset()
    assert obs.shape == (4, 4)  # still the user's frame stack of 2 x 2-d observations

    class MyVecEnv(DummyVecEnv):
        """A VecEnv class of the user's own: the model wraps it instead of changing its class."""

    own = MyVecEnv([lambda: PointMassTasks(seed=1)] * 4)
    model = FOMAML("MlpPolicy", own, meta_batch_size=2, fast_batch_size=2, seed=0)
    assert type(own) is MyVecEnv and isinstance(model.get_env().venv, TaskVecEnvWrapper)
