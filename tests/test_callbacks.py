"""SB3 callbacks in the meta-training loop."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch as th
from conftest import (
    HORIZON,
    SB3_TINY,
    bandit,
    fomaml,
    params_equal,
    point_mass,
    small_kwargs,
)
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    ProgressBarCallback,
    StopTrainingOnMaxEpisodes,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from sb3_meta import FOMAML, MetaEvalCallback, Reptile, evaluate_adaptation
from sb3_meta.common.callbacks import StopTrainingOnIterations
from sb3_meta.common.rng import get_rng_state

N_ENVS = 4  # small_kwargs: 2 tasks x 2 episodes


def reptile(**kwargs) -> Reptile:
    """One inner step: one sampling pass of HORIZON VecEnv steps per meta-iteration."""
    return Reptile("MlpPolicy", point_mass(), n_inner_steps=1, **small_kwargs(**kwargs))


def train(callback=None, iterations: int = 3) -> FOMAML:
    model = fomaml()
    model.learn(iterations * 2 * 4 * HORIZON, callback=callback)
    return model


class Recorder(BaseCallback):
    """Records the hooks it sees; stops training at the ``stop_at``-th on_step call."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.events: list[str] = []
        self.step_locals: list[dict] = []

    def _on_training_start(self) -> None:
        self.events.append("training_start")
        self.total_timesteps = self.locals["total_timesteps"]

    def _on_rollout_start(self) -> None:
        self.events.append("rollout_start")

    def _on_rollout_end(self) -> None:
        self.events.append("rollout_end")

    def _on_training_end(self) -> None:
        self.events.append("training_end")

    def _on_step(self) -> bool:
        self.events.append("step")
        self.step_locals.append({k: self.locals[k] for k in ("new_obs", "rewards", "dones", "infos")})
        return self.stop_at is None or self.n_calls < self.stop_at


def test_user_callback_hooks_and_locals():
    model = reptile()
    recorder = Recorder()
    model.learn(2 * HORIZON * N_ENVS, callback=recorder)  # two meta-iterations
    iteration = ["rollout_start", *["step"] * HORIZON, "rollout_end"]
    assert recorder.events == ["training_start", *iteration, *iteration, "training_end"]
    assert recorder.total_timesteps == 2 * HORIZON * N_ENVS
    assert recorder.n_calls == 2 * HORIZON
    for t, step in enumerate(recorder.step_locals):
        assert step["new_obs"].shape == (N_ENVS, 2)
        assert step["rewards"].shape == (N_ENVS,) and np.all(step["rewards"] <= 0)
        assert step["dones"].shape == (N_ENVS,)
        assert bool(step["dones"].all()) == ((t + 1) % HORIZON == 0)  # fixed-length episodes
        assert len(step["infos"]) == N_ENVS and all("task" in info for info in step["infos"])
    assert all("episode" in info for info in recorder.step_locals[HORIZON - 1]["infos"])  # VecMonitor


def test_callback_returning_false_stops_cleanly():
    model = reptile()
    recorder = Recorder(stop_at=HORIZON + 3)  # in the middle of the second meta-iteration
    snapshots = []

    class Snapshot(BaseCallback):
        def _on_rollout_start(self) -> None:
            snapshots.append(self.model.meta_parameters())

        def _on_step(self) -> bool:
            return True

    model.learn(100 * HORIZON * N_ENVS, callback=[Snapshot(), recorder])
    assert recorder.n_calls == HORIZON + 3
    assert recorder.events[-1] == "training_end"
    assert recorder.events.count("rollout_end") == 1  # the interrupted iteration never finished sampling
    assert model.n_iterations == 1
    # the interrupted iteration did not touch the parameters: they are those after the first iteration
    assert len(snapshots) == 2
    assert params_equal(model.meta_parameters(), snapshots[1])
    assert not params_equal(snapshots[0], snapshots[1])


def test_checkpoint_callback(tmp_path):
    model = reptile()
    checkpoint = CheckpointCallback(save_freq=HORIZON, save_path=str(tmp_path), name_prefix="meta")
    model.learn(2 * HORIZON * N_ENVS, callback=checkpoint)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"meta_{HORIZON * N_ENVS}_steps.zip", f"meta_{2 * HORIZON * N_ENVS}_steps.zip"]
    # each file is written at the last env step of an iteration, before its update: it holds the model as that
    # iteration found it (resuming from it reruns the iteration; tests/test_iteration_reliability.py)
    first = Reptile.load(tmp_path / files[0])
    assert first.num_timesteps == 0 and first.n_iterations == 0
    loaded = Reptile.load(tmp_path / files[1])
    assert loaded.num_timesteps == HORIZON * N_ENVS and loaded.n_iterations == 1
    obs = np.zeros((3, 2), dtype=np.float32)
    assert loaded.predict(obs, deterministic=True)[0].shape == (3, 2)


def test_progress_bar():
    model = reptile()
    progress = ProgressBarCallback()
    model.learn(2 * HORIZON * N_ENVS, callback=progress)
    assert progress.pbar.total == progress.pbar.n == 2 * HORIZON * N_ENVS  # advanced by num_envs per VecEnv step
    model.learn(2 * HORIZON * N_ENVS, progress_bar=True)
    assert model.num_timesteps == 2 * HORIZON * N_ENVS
    assert model.n_iterations == 2


def test_n_iterations_counts_across_learn_save_load_and_reset(tmp_path):
    model = reptile()
    model.learn(2 * HORIZON * N_ENVS)
    assert model.n_iterations == 2
    model.learn(HORIZON * N_ENVS, reset_num_timesteps=False)  # continues, as num_timesteps does
    assert model.n_iterations == 3
    model.save(tmp_path / "model.zip")
    loaded = Reptile.load(tmp_path / "model.zip", env=point_mass())
    assert loaded.n_iterations == 3
    loaded.learn(HORIZON * N_ENVS)  # reset_num_timesteps=True: a new run counts from 0
    assert loaded.n_iterations == 1 and loaded.num_timesteps == HORIZON * N_ENVS
    with pytest.raises(AttributeError):
        loaded.n_iterations = 5  # read-only: the count is the model's own record


def test_stop_training_on_max_episodes():
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(), cg_max_steps=3)
    theta = model.meta_parameters()
    # SB3 counts max_episodes per sub-env: every sub-env ends one episode at the end of the first sampling pass
    model.learn(100 * HORIZON * N_ENVS, callback=StopTrainingOnMaxEpisodes(max_episodes=1))
    assert model.num_timesteps == HORIZON * N_ENVS
    assert model.n_iterations == 0
    assert params_equal(model.meta_parameters(), theta)


@pytest.mark.parametrize("goal_radius", [0.0, 0.5])
def test_episodes_cut_by_the_horizon_are_reported_done_to_callbacks(goal_radius):
    """With the algorithm's horizon shorter than the env's time limit, the sampler stops the episodes itself: the
    callbacks must still see one ``done`` per episode (truncated), with its return and length in ``infos``, as a
    time limit would report them; episodes the env ends itself (goal reached) are reported once, as before."""
    short = HORIZON // 2
    env = point_mass(goal_radius=goal_radius)  # the env's limit is HORIZON
    model = FOMAML("MlpPolicy", env, **small_kwargs(), max_episode_steps=short, cg_max_steps=3)
    recorder = Recorder()
    model.learn(1, callback=recorder)  # one meta-iteration: two sampling passes of N_ENVS episodes
    passes, returns, lengths, seen = 0, np.zeros(N_ENVS), np.zeros(N_ENVS, dtype=int), []
    active = np.ones(N_ENVS, dtype=bool)
    for step in recorder.step_locals:
        returns += np.where(active, step["rewards"], 0.0)
        lengths += active
        for i in np.flatnonzero(step["dones"] & active):
            info = step["infos"][i]
            assert info["episode"]["l"] == lengths[i] <= short
            assert info["episode"]["r"] == pytest.approx(returns[i], rel=1e-5, abs=1e-5)
            assert info.get("TimeLimit.truncated", False) == (lengths[i] == short)
            seen.append(lengths[i])
        active &= ~step["dones"]
        if not active.any():  # the pass ended: the next step belongs to the next pass
            passes += 1
            active[:], returns[:], lengths[:] = True, 0.0, 0
    assert passes == 2 and len(seen) == 2 * N_ENVS  # every episode, once
    assert model.num_timesteps == len(recorder.step_locals) * N_ENVS
    if goal_radius == 0.0:
        assert seen == [short] * (2 * N_ENVS)
    # SB3's episode counter stops after the first pass (each sub-env has ended one episode)
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(), max_episode_steps=short, cg_max_steps=3)
    model.learn(100 * HORIZON * N_ENVS, callback=StopTrainingOnMaxEpisodes(max_episodes=1))
    assert model.num_timesteps == short * N_ENVS and model.n_iterations == 0


def test_callbacks_see_only_the_episodes_training_uses_with_sb3_vec_envs():
    """SB3's DummyVecEnv resets a sub-env whose episode ended and steps it on (padding, discarded): callbacks must
    see it idle (no done, no reward, no info) as with the batched VecEnvs, one done per episode used."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    limits = [2, HORIZON, HORIZON, HORIZON]  # sub-env 0 ends its episodes after 2 steps, then idles
    venv = DummyVecEnv([lambda limit=limit: Monitor(point_mass(max_episode_steps=limit)) for limit in limits])
    model = FOMAML("MlpPolicy", venv, **small_kwargs(), max_episode_steps=HORIZON, cg_max_steps=3)
    recorder = Recorder()
    model.learn(1, callback=recorder)
    dones = np.array([step["dones"] for step in recorder.step_locals])  # (steps, sub-envs)
    episodes = [
        (i, info["episode"]["l"]) for step in recorder.step_locals for i, info in enumerate(step["infos"]) if "episode" in info
    ]
    assert dones.sum(axis=0).tolist() == [model.sampling_passes] * N_ENVS  # one done per sub-env and pass
    assert sorted(episodes) == sorted([(i, limit) for i, limit in enumerate(limits)] * model.sampling_passes)
    assert [e["l"] for e in model.ep_info_buffer] == limits * model.sampling_passes  # what training used
    idle_rewards = [step["rewards"][0] for step in recorder.step_locals[2:HORIZON]]  # sub-env 0, after its episode
    assert idle_rewards == [0.0] * (HORIZON - 2)


def test_callback_list():
    model = reptile()
    first, second = Recorder(), Recorder()
    model.learn(HORIZON * N_ENVS, callback=CallbackList([first, second]))
    assert first.events == second.events
    assert first.events.count("step") == HORIZON and first.events.count("rollout_end") == 1


def test_sb3_eval_callback_and_evaluate_policy(tmp_path):
    """SB3's EvalCallback evaluates the meta-policy (no adaptation) during meta-training and keeps the best model."""
    model = reptile()
    snapshots = []

    class Snapshot(BaseCallback):
        def _on_rollout_start(self) -> None:  # the parameters the next evaluation (mid-sampling) sees
            snapshots.append(model.meta_parameters())

        def _on_step(self) -> bool:
            return True

    evaluation = EvalCallback(
        point_mass(seed=7),
        eval_freq=HORIZON,
        n_eval_episodes=2,
        best_model_save_path=str(tmp_path),
        log_path=str(tmp_path),
        verbose=0,
    )
    model.learn(2 * HORIZON * N_ENVS, callback=CallbackList([Snapshot(), evaluation]))
    # one evaluation per sampling pass, at SB3's timestep count
    assert list(evaluation.evaluations_timesteps) == [HORIZON * N_ENVS, 2 * HORIZON * N_ENVS]
    assert not params_equal(snapshots[0], snapshots[1])
    best = int(np.argmax([np.mean(r) for r in evaluation.evaluations_results]))
    loaded = Reptile.load(tmp_path / "best_model.zip")
    assert params_equal(loaded.meta_parameters(), snapshots[best])
    # written during an iteration (EvalCallback saves at an env step): the model as that iteration found it
    assert loaded.num_timesteps == best * HORIZON * N_ENVS
    # evaluate_policy on the loaded model reproduces the callback's evaluation (same env seed, deterministic policy)
    mean, _ = evaluate_policy(loaded, point_mass(seed=7), n_eval_episodes=2, warn=False)
    assert np.isclose(mean, np.mean(evaluation.evaluations_results[best]))


class PredictSampled(BaseCallback):
    """Calls model.predict with sampled actions from every hook (as EvalCallback(deterministic=False) does)."""

    def _sample(self) -> None:
        self.model.predict(np.zeros((3, 2), dtype=np.float32), deterministic=False)

    def _on_training_start(self) -> None:
        self._sample()

    def _on_rollout_start(self) -> None:
        self._sample()

    def _on_rollout_end(self) -> None:
        self._sample()

    def _on_step(self) -> bool:
        self._sample()
        return True

    def _on_training_end(self) -> None:
        self._sample()


def test_sampled_predictions_in_callbacks_leave_training_alone():
    """A callback's predict(deterministic=False) draws from the generator the callback holds, not the model's."""
    reference = train()
    model = fomaml()
    model.learn(3 * 2 * 4 * HORIZON, callback=PredictSampled())
    assert params_equal(model.meta_parameters(), reference.meta_parameters())
    evaluated = fomaml()
    evaluation = EvalCallback(point_mass(seed=7), eval_freq=HORIZON, n_eval_episodes=2, deterministic=False, verbose=0)
    evaluated.learn(3 * 2 * 4 * HORIZON, callback=evaluation)
    assert evaluation.last_mean_reward > -np.inf  # it evaluated
    assert params_equal(evaluated.meta_parameters(), reference.meta_parameters())
    # outside learn, predict draws from the model's own stream as before (the same seed predicts the same)
    obs = np.zeros((3, 2), dtype=np.float32)
    assert np.array_equal(fomaml().predict(obs)[0], fomaml().predict(obs)[0])


# --- MetaEvalCallback and StopTrainingOnIterations (moved from test_evaluation.py) ----------------------------


def test_meta_eval_callback_logs_saves_and_leaves_training_identical(tmp_path):
    reference = train()
    callback = MetaEvalCallback(
        point_mass(start="origin"),
        eval_freq=1,
        n_tasks=3,
        n_steps=2,
        n_episodes=2,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "logs"),
        verbose=0,
    )
    model = fomaml()
    model.set_logger(configure(str(tmp_path / "progress"), ["csv"]))
    model.learn(3 * 2 * 4 * HORIZON, callback=callback)
    # training is bit for bit the same as without the callback
    assert model.num_timesteps == reference.num_timesteps
    assert params_equal(dict(model.policy.named_parameters()), dict(reference.policy.named_parameters()))
    mine, theirs = get_rng_state(model.task_env, model.env), get_rng_state(reference.task_env, reference.env)
    assert th.equal(mine["torch"], theirs["torch"]) and mine["task_sampler"] == theirs["task_sampler"]
    assert mine["vec_env"]["sub_envs"] == theirs["vec_env"]["sub_envs"]
    # one evaluation after each iteration (the last at training end), on the same held-out tasks
    assert callback.evaluations_iterations == [1, 2, 3]
    assert callback.evaluations_timesteps == [80, 160, 240]
    assert len(callback.tasks) == 3 and callback.last_result.tasks == callback.tasks
    with open(tmp_path / "progress" / "progress.csv") as f:
        header = next(csv.reader(f))
    assert {"meta_eval/return_step_0", "meta_eval/return_step_1", "meta_eval/return_step_2"} <= set(header)
    best = np.max([r.mean(axis=0)[-1] for r in callback.evaluations_results])
    assert callback.best_mean_return == pytest.approx(best)
    loaded = FOMAML.load(tmp_path / "best" / "best_model.zip")  # without env: evaluation takes the env it is given
    best = int(np.argmax([r.mean(axis=0)[-1] for r in callback.evaluations_results]))
    again = evaluate_adaptation(loaded, point_mass(start="origin"), tasks=callback.tasks, n_steps=2, n_episodes=2, seed=0)
    np.testing.assert_array_equal(again.returns, callback.evaluations_results[best])
    logs = np.load(tmp_path / "logs" / "evaluations.npz")
    assert logs["results"].shape == (3, 3, 3) and list(logs["timesteps"]) == [80, 160, 240]
    # the final evaluation equals a direct one on the same tasks and seed
    direct = evaluate_adaptation(model, point_mass(start="origin"), tasks=callback.tasks, n_steps=2, n_episodes=2, seed=0)
    np.testing.assert_array_equal(direct.returns, callback.evaluations_results[-1])


def test_meta_eval_callback_takes_sb3s_stop_callbacks():
    """callback_on_new_best / callback_after_eval, as on EvalCallback: SB3's stop callbacks read the parent's
    best_mean_reward / last_mean_reward and stop training at the step after the evaluation."""
    from stable_baselines3.common.callbacks import StopTrainingOnNoModelImprovement, StopTrainingOnRewardThreshold

    def evaluation(**hooks) -> MetaEvalCallback:
        return MetaEvalCallback(
            point_mass(start="origin"), eval_freq=1, n_tasks=2, n_steps=1, n_episodes=2, verbose=0, **hooks
        )

    reached = evaluation(callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=-1e9))
    model = fomaml()
    model.learn(10 * 2 * 4 * HORIZON, callback=reached)
    assert model.n_iterations == 1 and reached.evaluations_iterations == [1]  # stopped right after the first one
    assert reached.best_mean_reward == reached.last_mean_reward == pytest.approx(reached.last_result.mean[-1])
    unreached = evaluation(callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=1e9))
    model = fomaml()
    model.learn(3 * 2 * 4 * HORIZON, callback=unreached)
    assert model.n_iterations == 3
    patience = StopTrainingOnNoModelImprovement(max_no_improvement_evals=0, min_evals=1)
    after = evaluation(callback_after_eval=patience)
    model = fomaml()
    model.learn(20 * 2 * 4 * HORIZON, callback=after)
    means = [r.mean(axis=0)[-1] for r in after.evaluations_results]
    # it stops after the first evaluation that does not improve on the best so far (min_evals=1: from the second)
    first_stale = next(i for i in range(2, len(means) + 1) if means[i - 1] <= max(means[: i - 1]))
    assert len(means) == first_stale and model.n_iterations == first_stale


def test_meta_eval_callback_frequency_and_bad_env():
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=2, n_tasks=2, n_steps=1, n_episodes=1, verbose=0)
    train(callback, iterations=3)
    assert callback.evaluations_iterations == [2]
    with pytest.raises(ValueError, match="observation space"):
        fomaml().learn(8, callback=MetaEvalCallback(bandit(), eval_freq=1, n_tasks=1, verbose=0))
    with pytest.raises(ValueError, match="eval_freq"):
        MetaEvalCallback(point_mass(), eval_freq=0)


def test_meta_eval_callback_with_ppo_leaves_training_identical():
    def ppo() -> PPO:
        return PPO(
            "MlpPolicy", point_mass(start="origin"), seed=0, policy_kwargs=SB3_TINY, n_steps=16, batch_size=8, n_epochs=2
        )

    reference = ppo().learn(48)
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=1, n_tasks=2, n_steps=1, n_episodes=2, verbose=0)
    model = ppo().learn(48, callback=callback)
    assert callback.evaluations_iterations == [1, 2, 3] and callback.n_episodes == 2
    assert params_equal(dict(model.policy.named_parameters()), dict(reference.policy.named_parameters()))


def test_stop_training_on_iterations():
    stop = StopTrainingOnIterations(2)
    model = fomaml()
    model.learn(10**9, callback=stop)
    assert len(model.iteration_times) == 2 and stop.timesteps_at_stop == 2 * 2 * 4 * HORIZON
