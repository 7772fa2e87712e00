"""Learning on the point mass (slow: run with ``make test-slow`` / ``pytest -m slow``).

Issue: on PointMassTasks(start="origin") with meta_batch_size=20, fast_batch_size=20 and otherwise default
hyperparameters, FOMAML and MAML reach a mean post-1-step return >= -15 on 40 held-out tasks *within* 200
meta-iterations (MAML paper: -40 before, -11.7 after one step); Reptile improves with adaptation.
"Within" is checked as SB3 users would: a MetaEvalCallback evaluates the 40 held-out tasks every 20
meta-iterations (without disturbing training) and keeps the best post-adaptation return.
"""

import pytest

from sb3_meta import FOMAML, MAML, MetaEvalCallback, Reptile
from sb3_meta.envs import PointMassTasks

pytestmark = pytest.mark.slow

ITERATIONS = 200


def held_out_returns(model, seed: int = 12345):
    env = PointMassTasks(start="origin", seed=seed)
    tasks = env.sample_tasks(40)
    _, returns = model.adapt_tasks(tasks, n_steps=1, n_episodes=20, env=env, seed=0)
    return returns.mean(axis=0)


@pytest.mark.parametrize("algo", [FOMAML, MAML])
def test_maml_learns_point_mass(algo, tmp_path):
    model = algo("MlpPolicy", PointMassTasks(start="origin"), meta_batch_size=20, fast_batch_size=20, seed=0)
    evaluation = MetaEvalCallback(
        PointMassTasks(start="origin"), eval_freq=20, n_tasks=40, n_steps=1, n_episodes=20, seed=12345, verbose=0
    )
    model.learn(ITERATIONS * 2 * 20 * 20 * 100, callback=evaluation)
    assert evaluation.best_mean_return >= -15.0, evaluation.best_mean_return
    before, after = held_out_returns(model)  # the final model adapts too
    assert after > before + 10.0, (before, after)


def test_reptile_improves_with_adaptation():
    model = Reptile("MlpPolicy", PointMassTasks(start="origin"), meta_batch_size=20, fast_batch_size=20, seed=0)
    model.learn(100 * model.n_inner_steps * 20 * 20 * 100)
    before, after = held_out_returns(model)
    assert after > before, (before, after)
