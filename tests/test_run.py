"""Training runs: MAML, FOMAML and Reptile on small task distributions; env handling, validation, logging."""

from __future__ import annotations

import csv
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import HORIZON, bandit, params_equal, point_mass, small_kwargs
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.envs import PointMassTasks, make_task_vec_env

#: Cheap TRPO settings where the outer optimiser itself is not under test.
FAST_TRPO = dict(cg_max_steps=3, line_search_max_iter=5)
ALGOS = {
    "MAML": (MAML, FAST_TRPO),
    "FOMAML": (FOMAML, FAST_TRPO),
    "Reptile": (Reptile, dict(n_inner_steps=2)),
}


class StepCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.n_steps = 0
        self.timesteps: list[int] = []

    def _on_step(self) -> bool:
        self.n_steps += 1
        self.timesteps.append(self.model.num_timesteps)
        return True


@pytest.mark.parametrize("name", [*ALGOS, "Reptile-reuse"])
def test_learn_counts_every_vec_env_step(name):
    cls, extra = ALGOS[name] if name in ALGOS else (Reptile, dict(n_inner_steps=3, reuse_inner_episodes=True))
    model = cls("MlpPolicy", point_mass(), **small_kwargs(meta_batch_size=2, fast_batch_size=3), **extra)
    n_envs = 2 * 3
    assert model.env.num_envs == n_envs
    before = model.meta_parameters()
    counter = StepCounter()
    model.learn(1, callback=counter)  # one whole meta-iteration
    # sampling passes per iteration: one per inner step (one for all when they reuse it), plus the post-adaptation
    # one for MAML/FOMAML
    passes = {"MAML": 2, "FOMAML": 2, "Reptile": 2, "Reptile-reuse": 1}[name]
    assert model.sampling_passes == passes
    assert counter.n_steps == passes * HORIZON  # episodes never end early (goal_radius=0)
    assert model.num_timesteps == passes * HORIZON * n_envs
    assert counter.timesteps == [n_envs * (i + 1) for i in range(counter.n_steps)]
    after = model.meta_parameters()
    assert not params_equal(before, after)
    assert all(th.isfinite(v).all() for v in after.values())
    # whole iterations until total_timesteps is reached
    model.learn(passes * HORIZON * n_envs + 1, reset_num_timesteps=False)
    assert model.num_timesteps == 3 * passes * HORIZON * n_envs
    model.learn(1)  # reset_num_timesteps=True: counting starts again
    assert model.num_timesteps == passes * HORIZON * n_envs


def test_constructor_accepts_a_task_env_an_id_and_a_task_vec_env():
    kwargs = small_kwargs(meta_batch_size=2, fast_batch_size=3)
    from_env = Reptile("MlpPolicy", point_mass(), **kwargs)
    from_id = Reptile("MlpPolicy", "sb3_meta/PointMass-v0", **kwargs)
    venv = make_task_vec_env(point_mass(), 2 * 3, seed=0)
    from_venv = Reptile("MlpPolicy", venv, **kwargs)
    for model in (from_env, from_id, from_venv):
        assert model.env.num_envs == 6
        assert model.observation_space == from_env.observation_space
        assert model.action_space == from_env.action_space
    assert from_id._horizon() == 100  # the registered time limit
    from_venv.learn(1)
    assert from_venv.num_timesteps == from_venv.n_inner_steps * HORIZON * 6


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_sb3_make_vec_env_of_a_task_distribution(vec_env_cls):
    """The VecEnv SB3 users make themselves: sub-envs in a Monitor, tasks set through env_method."""
    kwargs = small_kwargs(meta_batch_size=2, fast_batch_size=2)
    venv = make_vec_env(point_mass, n_envs=4, seed=0, vec_env_cls=vec_env_cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VecMonitor over Monitor-wrapped sub-envs (SB3's notice)
        model = FOMAML("MlpPolicy", venv, **kwargs, **FAST_TRPO)
    counter = StepCounter()
    model.learn(1, callback=counter)
    passes = 2  # pre- and post-adaptation sampling
    assert model.num_timesteps == passes * HORIZON * 4 and counter.n_steps == passes * HORIZON
    # each task went to fast_batch_size sub-envs, through the Monitor wrappers
    tasks = venv.env_method("get_task")
    assert tasks[0] == tasks[1] and tasks[2] == tasks[3] and tasks[0] != tasks[2]
    assert all(th.isfinite(v).all() for v in model.meta_parameters().values())
    venv.close()
    with pytest.raises(ValueError, match=r"3 sub-envs.*meta_batch_size x fast_batch_size = 4"):
        FOMAML("MlpPolicy", make_vec_env(point_mass, n_envs=3), **kwargs)


def test_sb3_make_vec_env_resumes_bit_for_bit(tmp_path):
    """One iteration + save + load(env=fresh make_vec_env) + one iteration == two iterations straight."""
    kwargs = dict(small_kwargs(meta_batch_size=2, fast_batch_size=2), **FAST_TRPO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VecMonitor over Monitor-wrapped sub-envs (SB3's notice)
        straight = FOMAML("MlpPolicy", make_vec_env(point_mass, n_envs=4, seed=0), **kwargs)
        straight.learn(1)
        straight.learn(1, reset_num_timesteps=False)
        first = FOMAML("MlpPolicy", make_vec_env(point_mass, n_envs=4, seed=0), **kwargs)
        first.learn(1)
        first.save(tmp_path / "model.zip")
        resumed = FOMAML.load(tmp_path / "model.zip", env=make_vec_env(point_mass, n_envs=4, seed=5))
    resumed.learn(1, reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps
    assert params_equal(resumed.meta_parameters(), straight.meta_parameters())


def test_task_vec_env_with_the_wrong_number_of_sub_envs():
    venv = make_task_vec_env(point_mass(), 5)
    with pytest.raises(ValueError, match=r"5 sub-envs.*meta_batch_size x fast_batch_size = 6"):
        FOMAML("MlpPolicy", venv, **small_kwargs(meta_batch_size=2, fast_batch_size=3))


def test_envs_that_are_not_task_distributions():
    with pytest.raises(ValueError, match="CartPoleEnv is not a task distribution"):
        MAML("MlpPolicy", gym.make("CartPole-v1"), **small_kwargs())
    with pytest.raises(ValueError, match="not a task distribution"):
        MAML("MlpPolicy", "CartPole-v1", **small_kwargs())
    with pytest.raises(ValueError, match="sub-envs are not task distributions"):
        MAML("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")] * 4), **small_kwargs())
    with pytest.raises(ValueError, match="env must be"):
        MAML("MlpPolicy", 42, **small_kwargs())


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MAML, dict(meta_batch_size=0), "meta_batch_size"),
        (MAML, dict(fast_batch_size=0), "fast_batch_size"),
        (MAML, dict(n_inner_steps=0), "n_inner_steps"),
        (MAML, dict(meta_batch_size=1.5), "meta_batch_size"),
        (MAML, dict(inner_lr=0.0), "inner_lr"),
        (MAML, dict(inner_lr=-0.1), "inner_lr"),
        (MAML, dict(inner_lr=float("nan")), "inner_lr"),
        (MAML, dict(target_kl=0.0), "target_kl"),
        (MAML, dict(target_kl=-1.0), "target_kl"),
        (MAML, dict(hvp="bogus"), "hvp"),
        (MAML, dict(cg_max_steps=0), "cg_max_steps"),
        (MAML, dict(line_search_shrinking_factor=1.0), "line_search_shrinking_factor"),
        (MAML, dict(gamma=1.5), "gamma"),
        (MAML, dict(max_episode_steps=0), "max_episode_steps"),
        (FOMAML, dict(first_order=False), "first order"),
        (Reptile, dict(outer_lr=0.0), "outer_lr"),
        (Reptile, dict(n_inner_steps=0), "n_inner_steps"),
    ],
)
def test_invalid_hyperparameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls("MlpPolicy", point_mass(), **small_kwargs(**kwargs))


@pytest.mark.parametrize("name", ["MAML", "Reptile"])
def test_discrete_actions(name):
    cls, extra = ALGOS[name]
    model = cls("MlpPolicy", bandit(), **small_kwargs(meta_batch_size=2, fast_batch_size=3), **extra)
    assert type(model.env.unwrapped).__name__ == "TaskDummyVecEnv"  # the generic fallback, no batched VecEnv
    before = model.meta_parameters()
    model.learn(1)
    after = model.meta_parameters()
    assert "log_std" not in after
    assert not params_equal(before, after)
    assert all(th.isfinite(v).all() for v in after.values())
    actions, _ = model.predict(np.ones((4, 1), dtype=np.float32))
    assert actions.shape == (4,) and np.all((actions >= 0) & (actions < 3))


class MultiDiscreteTasks(PointMassTasks):
    batched_vec_env_cls = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.action_space = gym.spaces.MultiDiscrete([3, 3])


def test_unsupported_action_space():
    with pytest.raises(ValueError, match=r"Box and Discrete action spaces.*MultiDiscrete"):
        MAML("MlpPolicy", MultiDiscreteTasks(), **small_kwargs())


@pytest.mark.parametrize("algo", [MAML, FOMAML, Reptile])
def test_no_env_is_a_clear_error(algo):
    with pytest.raises(ValueError, match=r"needs an env.*\.load\(path\)"):
        algo("MlpPolicy", None)


class DictObservation(gym.ObservationWrapper):
    """A task distribution whose observation is a Dict (as goal-conditioned envs have)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"position": env.observation_space})

    def observation(self, observation: np.ndarray) -> dict:
        return {"position": observation}


@pytest.mark.parametrize("policy", ["MlpPolicy", "MultiInputPolicy"])
def test_dict_observations_get_an_error_that_says_what_is_supported(policy):
    # SB3 would say "use MultiInputPolicy", and that policy would then be unknown
    with pytest.raises(ValueError, match=r"supports Box observation spaces.*no MultiInputPolicy.*Dict.*FlattenObservation"):
        FOMAML(policy, DictObservation(point_mass()), **small_kwargs())


def test_dict_observations_train_once_flattened_as_the_error_says():
    model = FOMAML("MlpPolicy", gym.wrappers.FlattenObservation(DictObservation(point_mass())), **small_kwargs())
    before = model.meta_parameters()
    model.learn(1)
    assert model.num_timesteps > 0 and not params_equal(before, model.meta_parameters())


class NaNRewardTasks(PointMassTasks):
    """A point mass whose rewards are NaN while ``nan`` is set (stepped one env at a time, through DummyVecEnv)."""

    batched_vec_env_cls = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan = True

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, float("nan") if self.nan else reward, terminated, truncated, info


@pytest.mark.parametrize("name", ["MAML", "Reptile"])
def test_non_finite_env_rewards_stop_training_with_the_env_error(name):
    """NaN rewards from the env are refused before the policy sees them, naming the env; θ stays as it was."""
    from sb3_meta.common.rollout import NonFiniteEnvOutputError

    cls, extra = ALGOS[name]
    model = cls("MlpPolicy", NaNRewardTasks(max_episode_steps=5, goal_radius=0.0), **small_kwargs(), **extra)
    theta = model.meta_parameters()
    with pytest.raises(NonFiniteEnvOutputError, match=r"NaNRewardTasks: sub-env 0 .* non-finite reward"):
        model.learn(1)
    assert params_equal(model.meta_parameters(), theta)


@pytest.mark.parametrize("name", ["MAML", "Reptile"])
def test_non_finite_iterations_are_rejected_then_stop_training(name):
    """A non-finite inner step (here injected into the objective) rejects the iteration with a warning, θ kept;
    a finite iteration resets the count; ``max_nonfinite_iterations`` consecutive ones stop training."""
    cls, extra = ALGOS[name]
    model = cls(
        "MlpPolicy", point_mass(max_episode_steps=5, goal_radius=0.0), max_nonfinite_iterations=2, **small_kwargs(), **extra
    )
    broken = {"on": True}
    make_objective = model.make_objective

    def objective_with_a_broken_inner_step():
        objective = make_objective()
        inner_step = objective.inner_step

        def step(*args, **kwargs):
            params = inner_step(*args, **kwargs)
            return {k: v * float("nan") for k, v in params.items()} if broken["on"] else params

        objective.inner_step = step
        return objective

    model.make_objective = objective_with_a_broken_inner_step
    theta = model.meta_parameters()
    with pytest.warns(UserWarning, match="Non-finite"):
        model.learn(1)
    assert params_equal(model.meta_parameters(), theta)  # rejected: unchanged
    broken["on"] = False  # a finite iteration resets the count of consecutive failures
    model.learn(1, reset_num_timesteps=False)
    theta = model.meta_parameters()
    assert all(th.isfinite(v).all() for v in theta.values())
    broken["on"] = True
    with pytest.warns(UserWarning, match="Non-finite"):
        model.learn(1, reset_num_timesteps=False)
    assert params_equal(model.meta_parameters(), theta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="2 consecutive meta-iterations had a non-finite"):
            model.learn(1, reset_num_timesteps=False)
    assert params_equal(model.meta_parameters(), theta)


def read_csv_keys(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return list(rows[0].keys()), rows


MAML_KEYS = [
    "rollout/pre_adapt_return",
    "rollout/post_adapt_return",
    "train/kl",
    "train/surrogate_improvement",
    "train/line_search_steps",
    "train/log_std",
    "time/sampling_s",
    "time/inner_s",
    "time/meta_step_s",
    "time/fps",
    "time/total_timesteps",
    "time/iterations",
    "train/n_updates",
]


def test_reptile_logs_the_return_of_its_last_sampled_batch_under_its_own_name(tmp_path):
    """post_adapt_return means "after the last inner step" (MAML, FOMAML); Reptile samples no episodes there."""
    model = Reptile("MlpPolicy", point_mass(), n_inner_steps=3, **small_kwargs())
    model.set_logger(configure(None, []))
    model.learn(1, log_interval=None)
    logged = model.logger.name_to_value
    assert "rollout/post_adapt_return" not in logged
    assert np.isfinite(logged["rollout/pre_adapt_return"]) and np.isfinite(logged["rollout/last_inner_batch_return"])
    assert len(model.ep_info_buffer) == 3 * model.env.num_envs  # the episodes of all three inner batches


def test_reptile_logs_how_far_the_tasks_and_their_mean_moved():
    """update_norm = ‖mean_i(θ_i − θ)‖, task_displacement_norm = mean_i ‖θ_i − θ‖, their ratio the coherence."""
    model = Reptile("MlpPolicy", point_mass(), n_inner_steps=2, **small_kwargs())
    model.set_logger(configure(None, []))
    recorded = {}
    outer_step = model._outer_step

    def spy(result):
        theta = {k: v.clone() for k, v in model.meta_parameters().items()}
        recorded["d"] = th.cat([(result.adapted[k] - theta[k].unsqueeze(0)).flatten(1) for k in theta], dim=1).double()
        return outer_step(result)

    model._outer_step = spy
    model.learn(1, log_interval=None)
    logged, d = model.logger.name_to_value, recorded["d"]
    assert d.shape[0] == model.meta_batch_size and d.abs().sum() > 0
    assert logged["train/update_norm"] == pytest.approx(float(d.mean(0).norm()), rel=1e-5)
    assert logged["train/task_displacement_norm"] == pytest.approx(float(d.norm(dim=1).mean()), rel=1e-5)
    coherence = logged["train/update_coherence"]
    assert coherence == pytest.approx(float(d.mean(0).norm() / d.norm(dim=1).mean()), rel=1e-5) and 0 < coherence <= 1


def test_logger_keys(tmp_path):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(), **FAST_TRPO)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(2 * model.env.num_envs * 2 * HORIZON)  # two iterations
    keys, rows = read_csv_keys(tmp_path / "progress.csv")
    assert len(rows) == 2
    for key in MAML_KEYS:
        assert key in keys, key
        assert all(row[key] != "" and np.isfinite(float(row[key])) for row in rows), key
    assert [int(row["time/total_timesteps"]) for row in rows] == [80, 160]
    assert [int(row["train/n_updates"]) for row in rows] == [1, 2]
    assert all(float(row["train/kl"]) <= model.target_kl for row in rows)
    assert all(float(row["time/sampling_s"]) > 0 for row in rows)
    # the logged log-std is the policy's
    assert float(rows[-1]["train/log_std"]) == pytest.approx(model.policy.log_std.mean().item(), rel=1e-6)

    reptile = Reptile("MlpPolicy", point_mass(), **small_kwargs(), n_inner_steps=1)
    reptile.set_logger(configure(str(tmp_path / "reptile"), ["csv"]))
    reptile.learn(1)
    keys, _ = read_csv_keys(tmp_path / "reptile" / "progress.csv")
    for key in ["rollout/pre_adapt_return", "train/outer_lr", "train/log_std", "time/sampling_s", "time/inner_s", "time/fps"]:
        assert key in keys, key


@pytest.mark.parametrize("name", list(ALGOS))
def test_same_seed_same_parameters(name):
    cls, extra = ALGOS[name]
    models = []
    for _ in range(2):  # built and trained one after the other: models share torch's global RNG, as in SB3
        model = cls("MlpPolicy", point_mass(), **small_kwargs(seed=7), **extra)
        theta = model.meta_parameters()
        model.learn(1)
        model.learn(1, reset_num_timesteps=False)
        assert not params_equal(theta, model.meta_parameters())
        models.append(model)
    assert params_equal(models[0].meta_parameters(), models[1].meta_parameters())
    other = cls("MlpPolicy", point_mass(), **small_kwargs(seed=8), **extra)
    assert not params_equal(models[0].meta_parameters(), other.meta_parameters())


def test_finite_difference_hvp_runs():
    model = MAML("MlpPolicy", point_mass(), hvp="finite_difference", **small_kwargs(), **FAST_TRPO)
    before = model.meta_parameters()
    model.learn(1)
    after = model.meta_parameters()
    assert all(th.isfinite(v).all() for v in after.values())
    assert not params_equal(before, after)


def test_bandit_task_distribution():
    from gymnasium.utils.env_checker import check_env

    from sb3_meta.envs.bandit import BanditTask, BanditTasks

    env = BanditTasks(n_arms=3, horizon=4, seed=0)
    assert env.sample_tasks(3) == BanditTasks(n_arms=3, seed=0).sample_tasks(3)  # seeded task RNG
    assert env.sample_tasks(3) != BanditTasks(n_arms=3, seed=1).sample_tasks(3)
    check_env(env, skip_render_check=True)
    task = BanditTask(means=(0.0, 1.0, 0.25))
    env.reset_task(task)
    env.reset(seed=1)
    pulls = [env.step(arm) for arm in (0, 1, 2, 2)]
    assert [p[1] for p in pulls[:2]] == [0.0, 1.0]  # Bernoulli rewards
    assert [p[3] for p in pulls] == [False, False, False, True]  # truncated after the horizon
    rewards = []
    for _ in range(200):
        env.reset()
        rewards += [env.step(2)[1] for _ in range(4)]
    assert set(rewards) == {0.0, 1.0} and abs(np.mean(rewards) - 0.25) < 0.05
    gaussian = BanditTasks(n_arms=3, reward="gaussian", noise_std=0.1)
    gaussian.reset_task(task)
    gaussian.reset(seed=0)
    assert abs(gaussian.step(1)[1] - 1.0) < 0.5
    with pytest.raises(ValueError, match="3 arms"):
        env.reset_task(BanditTask(means=(0.5, 0.5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        env.reset_task(BanditTask(means=(0.5, 0.5, 1.5)))
    with pytest.raises(ValueError, match="expected a BanditTask"):
        env.reset_task(point_mass().sample_tasks(1)[0])
    with pytest.raises(ValueError, match="integer arm"):
        env.step(3)
    with pytest.raises(ValueError, match="n_arms"):
        BanditTasks(n_arms=0)


def test_episode_statistics_are_those_of_every_sampled_episode():
    """``rollout/ep_rew_mean`` is the mean return of all the episodes an iteration sampled, including those cut
    at a ``max_episode_steps`` shorter than the env's own horizon (a VecMonitor would see none of them)."""
    from stable_baselines3.common.logger import configure

    model = FOMAML("MlpPolicy", PointMassTasks(start="origin", seed=0), max_episode_steps=20, **small_kwargs())
    model.set_logger(configure(None, []))
    model.learn(1, log_interval=None)
    n_episodes = 2 * model.meta_batch_size * model.fast_batch_size  # pre- and post-adaptation passes
    assert len(model.ep_info_buffer) == n_episodes
    assert all(1 <= ep["l"] <= 20 for ep in model.ep_info_buffer)
    assert sum(ep["l"] == 20 for ep in model.ep_info_buffer) > n_episodes // 2  # most are cut at the horizon
    logged = model.logger.name_to_value
    expected = (logged["rollout/pre_adapt_return"] + logged["rollout/post_adapt_return"]) / 2  # equal pass sizes
    np.testing.assert_allclose(np.mean([ep["r"] for ep in model.ep_info_buffer]), expected, rtol=1e-5)


def test_n_updates_counts_every_outer_update_across_learn_calls_and_checkpoints(tmp_path):
    """As SB3's ``train/n_updates``: one per meta-iteration, kept by ``reset_num_timesteps=True`` (which restarts
    ``time/iterations``) and by save/load; an iteration that a callback's error aborts counts none."""
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(), **FAST_TRPO)
    model.set_logger(configure(None, []))
    model.learn(1)
    model.learn(1)  # reset_num_timesteps=True: time/iterations restarts, the update count does not
    assert model._n_updates == 2 and model.n_iterations == 1
    model.save(tmp_path / "m")
    loaded = FOMAML.load(tmp_path / "m", env=point_mass())
    assert loaded._n_updates == 2

    class Boom(BaseCallback):
        def _on_step(self) -> bool:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        loaded.learn(1, reset_num_timesteps=False, callback=Boom())
    assert loaded._n_updates == 2
    loaded.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    loaded.learn(1, reset_num_timesteps=False)
    _, rows = read_csv_keys(tmp_path / "log" / "progress.csv")
    assert [int(row["train/n_updates"]) for row in rows] == [3]
