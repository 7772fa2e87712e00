"""Task distributions (single envs): the task interface, PointMass, the oracle / mixture wrappers, the docs example."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import re
import sys
import types
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env

from sb3_meta.envs import (
    OracleObservation,
    PointMassTask,
    PointMassTasks,
    Task,
    TaskEnv,
    TaskMixture,
    core,
    make_oracle_env,
    make_task_vec_env,
)
from sb3_meta.envs.wrappers import oracle_env_id

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_task_distribution.md"

# Warnings that are expected from the env checkers: the point mass has an unbounded observation box, and
# gymnasium notes that a wrapped env is not its unwrapped version. Anything else fails the test.
ALLOWED_CHECKER_WARNINGS = (
    "A Box observation space minimum value is -infinity",
    "A Box observation space maximum value is infinity",
    "is different from the unwrapped version",
)


@dataclasses.dataclass(frozen=True)
class OtherTask(Task):
    """A task of another distribution, with the same fields as PointMassTask."""

    goal: tuple[float, float] = (0.0, 0.0)
    start: tuple[float, float] = (0.0, 0.0)


def run_checkers(make_env) -> list[str]:
    """Run gymnasium's and SB3's env checkers; return the messages of unexpected warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(make_env(), skip_render_check=True)
        sb3_check_env(make_env(), warn=True)
    messages = [str(w.message) for w in caught]
    return [m for m in messages if not any(allowed in m for allowed in ALLOWED_CHECKER_WARNINGS)]


# --- the Task base class ------------------------------------------------------------------------------


def test_task_is_frozen_hashable_printable_and_normalised():
    task = PointMassTask(goal=[0.1, np.float32(-0.2)], start=np.array([0.0, 0.3]))
    assert task.goal == (0.1, pytest.approx(-0.2)) and isinstance(task.goal, tuple)
    assert all(type(v) is float for v in task.goal + task.start)
    assert task == PointMassTask(goal=(0.1, float(np.float32(-0.2))), start=(0.0, 0.3))
    assert len({task, copy.deepcopy(task)}) == 1
    assert repr(task).startswith("PointMassTask(goal=(0.1, ")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.goal = (1.0, 1.0)  # type: ignore[misc]
    np.testing.assert_array_equal(task.as_array(), np.array([0.1, -0.2, 0.0, 0.3], dtype=np.float32))
    assert task.as_array().dtype == np.float32


def test_task_types_are_told_apart():
    a, b = PointMassTask(goal=(0.1, 0.2)), OtherTask(goal=(0.1, 0.2))
    assert a != b
    assert Task.from_json(b.to_json()) == b and type(Task.from_json(b.to_json())) is OtherTask
    with pytest.raises(ValueError, match="Expected a PointMassTask, got a OtherTask"):
        PointMassTask.from_json(b.to_json())


def test_task_classes_of_one_name_are_kept_apart():
    def define(module: str) -> type[Task]:
        namespace = {"__module__": module, "__qualname__": "DuplicateNameTask", "__annotations__": {"x": float}, "x": 0.0}
        return dataclasses.dataclass(frozen=True)(type("DuplicateNameTask", (Task,), namespace))

    first, second = define("pkg_a"), define("pkg_b")
    text = first(x=1.0).to_json()
    with pytest.raises(ValueError, match="'DuplicateNameTask' is ambiguous"):
        Task.from_json(text)
    assert first.from_json(text) == first(x=1.0) and second.from_json(text) == second(x=1.0)
    again = define("pkg_a")  # defined again at the same place: replaces the old class, no ambiguity with it
    assert [c for c in core._TASK_REGISTRY["DuplicateNameTask"] if c.__module__ == "pkg_a"] == [again]


def test_task_json_and_pickle_round_trips():
    task = PointMassTasks(seed=3).sample_tasks(1)[0]
    data = json.loads(task.to_json())
    assert data == {"type": "PointMassTask", "goal": list(task.goal), "start": list(task.start)}
    assert PointMassTask.from_json(task.to_json()) == task
    assert Task.from_dict(task.to_dict()) == task
    assert pickle.loads(pickle.dumps(task)) == task
    # a task outside the sampling range is fine (but must be finite)
    far = PointMassTask(goal=(10.0, -7.5), start=(3.0, 3.0))
    assert PointMassTask.from_json(far.to_json()) == far


@pytest.mark.parametrize(
    "kwargs",
    [
        {"goal": (math.nan, 0.0)},
        {"goal": (0.0, math.inf)},
        {"goal": (0.0, 0.0, 0.0)},
        {"goal": (0.0,)},
        {"goal": 0.5},
        {"goal": ("a", "b")},
        {"goal": (True, False)},
        {"start": None},
    ],
)
def test_malformed_task_is_rejected(kwargs):
    with pytest.raises(ValueError, match=r"PointMassTask\.(goal|start)"):
        PointMassTask(**kwargs)


@pytest.mark.parametrize(
    "data, message",
    [
        ('{"goal": [0, 0], "start": [0, 0]}', "'type' key"),
        ('{"type": "NoSuchTask"}', "Unknown task type"),
        ('{"type": "PointMassTask", "goal": [0, 0]}', r"missing \['start'\]"),
        ('{"type": "PointMassTask", "goal": [0, 0], "start": [0, 0], "speed": 1}', r"unknown \['speed'\]"),
        ('{"type": "PointMassTask", "goal": [0, NaN], "start": [0, 0]}', "must be finite"),
        ("not json", "Expected a JSON task"),
    ],
)
def test_malformed_json_is_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        PointMassTask.from_json(data)


# --- PointMassTasks: interface, seeding, task persistence --------------------------------------------


def test_interface():
    env = PointMassTasks(seed=0)
    assert isinstance(env, gym.Env) and isinstance(env, TaskEnv)
    assert env.task_type is PointMassTask
    with pytest.raises(RuntimeError, match="no task yet"):
        env.get_task()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.float32))
    tasks = env.sample_tasks(5)
    assert len(tasks) == 5 and all(type(t) is PointMassTask for t in tasks)
    assert all(abs(v) <= 0.5 for t in tasks for v in t.goal + t.start)
    assert len(set(tasks)) == 5
    env.reset_task(tasks[2])
    assert env.get_task() == tasks[2]
    obs, info = env.reset()
    assert info["task"] == tasks[2]
    assert obs.dtype == np.float32 and obs in env.observation_space
    np.testing.assert_array_equal(obs, np.array(tasks[2].start, dtype=np.float32))
    origin = PointMassTasks(start="origin", seed=0).sample_tasks(3)
    assert all(t.start == (0.0, 0.0) for t in origin)


def test_sample_tasks_is_seeded_and_leaves_global_rng_alone():
    state = np.random.get_state()
    a = PointMassTasks(seed=7).sample_tasks(4)
    b = PointMassTasks(seed=7).sample_tasks(4)
    c = PointMassTasks(seed=8).sample_tasks(4)
    assert a == b and a != c
    # reset(seed=...) reseeds the task RNG the same way as the constructor
    env = PointMassTasks(seed=123)
    env.reset()  # has a task from now on, so reset() draws none
    env.sample_tasks(3)
    env.reset(seed=7)
    d = env.sample_tasks(4)
    env.reset(seed=7)
    assert env.sample_tasks(4) == d
    # the first task drawn by reset(seed=...) is reproducible too
    e1, e2 = PointMassTasks(), PointMassTasks()
    e1.reset(seed=5)
    e2.reset(seed=5)
    assert e1.get_task() == e2.get_task()
    env.step(env.action_space.sample())
    TaskMixture(PointMassTasks(seed=1)).reset()
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_task_persists_across_reset_and_reset_options():
    env = PointMassTasks(seed=0)
    t1, t2 = env.sample_tasks(2)
    env.reset(options={"task": t1})
    for _ in range(3):
        obs, _ = env.reset()
        assert env.get_task() == t1
        np.testing.assert_array_equal(obs, np.float32(t1.start))
    env.reset(seed=99)  # reseeding does not replace the task either
    assert env.get_task() == t1
    env.reset_task(t2)
    env.reset()
    assert env.get_task() == t2
    env.reset(options={"sample_task": True})
    assert env.get_task() not in (t1, t2)
    mixture = PointMassTasks(seed=0, sample_task_on_reset=True)
    seen = set()
    for _ in range(4):
        mixture.reset()
        seen.add(mixture.get_task())
    assert len(seen) == 4


def test_reset_with_bad_options_changes_nothing():
    env = PointMassTasks(seed=0)
    env.reset()
    task = env.get_task()
    rng_state = copy.deepcopy(env.task_rng.bit_generator.state)
    for options, message in [
        ({"task": OtherTask()}, "expected a PointMassTask, got OtherTask"),
        ({"task": {"goal": (0, 0)}}, "expected a PointMassTask"),
        ({"task": task, "sample_task": True}, "not both"),
        ({"goal": (0, 0)}, "Unknown reset options"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.reset(seed=5, options=options)
        assert env.get_task() == task
        assert env.task_rng.bit_generator.state == rng_state


def test_reset_task_rejects_bad_tasks():
    env = PointMassTasks(seed=0)
    env.reset()
    task = env.get_task()
    for bad in [OtherTask(), None, (0.1, 0.2), {"goal": (0.1, 0.2)}, "PointMassTask"]:
        with pytest.raises(ValueError, match="expected a PointMassTask"):
            env.reset_task(bad)  # type: ignore[arg-type]
        assert env.get_task() == task
    for n in [0, -1, 1.5, True, "2", None]:
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            env.sample_tasks(n)  # type: ignore[arg-type]


def test_bad_actions_raise_and_leave_the_state_unchanged():
    env = PointMassTasks(seed=0)
    obs, _ = env.reset()
    for bad, message in [
        (np.array([np.nan, 0.0]), "must be finite"),
        (np.array([0.0, np.inf]), "must be finite"),
        (np.zeros(3), r"Expected an action of shape \(2,\) .*got shape \(3,\)"),  # one env's shapes
        (np.zeros((1, 2)), r"Expected an action of shape \(2,\) .*got shape \(1, 2\)"),
        (0.5, r"Expected an action of shape \(2,\) .*got shape \(\)"),
        (np.array(["a", "b"]), "Expected real numeric actions"),
        (np.array([True, False]), "Expected real numeric actions"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.step(bad)
    obs2, _, _, _, _ = env.step(np.zeros(2))
    np.testing.assert_array_equal(obs2, obs)  # the failed steps moved nothing
    assert env._elapsed == 1


def test_constructor_rejects_bad_arguments():
    for kwargs in [
        {"start": "corner"},
        {"goal_range": 0.0},
        {"goal_range": float("inf")},
        {"action_scale": -1.0},
        {"action_scale": float("inf")},
        {"goal_radius": -0.1},
        {"max_episode_steps": 0},
        {"max_episode_steps": 2.5},  # not truncated to 2
        {"max_episode_steps": True},
        {"max_episode_steps": "5"},
    ]:
        with pytest.raises(ValueError):
            PointMassTasks(**kwargs)


# --- PointMass dynamics and reward, by hand ------------------------------------------------------------


def test_point_mass_step_by_hand():
    env = PointMassTasks()
    task = PointMassTask(goal=(0.3, -0.2), start=(0.1, 0.1))
    env.reset(options={"task": task})
    # the action is clipped to [-1, 1] and scaled by 0.1
    obs, reward, terminated, truncated, info = env.step(np.array([3.0, -0.5], dtype=np.float32))
    position = np.array([0.1 + 0.1 * 1.0, 0.1 + 0.1 * -0.5])
    expected = -math.sqrt((position[0] - 0.3) ** 2 + (position[1] + 0.2) ** 2)
    np.testing.assert_allclose(obs, position.astype(np.float32))
    assert reward == pytest.approx(expected, abs=1e-12)
    assert info["distance"] == pytest.approx(-expected, abs=1e-12) and info["task"] == task
    assert not terminated and not truncated
    # the new task's reward applies from the next step, its start from the next reset
    env.reset_task(PointMassTask(goal=(0.2, 0.05), start=(0.0, 0.0)))
    obs, reward, *_ = env.step(np.zeros(2))
    assert reward == pytest.approx(-math.hypot(0.2 - 0.2, 0.05 - 0.05), abs=1e-7)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, np.zeros(2, dtype=np.float32))


def test_point_mass_terminates_within_goal_radius():
    env = PointMassTasks()
    env.reset(options={"task": PointMassTask(goal=(0.195, 0.0), start=(0.0, 0.0))})
    _, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.0]))
    assert reward == pytest.approx(-0.095) and not terminated  # 0.095 away
    _, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.0]))
    assert reward == pytest.approx(-0.005) and terminated and not truncated  # 0.005 < 0.01


def test_point_mass_truncates_at_100_steps():
    env = PointMassTasks()
    env.reset(options={"task": PointMassTask(goal=(0.5, 0.5), start=(-0.5, -0.5))})
    for step in range(1, 101):
        _, reward, terminated, truncated, _ = env.step(np.zeros(2))
        assert not terminated
        assert truncated == (step == 100)
        assert reward == pytest.approx(-math.sqrt(2.0))


# --- env checkers, registration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_env",
    [
        lambda: PointMassTasks(),
        lambda: PointMassTasks(start="origin", sample_task_on_reset=True),
        lambda: OracleObservation(PointMassTasks()),
        lambda: TaskMixture(PointMassTasks()),
        lambda: TaskMixture(OracleObservation(PointMassTasks())),
        lambda: gym.make("sb3_meta/PointMass-v0"),
        lambda: gym.make("sb3_meta/PointMassOracle-v0"),
    ],
    ids=["point_mass", "point_mass_mixture_option", "oracle", "mixture", "oracle_mixture", "registered", "registered_oracle"],
)
def test_env_checkers_pass_without_warnings(make_env):
    assert run_checkers(make_env) == []


def test_point_mass_renders_the_plane():
    """rgb_array rendering (what SB3's make_vec_env asks for and VecVideoRecorder records), checked by pixel."""
    env = PointMassTasks(render_mode="rgb_array", goal_range=0.5)  # the view: [-1, 1]² on 128 x 128 pixels
    env.reset(options={"task": PointMassTask(goal=(0.5, 0.5), start=(-0.5, 0.0))})
    env.step(np.array([0.0, -1.0], dtype=np.float32))  # the point moves to (-0.5, -0.1)
    image = env.render()
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8

    def pixel(x, y):  # (x, y) in the plane → the image's (row, col); y points up
        return image[round((1 - y) / 2 * 127), round((x + 1) / 2 * 127)].tolist()

    assert pixel(0.5, 0.5) == [220, 40, 40]  # goal
    assert pixel(-0.5, 0.0) == [150, 150, 150]  # start
    assert pixel(-0.5, -0.1) == [40, 70, 220]  # point
    assert pixel(0.0, -0.8) == [255, 255, 255]
    env.reset_task(PointMassTask(goal=(0.0, 0.0), start=(3.0, -3.0)))
    env.reset()  # outside the view: drawn in the corner
    assert env.render()[127, 127].tolist() == [40, 70, 220]
    gym_check_env(PointMassTasks(render_mode="rgb_array"))  # with its render check
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 passes render_mode="rgb_array": no warning that it is not supported
        venv = make_vec_env("sb3_meta/PointMass-v0", n_envs=2)
    venv.reset()
    assert [frame.shape for frame in venv.get_images()] == [(128, 128, 3)] * 2
    with pytest.raises(ValueError, match="render_mode"):
        PointMassTasks(render_mode="human")


def test_registered_ids():
    env = gym.make("sb3_meta/PointMass-v0", goal_range=1.0, seed=3)
    assert isinstance(env.unwrapped, PointMassTasks) and env.unwrapped.goal_range == 1.0
    assert env.spec is not None and env.spec.max_episode_steps == 100
    assert env.unwrapped.sample_tasks(2) == PointMassTasks(goal_range=1.0, seed=3).sample_tasks(2)
    assert oracle_env_id("sb3_meta/PointMass-v0") == "sb3_meta/PointMassOracle-v0"
    oracle = gym.make("sb3_meta/PointMassOracle-v0", seed=3)
    assert isinstance(oracle, OracleObservation) and oracle.observation_space.shape == (6,)
    obs, _ = oracle.reset()
    task = oracle.get_wrapper_attr("get_task")()
    np.testing.assert_array_equal(obs[2:], task.as_array())
    assert isinstance(make_oracle_env("sb3_meta/PointMass-v0", start="origin"), OracleObservation)
    with pytest.raises(ValueError, match="env_kwargs"):
        make_oracle_env(PointMassTasks(), start="origin")


# --- wrappers ---------------------------------------------------------------------------------------


def test_oracle_observation():
    base = PointMassTasks(seed=4)
    env = OracleObservation(base)
    assert env.observation_space.shape == (6,) and env.observation_space.dtype == np.float32
    # wrapping does not advance the task RNG
    assert env.sample_tasks(3) == PointMassTasks(seed=4).sample_tasks(3)
    task = PointMassTask(goal=(2.0, -3.0), start=(0.25, 0.5))  # outside the sampling range: allowed
    obs, _ = env.reset(options={"task": task})
    np.testing.assert_array_equal(obs, np.array([0.25, 0.5, 2.0, -3.0, 0.25, 0.5], dtype=np.float32))
    obs, *_ = env.step(np.array([1.0, 0.0]))
    np.testing.assert_allclose(obs, np.array([0.35, 0.5, 2.0, -3.0, 0.25, 0.5], dtype=np.float32))
    # the task API stays reachable: on the wrapper, through unwrapped and through get_wrapper_attr
    other = PointMassTask(goal=(0.1, 0.1), start=(0.0, 0.0))
    env.get_wrapper_attr("reset_task")(other)
    assert env.unwrapped.get_task() == other and env.get_task() == other and env.task_type is PointMassTask
    obs, *_ = env.step(np.zeros(2))
    np.testing.assert_allclose(obs[2:], [0.1, 0.1, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected a PointMassTask"):
        env.reset_task(OtherTask())
    with pytest.raises(ValueError, match="not a task distribution"):
        OracleObservation(gym.make("CartPole-v1"))


class DictPointMass(PointMassTasks):
    """PointMass with a Dict observation, to check the Dict form of OracleObservation."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return {"position": obs}, info

    def step(self, action):
        obs, *rest = super().step(action)
        return {"position": obs}, *rest


def test_oracle_observation_dict_and_unsupported_spaces():
    env = OracleObservation(DictPointMass(seed=0))
    assert set(env.observation_space.spaces) == {"position", "task"}
    assert env.observation_space["task"].shape == (4,)
    task = PointMassTask(goal=(0.5, 0.25), start=(0.0, 0.0))
    obs, _ = env.reset(options={"task": task})
    assert obs in env.observation_space
    np.testing.assert_array_equal(obs["task"], task.as_array())
    with pytest.raises(ValueError, match="already has a 'task' entry"):
        OracleObservation(OracleObservation(DictPointMass()))
    flat = PointMassTasks()
    flat.observation_space = gym.spaces.Discrete(3)
    with pytest.raises(ValueError, match="needs a flat Box or a Dict observation space"):
        OracleObservation(flat)


def test_task_mixture():
    env = TaskMixture(PointMassTasks())
    env.reset(seed=11)
    tasks = [env.get_task()]
    for _ in range(4):
        env.reset()
        tasks.append(env.get_task())
    assert len(set(tasks)) == 5
    again = TaskMixture(PointMassTasks())
    again.reset(seed=11)
    replay = [again.get_task()] + [again.reset()[1]["task"] for _ in range(4)]
    assert replay == tasks
    fixed = PointMassTask(goal=(0.0, 0.1))
    env.reset(options={"task": fixed})
    assert env.get_task() == fixed
    assert env.get_wrapper_attr("sample_tasks")(2)[0] != env.sample_tasks(1)[0]


class TaskRecorder(BaseCallback):
    """Collects the tasks that the steps of a rollout ran on (``infos[i]["task"]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: set[Task] = set()

    def _on_step(self) -> bool:
        self.tasks.update(info["task"] for info in self.locals["infos"])
        return True


@pytest.mark.parametrize("wrapper", [OracleObservation, TaskMixture])
def test_sb3_trains_ppo_on_wrapped_point_mass(wrapper):
    venv = make_vec_env(lambda: wrapper(PointMassTasks()), n_envs=2, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    recorder = TaskRecorder()
    model.learn(total_timesteps=256, callback=recorder)
    assert model.num_timesteps == 256
    # 128 steps per sub-env: at least one episode ends (truncation at 100). The oracle env keeps its task,
    # the mixture draws a new one.
    if wrapper is TaskMixture:
        assert len(recorder.tasks) >= 3
    else:
        assert len(recorder.tasks) == 2
        assert model.observation_space.shape == (6,)
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2, 2) and np.all(np.isfinite(action))


# --- the documented example of a user-written task distribution -------------------------------------


def test_custom_task_distribution_example_runs():
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1 and "class LineTasks(TaskEnv[LineTask])" in blocks[0]
    module = types.ModuleType("custom_task_distribution_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
        line_task, line_tasks = module.LineTask, module.LineTasks
        # the example is a full task distribution
        assert run_checkers(lambda: line_tasks(seed=0)) == []
        assert run_checkers(lambda: OracleObservation(line_tasks(seed=0))) == []
        assert line_tasks(seed=1).sample_tasks(3) == line_tasks(seed=1).sample_tasks(3)
        task = module.tasks[0]
        assert pickle.loads(pickle.dumps(task)) == task and Task.from_json(task.to_json()) == task
        with pytest.raises(ValueError, match="expected a LineTask"):
            module.env.reset_task(0.5)
        with pytest.raises(ValueError):
            module.env.sample_tasks(0)
        with pytest.raises(ValueError, match="finite"):
            line_task(target=math.nan)
        venv = make_task_vec_env(line_tasks(seed=0), n_envs=2, seed=0)
        venv.set_tasks(module.tasks[:2])
        venv.reset()
        for _ in range(60):  # past the 50-step horizon: the tasks survive the automatic resets
            venv.step(np.ones((2, 1), dtype=np.float32))
        assert venv.get_tasks() == module.tasks[:2]
    finally:
        del sys.modules[module.__name__]


def test_the_sample_task_reset_option_is_a_flag():
    env = PointMassTasks(seed=0)
    env.reset()
    task = env.get_task()
    for bad in ("no", 0, 1.0, None):
        with pytest.raises(ValueError, match="'sample_task' must be True or False"):
            env.reset(options={"sample_task": bad})
    assert env.get_task() == task  # nothing drawn
    env.reset(options={"sample_task": False})
    assert env.get_task() == task
