"""Sampling a meta-batch as one batch, the linear feature baseline, and GAE.

Layout: ``K`` tasks x ``E`` episodes per task run as ``K * E`` sub-envs of one VecEnv (sub-env ``k * E + e``
holds task ``k``). A pass runs every sub-env for exactly one episode (at most ``T`` steps) and stores it
padded as tensors of shape ``(K, T, E, ...)`` with a validity ``mask``; per-task work is then a batch
over the leading task dimension (``torch.func.vmap``).

Padding (steps after a sub-env's episode ended) holds whatever the auto-reset sub-env produced, possibly NaN or
inf: it is replaced by zeros with ``torch.where`` (never ``x * mask``, as NaN · 0 = NaN) before any sum, so that
discarded steps cannot change a return, an advantage or a loss. Non-finite values on steps that happened are
the env's fault and raise :class:`NonFiniteEnvOutputError` while sampling, before the policy sees them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from sb3_meta.common.normalization import CountedStepsNormalization, find_vec_normalize
from sb3_meta.common.policies import MetaActorCriticPolicy, Params

__all__ = [
    "LinearFeatureBaseline",
    "NonFiniteEnvOutputError",
    "TaskBatch",
    "collect_task_batch",
    "discounted_returns",
    "gae_advantages",
    "zero_past_end",
]


class NonFiniteEnvOutputError(ValueError):
    """An env returned a NaN or inf observation or reward on a step that counts (not padding)."""


def zero_past_end(x: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """``x`` where ``mask`` is nonzero, exactly 0 elsewhere (also where ``x`` is NaN or inf).

    :param x: tensor of shape ``mask.shape + (...)`` (trailing dims, e.g. the observation's, are broadcast)
    :param mask: validity mask, 1 on steps that happened
    :return: a new tensor like ``x``
    """
    valid = mask > 0
    valid = valid.reshape(*valid.shape, *([1] * (x.dim() - valid.dim())))
    return th.where(valid, x, th.zeros((), dtype=x.dtype, device=x.device))


@dataclasses.dataclass
class TaskBatch:
    """One episode per sub-env for ``K`` tasks x ``E`` episodes, padded to ``T`` steps.

    Tensors have shape ``(K, T, E, ...)``; ``mask`` is 1 on steps that happened. ``advantages`` is filled by
    :meth:`compute_advantages`. Observations, (float) actions and rewards are zeroed past each episode's end on
    construction, so that NaN/inf in discarded steps never reach a sum (the losses multiply by the mask).
    """

    obs: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    mask: th.Tensor
    tasks: list[Any]
    advantages: th.Tensor | None = None
    #: the env's own rewards when ``rewards`` are scaled (by a ``VecNormalize``): returns are reported in them
    original_rewards: th.Tensor | None = None

    def __post_init__(self) -> None:
        self.obs = zero_past_end(self.obs, self.mask)
        self.rewards = zero_past_end(self.rewards, self.mask)
        if self.original_rewards is not None:
            self.original_rewards = zero_past_end(self.original_rewards, self.mask)
        if self.actions.is_floating_point():
            self.actions = zero_past_end(self.actions, self.mask)

    @property
    def n_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def n_steps(self) -> int:
        """Number of env steps that happened (valid transitions)."""
        return int(self.mask.sum().item())

    def episode_returns(self) -> th.Tensor:
        """Undiscounted return of every episode in the env's own rewards (``original_rewards`` if set), shape ``(K, E)``."""
        rewards = self.rewards if self.original_rewards is None else self.original_rewards
        return zero_past_end(rewards, self.mask).sum(dim=1)

    def mean_return(self) -> float:
        return float(self.episode_returns().mean().item())

    def compute_advantages(self, gamma: float, gae_lambda: float, normalize: bool = True) -> th.Tensor:
        """Fit a linear feature baseline per task on this batch, then GAE(γ, λ), normalised per task."""
        returns = discounted_returns(self.rewards, self.mask, gamma)
        values = LinearFeatureBaseline().fit_predict(self.obs, self.mask, returns)
        adv = gae_advantages(self.rewards, values, self.mask, gamma, gae_lambda)
        if normalize:
            adv = normalize_per_task(adv, self.mask)
        self.advantages = adv
        return adv

    def flat(self) -> dict[str, th.Tensor]:
        """Per-task samples, the input of the vmapped losses: ``(K, N, ...)`` with each task's valid transitions
        first (in (time, episode) order) and ``N`` the most any task has, so that padding past the episodes' ends
        costs no compute when episodes end early (the Ant falls: ~1/3 of ``T*E`` are valid); ``mask`` marks them.
        """
        if self.advantages is None:
            raise RuntimeError("call compute_advantages() first")
        k = self.n_tasks
        flat = {
            "obs": self.obs.reshape(k, -1, *self.obs.shape[3:]),
            "actions": self.actions.reshape(k, -1, *self.actions.shape[3:]),
            "advantages": self.advantages.reshape(k, -1),
            "mask": self.mask.reshape(k, -1),
        }
        n = int(flat["mask"].sum(dim=1).max().item())
        if n == flat["mask"].shape[1]:
            return flat
        # valid transitions first, each task's in its own order (a stable sort on "is padding"), then cut at n
        order = th.argsort((flat["mask"] == 0).to(th.int8), dim=1, stable=True)[:, :n]

        def take(x: th.Tensor) -> th.Tensor:
            index = order.reshape(k, n, *([1] * (x.dim() - 2))).expand(k, n, *x.shape[2:])
            return th.gather(x, 1, index)

        return {key: take(value) for key, value in flat.items()}


def _discount_matrix(n_steps: int, factor: float, like: th.Tensor) -> th.Tensor:
    """D[t, t'] = factor^(t' − t) for t' ≥ t, else 0."""
    t = th.arange(n_steps, device=like.device, dtype=like.dtype)
    exponent = t.view(1, -1) - t.view(-1, 1)
    return th.where(exponent >= 0, th.as_tensor(factor, dtype=like.dtype, device=like.device) ** exponent.clamp_min(0), 0.0)


def _discounted_sum(x: th.Tensor, factor: float) -> th.Tensor:
    """y_t = Σ_{t' ≥ t} factor^(t' − t) x_t' along dim 1, as one matrix product (no loop over time)."""
    d = _discount_matrix(x.shape[1], factor, x)
    return th.einsum("st,kt...->ks...", d, x)


def discounted_returns(rewards: th.Tensor, mask: th.Tensor, gamma: float) -> th.Tensor:
    """G_t = r_t + γ G_{t+1} within each episode (time is dim 1), zero past its end.

    Every column holds one episode from t = 0 (``mask`` is 1 then 0), so G_t = Σ_{t'≥t} γ^(t'−t) r_t' m_t'.
    """
    return zero_past_end(_discounted_sum(zero_past_end(rewards, mask), gamma), mask)


def gae_advantages(rewards: th.Tensor, values: th.Tensor, mask: th.Tensor, gamma: float, gae_lambda: float) -> th.Tensor:
    """GAE: δ_t = r_t + γ V(s_{t+1}) − V(s_t), Â_t = Σ_{t'≥t} (γλ)^(t'−t) δ_t'; the value after an episode's end is 0."""
    next_values = th.zeros_like(values)
    next_values[:, :-1] = zero_past_end(values[:, 1:], mask[:, 1:])
    deltas = zero_past_end(rewards + gamma * next_values - values, mask)
    return zero_past_end(_discounted_sum(deltas, gamma * gae_lambda), mask)


def normalize_per_task(x: th.Tensor, mask: th.Tensor, eps: float = 1e-8) -> th.Tensor:
    """(x − mean) / (std + eps) over the valid entries of each task (dim 0 indexes tasks)."""
    dims = tuple(range(1, x.dim()))
    n = mask.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = zero_past_end(x, mask).sum(dim=dims, keepdim=True) / n
    var = zero_past_end((x - mean).pow(2), mask).sum(dim=dims, keepdim=True) / n
    return zero_past_end((x - mean) / (var.sqrt() + eps), mask)


class LinearFeatureBaseline:
    """Linear value baseline fitted per task by ridge regression (Duan et al., 2016; as in MAML's RL code).

    Features of a state at time t of its episode: ``[o, o², t/100, (t/100)², (t/100)³, 1]`` with
    ``o = clip(obs, -10, 10)``. Ridge coefficient ``reg_coeff`` (1e-5), raised x10 for a task whose solve
    fails (not positive definite in floating point, or non-finite), at most ``max_tries`` times. All tasks are
    solved as one batched linear system.

    :param reg_coeff: initial ridge coefficient
    :param max_tries: attempts with a growing ridge coefficient
    """

    def __init__(self, reg_coeff: float = 1e-5, max_tries: int = 5) -> None:
        self.reg_coeff = reg_coeff
        self.max_tries = max_tries

    @staticmethod
    def features(obs: th.Tensor) -> th.Tensor:
        """``obs``: (K, T, E, ...) → features (K, T, E, F); t is the index along dim 1."""
        k, t_max, e = obs.shape[:3]
        o = obs.reshape(k, t_max, e, -1).to(th.float64).clamp(-10.0, 10.0)
        t = (th.arange(t_max, device=obs.device, dtype=th.float64) / 100.0).view(1, t_max, 1, 1).expand(k, t_max, e, 1)
        return th.cat([o, o * o, t, t**2, t**3, th.ones_like(t)], dim=-1)

    def fit_predict(self, obs: th.Tensor, mask: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """Fit one weight vector per task on (obs, returns) and return the fitted values, shape (K, T, E)."""
        feats = self.features(obs)
        k, f = feats.shape[0], feats.shape[-1]
        phi = zero_past_end(feats, mask).reshape(k, -1, f)
        target = zero_past_end(returns.to(th.float64), mask).reshape(k, -1, 1)
        gram = phi.transpose(1, 2) @ phi
        rhs = phi.transpose(1, 2) @ target
        eye = th.eye(f, dtype=th.float64, device=obs.device)
        reg = th.full((k, 1, 1), self.reg_coeff, dtype=th.float64, device=obs.device)
        weights = th.zeros(k, f, 1, dtype=th.float64, device=obs.device)
        todo = th.ones(k, dtype=th.bool, device=obs.device)
        for _ in range(self.max_tries):
            # Φᵀ Φ + reg·I is symmetric positive definite: a Cholesky solve (its failure, info > 0, counts as a failed
            # solve). Not torch.linalg.solve: its batched LU fails with MKL once torch.set_num_threads(n > 1) has been
            # called in the process (pytorch/pytorch#142815), e.g. by a user's training script.
            factor, info = th.linalg.cholesky_ex(gram + reg * eye)
            sol = th.cholesky_solve(rhs, factor)
            ok = (info == 0) & th.isfinite(sol).all(dim=(1, 2))
            weights = th.where((todo & ok).view(k, 1, 1), sol, weights)
            todo = todo & ~ok
            if not todo.any():
                break
            reg = th.where(todo.view(k, 1, 1), reg * 10, reg)
        values = (feats @ weights.view(k, 1, f, 1)).squeeze(-1)
        return zero_past_end(values.to(returns.dtype), mask)


def collect_task_batch(
    venv: VecEnv,
    policy: MetaActorCriticPolicy,
    tasks: Sequence[Any],
    episodes_per_task: int,
    params: Params,
    per_task_params: bool,
    max_steps: int,
    on_step: Callable[[np.ndarray, np.ndarray, np.ndarray, list[dict]], bool] | None = None,
) -> TaskBatch | None:
    """Run one episode in every sub-env of ``venv`` (``len(tasks) * episodes_per_task`` of them) as one batch.

    :param venv: task VecEnv with ``set_tasks``
    :param policy: the meta-policy
    :param tasks: K tasks; sub-env ``k * E + e`` gets ``tasks[k]``
    :param episodes_per_task: E
    :param params: actor parameters: shared (``per_task_params=False``) or stacked with a leading K dimension
    :param per_task_params: whether ``params`` holds one parameter set per task
    :param max_steps: horizon T (a pass stops earlier when every episode has ended)
    :param on_step: called after every VecEnv step with ``(new_obs, rewards, dones, infos)``; returning False
        aborts the pass (and this function returns None)
    :return: the padded batch, or None when ``on_step`` asked to stop
    :raises NonFiniteEnvOutputError: when a sub-env returns a NaN/inf observation or reward on a step of its episode
        (padding after its episode ended may be non-finite: it is discarded)
    """
    k, e = len(tasks), episodes_per_task
    n_envs = k * e
    if venv.num_envs != n_envs:
        raise ValueError(f"The VecEnv has {venv.num_envs} sub-envs; expected {k} tasks x {e} episodes = {n_envs}")
    device = policy.device
    venv.set_tasks([task for task in tasks for _ in range(e)])  # type: ignore[attr-defined]
    # VecEnvObs also covers dict/tuple observations; the meta-policies' are arrays
    obs = np.asarray(venv.reset())
    if not np.isfinite(obs).all():
        obs = _check_finite(venv, tasks, e, obs, None, np.ones(n_envs, dtype=bool), None, 0)
    action_space = policy.action_space
    active = np.ones(n_envs, dtype=bool)
    # batched task VecEnvs (through SB3 wrappers) leave the sub-envs whose episode has ended unstepped
    set_idle_envs = getattr(venv, "set_idle_envs", None)
    obs_buf, act_buf, rew_buf, mask_buf = [], [], [], []
    # rewards scaled by a VecNormalize train the policy; returns are reported in the env's own (SB3's Monitor too)
    vec_normalize = find_vec_normalize(venv)
    original_buf: list[th.Tensor] | None = [] if vec_normalize is not None and vec_normalize.norm_reward else None

    if per_task_params:
        dist_fn = th.func.vmap(policy.functional_dist_params, in_dims=(0, 0))
    # a training VecNormalize learns its statistics from the steps the batch keeps, not from padding sub-envs
    counted = CountedStepsNormalization(venv)
    for step in range(max_steps):
        with th.no_grad():
            obs_t = th.as_tensor(obs, device=device)
            if per_task_params:
                dist = dist_fn(params, obs_t.reshape(k, e, *obs_t.shape[1:]))
                dist = type(dist)(dist.loc.reshape(n_envs, *dist.loc.shape[2:]), dist.log_std)
                if dist.log_std is not None:  # per-task log-std → one row per sub-env
                    dist = type(dist)(dist.loc, dist.log_std.repeat_interleave(e, dim=0))
            else:
                dist = policy.functional_dist_params(params, obs_t)
            actions = policy.sample(dist)
        actions_np = actions.cpu().numpy()
        env_actions = actions_np
        if isinstance(action_space, spaces.Box):
            # As SB3's on-policy algorithms: the env gets clipped actions, the log-prob uses the raw sample.
            env_actions = np.clip(actions_np, action_space.low, action_space.high)
        counted.before_step()
        new_obs, rewards, dones, infos = venv.step(env_actions)
        new_obs, rewards = counted.after_step(active, new_obs, rewards, dones)  # type: ignore[arg-type]  # Box obs
        obs_buf.append(obs_t)
        act_buf.append(actions)
        rew_buf.append(th.as_tensor(rewards, dtype=th.float32, device=device))
        if original_buf is not None:
            original_buf.append(th.as_tensor(vec_normalize.get_original_reward(), dtype=th.float32, device=device))  # type: ignore[union-attr]
        mask_buf.append(th.as_tensor(active, dtype=th.float32, device=device))
        was_active, active = active, active & ~dones
        if set_idle_envs is not None and (was_active & dones).any():
            set_idle_envs(~active)  # their later steps would be padding, discarded below
        # One vectorised test per array on the common path; the slow path says which sub-env and step, or masks
        # non-finite padding so that the policy is not fed NaN for steps that are discarded anyway.
        next_obs = np.asarray(new_obs)
        if not (np.isfinite(next_obs).all() and np.isfinite(rewards).all()):
            next_obs = _check_finite(venv, tasks, e, next_obs, np.asarray(rewards), active, was_active, step + 1)
        if on_step is not None:
            step_obs = np.asarray(new_obs)
            if not was_active.all():
                # A sub-env past its episode is padding: SB3's VecEnvs reset and step it anyway, and the episodes it
                # ends there are discarded. Callbacks see it as idle (as the batched VecEnvs leave it): no done, no
                # reward, no info, so that they count the episodes training uses, whatever the VecEnv.
                idle = ~was_active
                dones = np.where(idle, False, dones)
                rewards = np.where(idle, np.zeros_like(rewards), rewards)
                infos = [{} if idle[i] else info for i, info in enumerate(infos)]
            if step == max_steps - 1 and active.any():  # the horizon cuts these episodes: tell the callbacks
                reported = rew_buf if original_buf is None else original_buf
                dones, infos = _report_horizon_cut(venv, active, step_obs, dones, infos, reported, mask_buf)
            if on_step(step_obs, rewards, dones, infos) is False:
                return None
        obs = next_obs
        if not active.any():
            break

    def stack(buf: list[th.Tensor]) -> th.Tensor:
        x = th.stack(buf, dim=0)  # (T, K*E, ...)
        x = x.reshape(x.shape[0], k, e, *x.shape[2:])
        return x.transpose(0, 1).contiguous()  # (K, T, E, ...)

    return TaskBatch(
        obs=stack(obs_buf).float(),
        actions=stack(act_buf),
        rewards=stack(rew_buf),
        mask=stack(mask_buf),
        tasks=list(tasks),
        original_rewards=None if original_buf is None else stack(original_buf),
    )


def _report_horizon_cut(
    venv: VecEnv,
    cut: np.ndarray,
    obs: np.ndarray,
    dones: np.ndarray,
    infos: list[dict],
    rew_buf: list[th.Tensor],
    mask_buf: list[th.Tensor],
) -> tuple[np.ndarray, list[dict]]:
    """``dones``/``infos`` of the last step of a pass as a time limit would report them for the ``cut`` sub-envs.

    The pass stops at the horizon without stepping the env again, so the env (and its Monitor) never ends these
    episodes; SB3 callbacks count episodes by ``dones`` (``StopTrainingOnMaxEpisodes``) and read
    ``infos[i]["episode"]``, so each cut episode is reported once, truncated, with its return and length.
    """
    dones = np.asarray(dones, dtype=bool) | cut
    rewards = th.stack(rew_buf, dim=0) * th.stack(mask_buf, dim=0)  # (T, n_envs): the steps of each episode
    returns = rewards.sum(dim=0).double().cpu().numpy()
    lengths = th.stack(mask_buf, dim=0).sum(dim=0).cpu().numpy()
    monitor = venv
    while isinstance(monitor, VecEnvWrapper) and not isinstance(monitor, VecMonitor):
        monitor = monitor.venv
    elapsed = {"t": round(time.time() - monitor.t_start, 6)} if isinstance(monitor, VecMonitor) else {}
    infos = list(infos)
    for i in np.flatnonzero(cut):
        infos[i] = {
            **infos[i],
            "TimeLimit.truncated": True,
            "terminal_observation": obs[i],
            "episode": {"r": float(returns[i]), "l": int(lengths[i]), **elapsed},
        }
    return dones, infos


def _sub_env_name(venv: VecEnv, index: int) -> str:
    """Class name of the task distribution behind sub-env ``index`` (for error messages)."""
    inner = venv
    while isinstance(inner, VecEnvWrapper):
        inner = inner.venv
    template = getattr(inner, "template_env", None)  # batched task VecEnvs
    if template is not None:
        return type(template).__name__
    envs = getattr(inner, "envs", None)  # DummyVecEnv
    if envs is not None:
        env = envs[index]
        return type(env.unwrapped).__name__ + (f" ({env.spec.id})" if env.spec is not None else "")
    return type(inner).__name__


def _check_finite(
    venv: VecEnv,
    tasks: Sequence[Any],
    episodes_per_task: int,
    obs: np.ndarray,
    rewards: np.ndarray | None,
    obs_valid: np.ndarray,
    rewards_valid: np.ndarray | None,
    step: int,
) -> np.ndarray:
    """Slow path of the finiteness check: raise for a non-finite value that counts, else mask the padding.

    :param obs: observations of every sub-env, after reset (``step=0``) or after env step ``step``
    :param rewards: rewards of that env step (None after reset)
    :param obs_valid: sub-envs whose observation is the input of a step that counts (still in their episode)
    :param rewards_valid: sub-envs for which the env step counts (None after reset)
    :param step: env steps taken in this pass (= in every sub-env's current episode)
    :return: ``obs`` with the non-finite observations of sub-envs past their episode's end replaced by zeros
    :raises NonFiniteEnvOutputError: naming the env, sub-env, task, quantity and step of the first bad value
    """
    bad_obs = ~np.isfinite(obs).reshape(len(obs), -1).all(axis=1)
    candidates = []
    if rewards is not None and rewards_valid is not None:
        candidates.append(("reward", ~np.isfinite(rewards) & rewards_valid, rewards))
    candidates.append(("observation", bad_obs & obs_valid, obs))
    for quantity, bad, values in candidates:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            when = "from reset()" if step == 0 else f"at step {step} of its episode"
            raise NonFiniteEnvOutputError(
                f"{_sub_env_name(venv, i)}: sub-env {i} (task {tasks[i // episodes_per_task]!r}) returned a non-finite "
                f"{quantity} {when}: {values[i]!r}. Expected finite observations and rewards; check the env's "
                f"dynamics and reward for NaN/inf (e.g. a division by zero or an unbounded state), or end the "
                f"episode (terminated=True) before the state becomes non-finite."
            )
    if bad_obs.any():  # padding only: the policy still acts there (its actions are discarded), on finite input
        obs = obs.copy()
        obs[bad_obs] = 0
    return obs
