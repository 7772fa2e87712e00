"""Reliability of the envs and the sampler: the MuJoCo dependency floor, non-finite padding, non-finite env outputs.

- MuJoCo floor: everything but the ``"batch"`` backend works without ``mujoco.batch`` and ``mujoco.mj_copyData``
  (both only in MuJoCo >= 3.17). Here they are hidden from the installed MuJoCo; ``.ci/mujoco_floor`` runs this
  file on the real MuJoCo 3.3.0 too.
- Padding: values of steps after a sub-env's episode ended are discarded, even NaN or inf (NaN · 0 = NaN).
- Non-finite observations or rewards on steps that count raise an error naming the env, sub-env, quantity and step.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch as th

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.base_class import MetaAlgorithm
from sb3_meta.common.meta_gradient import MetaObjective
from sb3_meta.common.policies import MetaActorCriticPolicy
from sb3_meta.common.rollout import (
    LinearFeatureBaseline,
    NonFiniteEnvOutputError,
    TaskBatch,
    collect_task_batch,
    discounted_returns,
    gae_advantages,
    normalize_per_task,
)
from sb3_meta.envs import (
    AntDirTasks,
    AntVelTasks,
    HalfCheetahDirTasks,
    HalfCheetahVelTasks,
    PointMassTasks,
    Task,
    TaskEnv,
    make_task_vec_env,
    mujoco_vec_env,
)
from sb3_meta.envs.mujoco_vec_env import MujocoTaskVecEnv, copy_mjdata

#: ``MjData`` arrays of sparse matrices (structure and values), whose entries past the used ones are unspecified
SPARSE_LAYOUT = re.compile(r"(colind|rowadr|rownnz|rowsuper)$|^efc_(J|JT|AR)$")
MUJOCO_ENVS = [AntVelTasks, AntDirTasks, HalfCheetahVelTasks, HalfCheetahDirTasks]


def assert_bitwise(a: Any, b: Any, what: str = "") -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: values differ"


# --- MuJoCo floor ------------------------------------------------------------------------------------
# Run in a fresh interpreter: mujoco.batch must be missing before sb3_meta's MuJoCo modules are first imported.
_WITHOUT_MUJOCO_BATCH = textwrap.dedent(
    """
    import importlib.abc
    import sys

    import numpy as np


    class HideMujocoBatch(importlib.abc.MetaPathFinder):
        # as on MuJoCo < 3.17, which has no mujoco.batch
        def find_spec(self, name, path=None, target=None):
            if name == "mujoco.batch":
                raise ModuleNotFoundError("No module named 'mujoco.batch'", name=name)
            return None


    sys.meta_path.insert(0, HideMujocoBatch())
    import mujoco

    if hasattr(mujoco, "mj_copyData"):
        del mujoco.mj_copyData  # also 3.17-only
    import sb3_meta  # noqa: F401
    from sb3_meta.envs import AntVelTasks, HalfCheetahVelTasks, MujocoTaskVecEnv, make_task_vec_env

    venv = make_task_vec_env(AntVelTasks(), 4, seed=0)
    venv.reset()
    obs, rewards, dones, infos = venv.step(np.zeros((4, 8)))
    assert obs.shape == (4, 105) and np.isfinite(obs).all(), obs.shape
    assert venv.backend == "threads"
    assert MujocoTaskVecEnv(HalfCheetahVelTasks(), 2).backend == "threads"  # "auto" without mujoco.batch
    try:
        MujocoTaskVecEnv(HalfCheetahVelTasks(), 2, backend="batch")
    except ValueError as error:
        print("ERROR:", error)
    """
)


def test_mujoco_envs_work_without_mujoco_batch() -> None:
    result = subprocess.run([sys.executable, "-c", _WITHOUT_MUJOCO_BATCH], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.split("ERROR:", 1)[1]
    assert "mujoco>=3.17" in message and "backend='threads'" in message and mujoco.__version__ in message


def test_auto_backend_without_mujoco_batch_is_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mujoco_vec_env, "mujoco_batch", lambda: None)
    assert MujocoTaskVecEnv(HalfCheetahDirTasks(), 2).backend == "threads"
    no_contact = AntVelTasks(include_cfrc_ext_in_observation=False, contact_cost_weight=0.0)
    assert MujocoTaskVecEnv(no_contact, 2).backend == "threads"
    with pytest.raises(ValueError, match=r"backend='batch' needs mujoco\.batch.*mujoco>=3\.17.*backend='threads'"):
        MujocoTaskVecEnv(HalfCheetahDirTasks(), 2, backend="batch")


@pytest.mark.skipif(mujoco_vec_env.mujoco_batch() is None, reason=f"MuJoCo {mujoco.__version__} has no mujoco.batch")
def test_auto_backend_with_mujoco_batch_is_batch() -> None:
    assert MujocoTaskVecEnv(HalfCheetahDirTasks(), 2).backend == "batch"


@pytest.mark.parametrize("env_cls", MUJOCO_ENVS)
def test_copies_continue_bitwise_without_mj_copyData(env_cls, monkeypatch: pytest.MonkeyPatch) -> None:
    """deepcopy / pickle mid-episode on a MuJoCo without ``mj_copyData``: the copy steps exactly like the original."""
    monkeypatch.delattr(mujoco, "mj_copyData", raising=False)
    env = env_cls(seed=5)
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(7):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    actions = rng.uniform(-1, 1, (5, *env.action_space.shape))
    expected = []
    reference = copy.deepcopy(env)  # one copy stepped as the reference, compared with every other copy
    for action in actions:
        expected.append(reference.step(action))
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert clone.get_task() == env.get_task()
        for t, action in enumerate(actions):
            got = clone.step(action)
            assert_bitwise(got[0], expected[t][0], f"obs at step {t}")
            assert got[1:4] == expected[t][1:4] and got[4] == expected[t][4]


@pytest.mark.skipif(not hasattr(mujoco, "mj_copyData"), reason=f"MuJoCo {mujoco.__version__} has no mj_copyData")
def test_copy_mjdata_matches_mj_copyData() -> None:
    """What the envs read between steps is copied exactly, and the next step leaves both copies identical."""
    env = AntVelTasks(seed=0)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    reference, copied = mujoco.MjData(env.model), mujoco.MjData(env.model)
    mujoco.mj_copyData(reference, env.model, env.data)
    copy_mjdata(env.model, copied, env.data)
    assert copied.time == reference.time
    for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "xpos", "xquat", "cfrc_ext", "cvel", "qacc"):
        assert_bitwise(getattr(copied, name), getattr(reference, name), name)
    ctrl = rng.uniform(-1, 1, env.model.nu)
    for data in (reference, copied):
        data.ctrl[:] = ctrl
        mujoco.mj_step(env.model, data, env.frame_skip)
        mujoco.mj_rnePostConstraint(env.model, data)
    assert copied.time == reference.time and copied.ncon == reference.ncon and copied.nefc == reference.nefc
    # every array, contacts and constraints included, but the sparse-matrix layouts (their unused entries are
    # whatever the arena held before)
    for name in dir(reference):
        value = None if name.startswith("_") else getattr(reference, name)
        if isinstance(value, np.ndarray) and not SPARSE_LAYOUT.search(name):
            assert_bitwise(getattr(copied, name), value, name)


# --- a tiny task distribution with controllable non-finite outputs ---------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyTask(Task):
    """Episodes of ``length`` steps; optionally a NaN observation / an inf reward at one step of each episode."""

    length: float = 6.0
    #: step of the episode whose observation is NaN (0: the reset observation; -1: never)
    bad_obs_step: float = -1.0
    #: step of the episode whose reward is inf (-1: never)
    bad_reward_step: float = -1.0


class ToyTasks(TaskEnv[ToyTask]):
    """Observation ``[t / 10, last action]``, reward ``-(a - 0.5)²``, termination after ``task.length`` steps.

    :param padding: if not None, every observation and reward of an episode begun by an *automatic* reset (one
        not preceded by ``reset_task``, i.e. padding for the sampler, which sets tasks before each pass) is this value
    :param bad_obs_step: ``bad_obs_step`` of the sampled tasks
    """

    task_type = ToyTask
    max_episode_steps = 6
    observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def __init__(self, seed: int | None = None, padding: float | None = None, bad_obs_step: float = -1.0) -> None:
        super().__init__(seed=seed)
        self.padding, self.bad_obs_step = padding, bad_obs_step
        self._steps, self._last, self._fresh, self._padding_episode = 0, 0.0, True, False

    def _sample_task(self, rng: np.random.Generator) -> ToyTask:
        return ToyTask(length=float(rng.integers(2, 7)), bad_obs_step=self.bad_obs_step)

    def _apply_task(self, task: ToyTask) -> None:
        self._fresh = True

    def _obs(self) -> np.ndarray:
        task = self.get_task()
        if self._padding_episode and self.padding is not None:
            return np.full(2, self.padding, dtype=np.float32)
        if self._steps == task.bad_obs_step:
            return np.array([np.nan, 0.0], dtype=np.float32)
        return np.array([self._steps / 10, self._last], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        super().reset(seed=seed, options=options)
        self._padding_episode, self._fresh = not self._fresh, False
        self._steps, self._last = 0, 0.0
        return self._obs(), {}

    def step(self, action):  # type: ignore[override]
        self._steps += 1
        self._last = float(np.asarray(action).ravel()[0])
        task = self.get_task()
        reward = -((self._last - 0.5) ** 2)
        if self._padding_episode and self.padding is not None:
            reward = self.padding
        elif self._steps == task.bad_reward_step:
            reward = np.inf
        terminated = self._steps >= task.length
        truncated = self._steps >= self.max_episode_steps and not terminated
        return self._obs(), float(reward), terminated, truncated, {}


def toy_policy(env: gym.Env) -> MetaActorCriticPolicy:
    th.manual_seed(0)
    return MetaActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=dict(pi=[8], vf=[]))


#: 3 tasks whose episodes end at different steps (padding after steps 2 and 4), 2 episodes each
TOY_TASKS = [ToyTask(length=2.0), ToyTask(length=6.0), ToyTask(length=4.0)]


def collect_toy(padding: float | None, tasks: list[ToyTask] = TOY_TASKS, policy=None) -> TaskBatch:
    env = ToyTasks(seed=0, padding=padding)
    venv = make_task_vec_env(env, 2 * len(tasks), seed=0)
    policy = policy or toy_policy(env)
    params = {k: v.detach() for k, v in policy.actor_parameters().items()}
    th.manual_seed(1)
    batch = collect_task_batch(venv, policy, tasks, 2, params, False, ToyTasks.max_episode_steps)
    assert batch is not None
    return batch


# --- NaN / inf in padding ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_padding_is_discarded_by_the_sampler(bad: float) -> None:
    clean, dirty = collect_toy(7.0), collect_toy(bad)
    assert (dirty.mask == 0).any() and (dirty.mask == 1).any()
    for name in ("obs", "actions", "rewards", "mask"):
        assert th.isfinite(getattr(dirty, name)).all(), name
        assert th.equal(getattr(dirty, name), getattr(clean, name)), name
    assert th.equal(dirty.episode_returns(), clean.episode_returns()) and np.isfinite(dirty.mean_return())
    for batch in (clean, dirty):
        batch.compute_advantages(0.99, 0.95)
    assert th.isfinite(dirty.advantages).all() and th.equal(dirty.advantages, clean.advantages)
    policy = toy_policy(ToyTasks())
    objective = MetaObjective(policy, 0.1, first_order=True)
    params = {k: v.detach() for k, v in policy.actor_parameters().items()}
    adapted = {b: objective.inner_step(params, batch.flat(), shared=True, create_graph=False) for b, batch in
               (("clean", clean), ("dirty", dirty))}  # fmt: skip
    for name in params:
        assert th.isfinite(adapted["dirty"][name]).all() and th.equal(adapted["dirty"][name], adapted["clean"][name])


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_nonfinite_padding_injected_into_the_batch(bad: float) -> None:
    """NaN/inf written straight into the padded entries of a batch and of the reduction functions' inputs."""
    clean = collect_toy(None)
    pad = clean.mask == 0
    poisoned = {name: getattr(clean, name).clone() for name in ("obs", "actions", "rewards")}
    poisoned["obs"][pad] = bad
    poisoned["actions"][pad] = bad
    poisoned["rewards"][pad] = bad
    dirty = TaskBatch(mask=clean.mask, tasks=clean.tasks, **poisoned)
    for batch in (clean, dirty):
        batch.compute_advantages(0.9, 1.0)
    assert th.equal(dirty.episode_returns(), clean.episode_returns())
    assert th.isfinite(dirty.advantages).all() and th.equal(dirty.advantages, clean.advantages)
    for name in ("obs", "actions", "advantages", "mask"):
        assert th.equal(dirty.flat()[name], clean.flat()[name]), name

    mask = clean.mask.double()
    rewards, rewards_bad = clean.rewards.double(), poisoned["rewards"].double()
    assert th.equal(discounted_returns(rewards_bad, mask, 0.9), discounted_returns(rewards, mask, 0.9))
    values = th.linspace(-1, 1, mask.numel(), dtype=th.float64).reshape(mask.shape) * mask
    values_bad = values.masked_fill(pad, bad)
    expected = gae_advantages(rewards, values, mask, 0.9, 0.95)
    assert th.equal(gae_advantages(rewards_bad, values_bad, mask, 0.9, 0.95), expected)
    assert th.equal(normalize_per_task(values_bad, mask), normalize_per_task(values, mask))
    returns = discounted_returns(rewards, mask, 0.9)
    fitted = LinearFeatureBaseline().fit_predict(clean.obs, mask, returns)
    fitted_bad = LinearFeatureBaseline().fit_predict(poisoned["obs"], mask, returns.masked_fill(pad, bad))
    assert th.isfinite(fitted_bad).all() and th.equal(fitted_bad, fitted)


def _learned(algorithm: type[MetaAlgorithm], padding: float) -> tuple[dict[str, th.Tensor], list[str]]:
    model = algorithm(
        "MlpPolicy",
        ToyTasks(seed=0, padding=padding),
        meta_batch_size=2,
        fast_batch_size=2,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[8], vf=[])),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(total_timesteps=3 * 2 * 2 * 2 * ToyTasks.max_episode_steps)
    assert model.n_iterations >= 2
    return model.meta_parameters(), [str(w.message) for w in caught if "on-finite" in str(w.message)]


@pytest.mark.parametrize("algorithm", [FOMAML, MAML, Reptile], ids=lambda a: a.__name__)
def test_training_ignores_nonfinite_padding(algorithm: type[MetaAlgorithm]) -> None:
    """Meta-training on an env whose discarded steps are NaN: no rejected update, the same result as finite padding."""
    dirty, dirty_warnings = _learned(algorithm, np.nan)
    clean, _ = _learned(algorithm, 7.0)
    assert not dirty_warnings
    for name, value in clean.items():
        assert th.isfinite(dirty[name]).all() and th.equal(dirty[name], value), name


# --- non-finite env outputs on steps that count --------------------------------------------------------
def _finite_only_policy(env: gym.Env) -> tuple[MetaActorCriticPolicy, list[th.Tensor]]:
    """A policy that records every observation batch it is given."""
    policy = toy_policy(env)
    seen: list[th.Tensor] = []
    original = policy.functional_dist_params

    def spy(params, obs):
        seen.append(obs.clone())
        return original(params, obs)

    policy.functional_dist_params = spy  # type: ignore[method-assign]
    return policy, seen


@pytest.mark.parametrize("bad_step", [0, 3], ids=["reset", "step-3"])
def test_nan_observation_raises_naming_env_sub_env_and_step(bad_step: int) -> None:
    tasks = [ToyTask(length=6.0), ToyTask(length=6.0, bad_obs_step=float(bad_step))]
    policy, seen = _finite_only_policy(ToyTasks())
    when = "from reset" if bad_step == 0 else f"at step {bad_step} of its episode"
    with pytest.raises(NonFiniteEnvOutputError, match=rf"ToyTasks: sub-env 2 \(task ToyTask\(.*observation.*{when}"):
        collect_toy(None, tasks, policy)
    assert len(seen) == bad_step  # the policy acted on every step before, never on the bad observation
    assert all(th.isfinite(obs).all() for obs in seen)


def test_inf_reward_raises_naming_env_sub_env_and_step() -> None:
    tasks = [ToyTask(length=6.0), ToyTask(length=6.0), ToyTask(length=6.0, bad_reward_step=2.0)]
    expected = r"ToyTasks: sub-env 4 .*non-finite reward at step 2 of its episode: .*inf"
    with pytest.raises(NonFiniteEnvOutputError, match=expected):
        collect_toy(None, tasks)


def test_nonfinite_output_after_episode_end_does_not_raise() -> None:
    """A bad value past the episode's end (task length 2, bad reward at step 4 of the auto-reset episode) is padding."""
    tasks = [ToyTask(length=6.0), ToyTask(length=2.0, bad_reward_step=4.0, bad_obs_step=3.0)]
    batch = collect_toy(None, tasks)
    assert th.isfinite(batch.rewards).all() and th.isfinite(batch.obs).all()


def test_nonfinite_observation_stops_training_with_the_env_error() -> None:
    model = FOMAML("MlpPolicy", ToyTasks(seed=0, bad_obs_step=1.0), meta_batch_size=2, fast_batch_size=2, seed=0)
    with pytest.raises(NonFiniteEnvOutputError, match=r"ToyTasks: sub-env 0 .*observation at step 1 of its episode"):
        model.learn(total_timesteps=100)


def test_nonfinite_observation_of_a_batched_vec_env_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    env = PointMassTasks(max_episode_steps=5, seed=0)
    venv = make_task_vec_env(env, 4, seed=0)
    original = venv.step_wait
    calls = {"n": 0}

    def step_wait():
        obs, rewards, dones, infos = original()
        calls["n"] += 1
        if calls["n"] == 2:
            obs = obs.copy()
            obs[1, 0] = np.nan
        return obs, rewards, dones, infos

    monkeypatch.setattr(venv, "step_wait", step_wait)
    policy = toy_policy(env)
    params = {k: v.detach() for k, v in policy.actor_parameters().items()}
    with pytest.raises(NonFiniteEnvOutputError, match=r"PointMassTasks: sub-env 1 .*observation at step 2 of its episode"):
        collect_task_batch(venv, policy, env.sample_tasks(2), 2, params, False, 5)
