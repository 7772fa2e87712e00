"""``sub_sampling_factor``: the KL Hessian of the MAML/FOMAML meta-step from every k-th outer sample.

The maths (H v equals the double-backward KL Hessian of the sub-batch) is checked in ``test_meta_gradients.py``;
here the model: checked input, a cheaper but still trust-region step, saved and resumed like every setting.
"""

from __future__ import annotations

import pytest
import torch as th
from conftest import FAST_TRPO, HORIZON, point_mass, small_kwargs

import sb3_meta.maml.maml as maml_module
from sb3_meta import FOMAML, MAML
from sb3_meta.common.meta_gradient import flatten

ONE_ITERATION = 2 * 2 * 2 * HORIZON  # meta_batch_size x fast_batch_size x 2 passes x horizon


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_sub_sampling_factor_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="sub_sampling_factor must be an integer >= 1"):
        FOMAML("MlpPolicy", point_mass(), sub_sampling_factor=bad, **small_kwargs())


def test_sub_sampling_needs_the_exact_kl_hessian(tmp_path):
    with pytest.raises(ValueError, match="needs hvp='exact'"):
        MAML("MlpPolicy", point_mass(), sub_sampling_factor=2, hvp="finite_difference", **small_kwargs())
    MAML("MlpPolicy", point_mass(), sub_sampling_factor=1, hvp="finite_difference", **small_kwargs()).save(tmp_path / "m")
    with pytest.raises(ValueError, match="needs hvp='exact'"):  # load's overrides pass the same check
        MAML.load(tmp_path / "m", sub_sampling_factor=2)


def record_trpo_steps(monkeypatch) -> list:
    steps = []

    def recording(*args, **kwargs):
        new_theta, stats = trpo_step(*args, **kwargs)
        steps.append((args[4 + 1], stats))  # (target_kl, stats)
        return new_theta, stats

    trpo_step = maml_module.trpo_step
    monkeypatch.setattr(maml_module, "trpo_step", recording)
    return steps


@pytest.mark.parametrize("algo", [FOMAML, MAML])
def test_a_subsampled_meta_step_differs_and_keeps_the_trust_region(monkeypatch, algo):
    steps = record_trpo_steps(monkeypatch)
    models = {}
    for factor in (1, 4):
        models[factor] = algo("MlpPolicy", point_mass(), sub_sampling_factor=factor, **small_kwargs(), **FAST_TRPO)
        models[factor].learn(2 * ONE_ITERATION)
    full, sub = (flatten(models[f].meta_parameters()).detach() for f in (1, 4))
    assert float((full - sub).norm()) > 1e-6  # the step is another one ...
    assert all(stats.kl <= target_kl for target_kl, stats in steps)  # ... still inside the trust region (full KL)
    assert sum(stats.accepted for _, stats in steps) >= 3 and len(steps) == 4


def test_sub_sampling_factor_is_saved_and_resumes_bit_for_bit(tmp_path):
    model = FOMAML("MlpPolicy", point_mass(), sub_sampling_factor=3, **small_kwargs(), **FAST_TRPO)
    model.learn(ONE_ITERATION)
    model.save(tmp_path / "m")
    model.learn(ONE_ITERATION, reset_num_timesteps=False)
    loaded = FOMAML.load(tmp_path / "m", env=point_mass())
    assert loaded.sub_sampling_factor == 3
    loaded.learn(ONE_ITERATION, reset_num_timesteps=False)
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values()):
        assert th.equal(a, b), name
