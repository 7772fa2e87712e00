"""MetaEvalCallback under kills and failures (its files are replaced whole), and its eval_freq unit warning."""

from __future__ import annotations

import csv
import io
import re
import time
import warnings

import numpy as np
import pytest
from conftest import HORIZON, SB3_TINY, fomaml, params_equal, point_mass, small_kwargs
from stable_baselines3 import PPO
from test_save_load_reliability import KillServer, needs_fork

from sb3_meta import MetaEvalCallback, Reptile

EVAL_LOOP = """
import sys
from stable_baselines3 import PPO
from sb3_meta import MetaEvalCallback
from sb3_meta.envs import PointMassTasks

FOLDER = sys.argv[2]


def env():
    return PointMassTasks(max_episode_steps=10, goal_radius=0.0, start="origin")


model = PPO("MlpPolicy", env(), seed=0, n_steps=16, batch_size=8, n_epochs=1,
            policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])))
callback = MetaEvalCallback(env(), eval_freq=1, n_tasks=1, n_steps=0, n_episodes=1,
                            best_model_save_path=FOLDER, log_path=FOLDER, verbose=0)
model.learn(16, callback=callback)  # sets the callback up (and evaluates once)


def job(i):
    callback.best_mean_return = -float("inf")  # every evaluation is the best so far: best_model.zip is rewritten
    callback._evaluate()  # what an evaluation during training does: adapt, write the logs, save the best model
"""

N_KILLS = 20


def read_csv(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def check_csv(rows: list[list[str]]) -> None:
    assert rows[0][:2] == ["timesteps", "iteration"] and len(rows) >= 2
    assert all(len(row) == len(rows[0]) for row in rows)
    [float(x) for row in rows[1:] for x in row]  # every cell complete


@needs_fork
def test_meta_eval_callback_files_survive_kills(tmp_path):
    """A process evaluating (and writing best_model.zip, evaluations.npz and .csv) in a loop is SIGKILLed at
    random moments: every file is always whole. The model is an SB3 PPO, whose own save is not atomic."""
    folder = tmp_path / "eval"
    delays = np.random.default_rng(1)
    started = time.perf_counter()
    with KillServer(EVAL_LOOP, tmp_path, str(folder)) as server:
        reference = PPO.load(folder / "best_model.zip")  # written by the setup's learn
        for cycle in range(N_KILLS):
            server.run_and_kill(start=cycle, delay=float(delays.uniform(0.02, 0.2)))
            best = PPO.load(folder / "best_model.zip")  # raises on a truncated zip
            assert params_equal(dict(best.policy.named_parameters()), dict(reference.policy.named_parameters()))
            with np.load(folder / "evaluations.npz") as logs:
                n = len(logs["timesteps"])
                assert len(logs["iterations"]) == len(logs["results"]) == n >= 1 and len(logs["tasks"]) == 1
            check_csv(read_csv(folder / "evaluations.csv"))
    total_s = time.perf_counter() - started
    interrupted = [p.name for p in folder.iterdir() if ".tmp" in p.name]
    assert interrupted, "no kill landed during a write: the test did not exercise anything"
    print(f"{N_KILLS} kills, {len(interrupted)} mid-write; all {total_s:.1f} s")


def ppo() -> PPO:
    return PPO("MlpPolicy", point_mass(start="origin"), seed=0, policy_kwargs=SB3_TINY, n_steps=16, batch_size=8, n_epochs=1)


def eval_callback(tmp_path) -> MetaEvalCallback:
    return MetaEvalCallback(
        point_mass(start="origin"),
        eval_freq=1,
        n_tasks=1,
        n_steps=1,
        n_episodes=1,
        best_model_save_path=str(tmp_path),
        log_path=str(tmp_path),
        verbose=0,
    )


def test_a_failed_best_model_save_keeps_the_previous_one(tmp_path):
    model, callback = ppo(), eval_callback(tmp_path)
    model.learn(16, callback=callback)
    before = (tmp_path / "best_model.zip").read_bytes()

    def dies_halfway(path_or_file, *args, **kwargs):
        file = open(f"{path_or_file}.zip", "wb") if isinstance(path_or_file, str) else path_or_file
        file.write(before[: len(before) // 2])
        file.flush()
        raise OSError(28, "No space left on device")

    model.save = dies_halfway  # type: ignore[method-assign]
    callback.best_mean_return = -np.inf  # the next evaluation is the best: it saves
    with pytest.raises(OSError, match="No space left"):
        model.learn(16, callback=callback, reset_num_timesteps=False)
    assert (tmp_path / "best_model.zip").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # the temporary file is removed


def test_a_failed_log_write_keeps_the_previous_logs(tmp_path, monkeypatch):
    model, callback = ppo(), eval_callback(tmp_path)
    model.learn(16, callback=callback)
    npz, table = (tmp_path / "evaluations.npz").read_bytes(), (tmp_path / "evaluations.csv").read_bytes()
    savez = np.savez

    def dies_halfway(file, **arrays):
        buffer = io.BytesIO()
        savez(buffer, **arrays)
        if isinstance(file, str):  # as np.savez: ".npz" appended unless there
            file = open(file if file.endswith(".npz") else f"{file}.npz", "wb")
        file.write(buffer.getvalue()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        model.learn(16, callback=callback, reset_num_timesteps=False)
    assert (tmp_path / "evaluations.npz").read_bytes() == npz
    assert (tmp_path / "evaluations.csv").read_bytes() == table
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def unit_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "counts meta-iterations" in str(w.message)]


def announced_iterations(message: str) -> int:
    found = re.search(r"makes about (\d+) of them", message)
    assert found, message
    return int(found.group(1))


@pytest.mark.parametrize("algo", ["FOMAML", "Reptile"])
def test_eval_freq_beyond_the_training_warns_with_the_unit(algo):
    """eval_freq=5000 as for SB3's EvalCallback (env steps): the run ends before the first evaluation. Training
    starts with a warning that says eval_freq counts meta-iterations and how many the run makes."""
    model = fomaml() if algo == "FOMAML" else Reptile("MlpPolicy", point_mass(), n_inner_steps=1, **small_kwargs())
    passes = 2 if algo == "FOMAML" else 1  # FOMAML samples after adaptation too
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=5000, n_tasks=1, n_episodes=1, verbose=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.learn(2 * passes * 4 * HORIZON, callback=callback)  # two meta-iterations
    [message] = unit_warnings(record)
    assert "eval_freq=5000" in message and "not env steps" in message
    assert f"x {passes} sampling passes" in message
    assert announced_iterations(message) == len(model.iteration_times) == 2  # the count it announced is right
    assert callback.evaluations_iterations == []  # and indeed no evaluation ran


def test_eval_freq_warning_for_sb3_models_and_not_when_reachable():
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=5000, n_tasks=1, n_episodes=1, verbose=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ppo().learn(48, callback=callback)  # 3 rollouts of 16 steps
    [message] = unit_warnings(record)
    assert announced_iterations(message) == 3 and "n_steps 16 x n_envs 1" in message
    # an eval_freq the run reaches: no warning
    model = Reptile("MlpPolicy", point_mass(), n_inner_steps=1, **small_kwargs())
    callback = MetaEvalCallback(point_mass(start="origin"), eval_freq=2, n_tasks=1, n_episodes=1, verbose=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.learn(2 * 4 * HORIZON, callback=callback)
        # resumed: 2 more iterations reach the next evaluation at iteration 4 (the callback counts on)
        model.learn(2 * 4 * HORIZON, callback=callback, reset_num_timesteps=False)
    assert unit_warnings(record) == []
    assert callback.evaluations_iterations == [2, 4]
