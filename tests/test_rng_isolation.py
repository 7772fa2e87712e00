"""Per-model RNG isolation: a model draws from its own torch stream, so that the same seed gives the same result
however models are built, trained and used in one process (SB3 models share torch's global generator)."""

import numpy as np
import pytest
import torch as th
from conftest import FAST_TRPO, TINY_POLICY_KWARGS, bandit, params_equal, point_mass, small_kwargs
from stable_baselines3.common.callbacks import BaseCallback

from sb3_meta import FOMAML, MAML, Reptile
from sb3_meta.common.rng import TorchStream

ALGOS = {"FOMAML": (FOMAML, FAST_TRPO), "MAML": (MAML, FAST_TRPO), "Reptile": (Reptile, {})}


def make(name: str, seed: int = 3, env=None):
    cls, extra = ALGOS[name]
    return cls("MlpPolicy", env if env is not None else point_mass(), **small_kwargs(seed=seed), **extra)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_models_built_first_then_trained_one_after_the_other_are_equal(name):
    reference = make(name)
    reference.learn(1)
    th.manual_seed(999)  # whatever the process did before: the models below are built from their seed
    first, second = make(name), make(name)  # building the second reseeds torch's global generator
    th.rand(1000)  # and anything may draw from it in between
    first.learn(1)
    second.learn(1)
    assert params_equal(first.meta_parameters(), second.meta_parameters())
    assert params_equal(first.meta_parameters(), reference.meta_parameters())
    # the iteration sampled actions (the parameters moved), so the equality above is about the same draws
    assert not params_equal(first.meta_parameters(), make(name).meta_parameters())


class TrainOther(BaseCallback):
    """Trains another model (and draws from torch's global generator) at every meta-iteration of this one."""

    def __init__(self, other) -> None:
        super().__init__()
        self.other = other

    def _on_rollout_start(self) -> None:
        self.other.learn(1, reset_num_timesteps=False)
        th.randn(17)

    def _on_step(self) -> bool:
        return True


def test_interleaved_models_give_the_results_of_models_trained_alone():
    two_iterations = 2 * 2 * 10 * 2 + 1  # more than one iteration's env steps (2 tasks x 2 episodes x 10 x 2 passes)
    alone_a = make("FOMAML", seed=1)
    alone_a.learn(two_iterations)
    alone_b = make("MAML", seed=2)
    alone_b.learn(1)  # one iteration per learn call, as the callback below trains it
    alone_b.learn(1, reset_num_timesteps=False)

    a, b = make("FOMAML", seed=1), make("MAML", seed=2)
    a.learn(two_iterations, callback=TrainOther(b))  # b trains inside a's iterations (as an evaluation model would)
    assert a.n_iterations == b.n_iterations == 2
    assert params_equal(a.meta_parameters(), alone_a.meta_parameters())
    assert params_equal(b.meta_parameters(), alone_b.meta_parameters())


def test_models_built_on_one_env_object_do_not_share_its_task_sampler():
    """A sweep reuses one env variable: each model samples tasks with its own copy, which the env never reseeds."""
    alone = make("FOMAML", seed=0)
    alone.learn(1)
    alone.learn(1, reset_num_timesteps=False)
    env = point_mass()
    other, model = make("MAML", seed=0, env=env), make("FOMAML", seed=0, env=env)
    assert model.task_env is not env and model.task_env is not other.task_env
    other.learn(1)
    model.learn(1)
    env.reset(seed=0)  # the user's env, reseeded between two learn calls
    env.sample_tasks(5)
    model.learn(1, reset_num_timesteps=False)
    assert params_equal(model.meta_parameters(), alone.meta_parameters())


def test_learn_and_predict_leave_torchs_global_generator_as_it_was():
    model = make("FOMAML")
    before = th.get_rng_state()
    model.learn(1)
    obs = np.zeros((4, *model.observation_space.shape), dtype=np.float32)
    model.predict(obs, deterministic=False)
    assert th.equal(th.get_rng_state(), before)


def test_sampled_predictions_come_from_the_models_stream():
    obs = np.zeros((64, *point_mass().observation_space.shape), dtype=np.float32)
    a, b = make("FOMAML"), make("FOMAML")
    first = a.predict(obs)[0]
    th.rand(123)
    assert np.array_equal(b.predict(obs)[0], first)  # same seed, same first draw, whatever happened in between
    assert not np.array_equal(a.predict(obs)[0], first)  # the stream advances: the next draw differs


@pytest.mark.parametrize("env", [point_mass, bandit], ids=["batched", "dummy_vec_env"])
def test_resume_restores_the_models_stream(tmp_path, env):
    straight = make("FOMAML", env=env())
    straight.learn(1)
    straight.learn(1, reset_num_timesteps=False)

    first = make("FOMAML", env=env())
    first.learn(1)
    first.save(tmp_path / "checkpoint.zip")
    other = make("FOMAML", seed=77, env=env())  # another model in the process, trained between save and resume
    other.learn(1)
    resumed = FOMAML.load(tmp_path / "checkpoint.zip", env=env())
    other.learn(1, reset_num_timesteps=False)
    resumed.learn(1, reset_num_timesteps=False)
    assert params_equal(resumed.meta_parameters(), straight.meta_parameters())


def test_set_random_seed_reseeds_the_models_stream():
    a, b, c = make("FOMAML", seed=6), make("FOMAML", seed=7), make("FOMAML", seed=7)
    for model in (b, c):
        model.policy.load_state_dict(a.policy.state_dict())  # same weights: only the streams can differ
    a.set_random_seed(5)
    b.set_random_seed(5)
    for model in (a, b, c):
        model.learn(1)
    assert params_equal(a.meta_parameters(), b.meta_parameters())
    assert not params_equal(b.meta_parameters(), c.meta_parameters())


def test_torch_stream_nests_and_restores_on_error():
    th.manual_seed(0)
    stream = TorchStream()
    expected = th.rand(4)  # the stream's first draws
    th.manual_seed(1)
    before = th.get_rng_state()
    with pytest.raises(RuntimeError):
        with stream.active():
            with stream.active():  # nested (predict inside learn): the same live stream, not a restart
                first = th.rand(2)
            second = th.rand(1)
            raise RuntimeError("boom")
    assert th.equal(th.get_rng_state(), before)
    with stream.active():  # continues after the draws made before the error
        third = th.rand(1)
    assert th.equal(th.cat([first, second, third]), expected)


def test_the_checkpoint_holds_the_streams_state(tmp_path):
    model = FOMAML("MlpPolicy", point_mass(), **small_kwargs(seed=4, policy_kwargs=TINY_POLICY_KWARGS, **FAST_TRPO))
    model.learn(1)
    saved = model._torch_stream.state()[0]
    th.manual_seed(5)  # torch's global state at save time is not what is saved
    model.save(tmp_path / "m.zip")
    loaded = FOMAML.load(tmp_path / "m.zip", env=point_mass())
    assert th.equal(loaded._torch_stream.state()[0], saved)
    assert not th.equal(th.get_rng_state(), saved)
