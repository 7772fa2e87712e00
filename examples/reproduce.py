"""Reproduce the experiments of the project paper (and Figs. 4-5 of the MAML paper): CSV tables and PNG plots.

    python examples/reproduce.py pointmass [--seeds 0 1 2] [--start origin|random] [--budget small|paper]
    python examples/reproduce.py ant [--envs antvel antdir] [--budget small|paper]
    python examples/reproduce.py cheetah [--envs halfcheetahdir halfcheetahvel] [--budget small|paper]
    python examples/reproduce.py timing [--env antvel] [--iterations 10]
    python examples/reproduce.py curves [--env antvel] [--budget paper] [--methods fomaml pretrained]  # equal updates
    python examples/reproduce.py reptile-sweep [--budget paper] [--seeds 0] [--configs k1 k3 ...]  # equal env steps
    python examples/reproduce.py ablation [--fast-batch-sizes 5 10 20 40] [--meta-batch-sizes 5 10 20 40]
    python examples/reproduce.py schedule [--env pointmass-origin] [--step-sizes 0.1 0.05 0.05]   # re-evaluate only
    python examples/reproduce.py report [--reference ../shared/reference/maml2017_fig5.csv]
    python examples/reproduce.py all          # pointmass, ablation, timing, ant, then report

Every run (method x env x seed) is written under ``--out`` (default ``results/``) as soon as it finishes:
``runs/<env>/<method>_seed<k>.csv`` (return of every held-out task after 0..3 adaptation steps), ``.zip`` (the
model) and ``.json`` (configuration, wall-clock, env steps, per-iteration times), and skipped when its CSV is
already there, so the set builds up over several sittings (use another ``--out`` for another budget).

Methods: ``maml``, ``fomaml``, ``reptile`` (meta-trained for a number of meta-iterations with the defaults of
``sb3_meta/hyperparams/<method>.yml`` and the budget's batch sizes), ``pretrained`` (SB3 TRPO, or PPO with
``--baseline-algo ppo``, on the task mixture for MAML's nominal env-step budget: iterations x meta_batch_size x
fast_batch_size x horizon x 2), ``random`` (the same policy, untrained) and ``oracle`` (TRPO/PPO with the task in
the observation, same budget, evaluated without adaptation). All are evaluated on the same ``--n-test-tasks`` (40)
held-out tasks, drawn once with ``--eval-seed``, with ``--test-episodes`` (20) episodes per task and step; the
pretrained and random policies adapt with the meta-learners' VPG step (step size ``--baseline-adapt-lr``, 0.1).

Budgets (``--budget``; ``--iterations``, ``--meta-batch-size`` and ``--fast-batch-size`` override them):

==========  ====================================  =========================================================
experiment  small (default)                       paper
==========  ====================================  =========================================================
pointmass   50 iterations, 20 tasks x 10 episodes  100 iterations, 20 tasks x 20 episodes (MAML, 2D nav.)
ant         30 iterations, 20 tasks x 10 episodes  500 iterations, 40 tasks x 20 episodes (MAML, Sec. 5.3)
timing      10 iterations, 20 tasks x 10 episodes  10 iterations, 40 tasks x 20 episodes
curves      10 iterations, 20 tasks x 10 episodes  60 iterations, 40 tasks x 20 episodes; TRPO: 60 updates of 800 eps.
ablation    50 iterations; fast_batch_size in 5 10 20 40 (20 tasks), meta_batch_size in 5 10 20 40 (20 episodes)
==========  ====================================  =========================================================

Wall-clock measured on the 2-core development machine (shared with other jobs, so expect +-50%):

- PointMass, 20 tasks x 10 episodes: one meta-iteration of MAML ~50 s, FOMAML ~13 s, Reptile ~7 s; the TRPO
  baselines ~20 s per update of 20,000 steps (so ~30 min each for the small budget's 2,000,000 steps); evaluating
  one run on 40 tasks x 20 episodes x 3 steps ~23 s. The small pointmass experiment: ~2 h per seed.
- AntVel, 20 tasks x 10 episodes: one meta-iteration of MAML ~87 s, FOMAML ~38 s; TRPO ~44 s per update of
  40,000 steps; evaluating one run ~165 s. The small ant experiment: ~3.5 h per env and seed.
- The paper budgets cost 2x (pointmass) to 4x (ant) more per iteration, for 2x to 17x more iterations.

``report`` aggregates whatever runs are present into ``summary.csv``, ``summary.md`` (tables, FOMAML vs MAML:
"as well as" when the difference of the mean returns is within two standard errors, over tasks x seeds) and PNGs
that overlay the MAML paper's numbers (maml, pretrain, random, oracle) read from ``--reference``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, Logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train.py: env names and the YAML defaults

from train import ALGOS, NON_ALGO_KEYS, load_hyperparams, make_env

from sb3_meta import MAML
from sb3_meta.common.baselines import BASELINE_POLICY_KWARGS, make_mixture_vec_env, make_random, train_oracle, train_pretrained
from sb3_meta.common.callbacks import StopTrainingOnIterations
from sb3_meta.common.evaluation import evaluate_adaptation, sample_eval_tasks
from sb3_meta.common.utils import atomic_write
from sb3_meta.envs import make_oracle_env

REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_REFERENCE = os.path.join(REPO_ROOT, "..", "shared", "reference", "maml2017_fig5.csv")

META_METHODS = ("maml", "fomaml", "reptile")
BASELINES = ("pretrained", "random", "oracle")
METHODS = (*META_METHODS, *BASELINES)
BUDGETS: dict[str, dict[str, dict[str, int]]] = {
    "pointmass": {
        "small": dict(iterations=50, meta_batch_size=20, fast_batch_size=10),
        "paper": dict(iterations=100, meta_batch_size=20, fast_batch_size=20),
    },
    "ant": {
        "small": dict(iterations=30, meta_batch_size=20, fast_batch_size=10),
        "paper": dict(iterations=500, meta_batch_size=40, fast_batch_size=20),
    },
    "timing": {
        "small": dict(iterations=10, meta_batch_size=20, fast_batch_size=10),
        "paper": dict(iterations=10, meta_batch_size=40, fast_batch_size=20),
    },
    "ablation": {
        "small": dict(iterations=50, meta_batch_size=20, fast_batch_size=20),
        "paper": dict(iterations=100, meta_batch_size=20, fast_batch_size=20),
    },
    # MAML paper's HalfCheetah settings (original code): horizon 200, inner step 0.1; the pretrained baseline
    # takes 100 trajectories per TRPO update, with the meta-learners' trust region
    "halfcheetahdir": {
        "small": dict(iterations=30, meta_batch_size=20, fast_batch_size=10, target_kl=0.02),
        "paper": dict(iterations=100, meta_batch_size=40, fast_batch_size=20, target_kl=0.02, baseline_n_envs=100),
    },
    "halfcheetahvel": {
        "small": dict(iterations=30, meta_batch_size=20, fast_batch_size=10, target_kl=0.01),
        "paper": dict(iterations=475, meta_batch_size=40, fast_batch_size=10, target_kl=0.01, baseline_n_envs=100),
    },
    # Learning curves at equal outer updates and batch (the Ant diagnosis): FOMAML's iterations beside TRPO updates
    # of the same 40 x 20 episodes of 200 steps (``baseline_budget="updates"``)
    "curves": {
        "small": dict(iterations=10, meta_batch_size=20, fast_batch_size=10, target_kl=0.01),
        "paper": dict(iterations=60, meta_batch_size=40, fast_batch_size=20, target_kl=0.01),
    },
}
#: Seconds between two checkpoints of a run in progress (at iteration/update boundaries).
CHECKPOINT_EVERY_S = 180.0
#: Our env names -> env name in the MAML reference table.
REFERENCE_ENVS = {"pointmass-origin": "PointMass2D", "pointmass-random": "PointMass2D", "antvel": "AntVel", "antdir": "AntDir"}
REFERENCE_ENVS.update({"halfcheetahvel": "HalfCheetahVel", "halfcheetahdir": "HalfCheetahDir"})
#: Our method names -> method name in the MAML reference table.
REFERENCE_METHODS = {"maml": "maml", "pretrained": "pretrain", "random": "random", "oracle": "oracle"}
ENV_TITLES = {
    "pointmass-origin": "PointMass (start at the origin)",
    "pointmass-random": "PointMass (random start)",
    "antvel": "Ant goal velocity",
    "antdir": "Ant goal direction",
    "halfcheetahvel": "HalfCheetah goal velocity",
    "halfcheetahdir": "HalfCheetah goal direction",
}
#: Where our envs differ from those behind the MAML paper's numbers.
ENV_NOTES = {
    "pointmass-origin": "Same task distribution as MAML's 2D navigation (start at the origin, goals in [-0.5, 0.5]^2, "
    "horizon 100): the paper's numbers are directly comparable.",
    "pointmass-random": "Random start (this project's paper); MAML's point mass started at the origin, so its numbers "
    "are only a reference for the shape of the curves.",
    "antvel": "Ant-v5 MuJoCo model (gymnasium) instead of rllab's Ant, by default at rllab's time step (dt = 0.02 s); "
    "goal velocities in [0, 2] here vs [0, 3] in MAML; compare shapes and ratios, not absolute returns.",
    "antdir": "Ant-v5 MuJoCo model (gymnasium) instead of rllab's Ant, by default at rllab's time step (dt = 0.02 s); "
    "compare shapes and ratios, not absolute returns.",
    "halfcheetahvel": "HalfCheetah-v5 MuJoCo model (gymnasium) instead of rllab's HalfCheetah; compare shapes and ratios, "
    "not absolute returns.",
    "halfcheetahdir": "HalfCheetah-v5 MuJoCo model (gymnasium) instead of rllab's HalfCheetah; compare shapes and "
    "ratios, not absolute returns.",
}
COLORS = {"maml": "C0", "fomaml": "C1", "reptile": "C2", "pretrained": "C3", "random": "C7", "oracle": "C4"}


# --- configuration --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunConfig:
    """Everything that defines the runs of one experiment (recorded in each run's JSON)."""

    iterations: int
    meta_batch_size: int
    fast_batch_size: int
    n_test_tasks: int
    test_steps: int
    test_episodes: int
    eval_seed: int
    baseline_algo: str
    baseline_adapt_lr: float
    max_episode_steps: int | None = None
    hidden_size: int | None = None
    baseline_n_envs: int | None = None
    device: str = "cpu"
    target_kl: float | None = None
    #: the pretrained/oracle baselines' budget: ``"env_steps"`` (the meta-learners' nominal env steps, pre- and
    #: post-adaptation episodes both counted) or ``"updates"`` (one update per meta-iteration, of one episode per
    #: sub-env: the learning-curve comparison at equal updates and batch)
    baseline_budget: str = "env_steps"
    #: MuJoCo substeps per env step (``None``: the env's default); Ant's 2 gives the original rllab Ant's 0.02 s step
    frame_skip: int | None = None
    #: constructor arguments of the meta-learner over the YAML defaults (the Reptile sweep)
    algo_kwargs: dict[str, Any] | None = None


def make_config(args: argparse.Namespace, experiment: str) -> RunConfig:
    budget = dict(BUDGETS[experiment][args.budget])
    for key in ("iterations", "meta_batch_size", "fast_batch_size", "target_kl", "baseline_n_envs"):
        if getattr(args, key, None) is not None:
            budget[key] = getattr(args, key)
    return RunConfig(
        **budget,
        n_test_tasks=args.n_test_tasks,
        test_steps=args.test_steps,
        test_episodes=args.test_episodes,
        eval_seed=args.eval_seed,
        baseline_algo=args.baseline_algo,
        baseline_adapt_lr=args.baseline_adapt_lr,
        max_episode_steps=args.max_episode_steps,
        frame_skip=getattr(args, "frame_skip", None),
        hidden_size=args.hidden_size,
        device=args.device,
        algo_kwargs=algo_kwargs_of(args),
    )


def algo_kwargs_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The meta-learners' settings given on the command line (None: the YAML's)."""
    kwargs: dict[str, Any] = {}
    if getattr(args, "inner_lr", None) is not None:
        kwargs["inner_lr"] = args.inner_lr
    if getattr(args, "sub_sampling_factor", None) is not None:
        kwargs["sub_sampling_factor"] = args.sub_sampling_factor
    return kwargs or None


def env_kwargs(env_name: str, cfg: RunConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if env_name.startswith("pointmass"):
        kwargs["start"] = env_name.split("-", 1)[1]
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if cfg.frame_skip is not None:
        kwargs["frame_skip"] = cfg.frame_skip
    return kwargs


def frame_skip_of(env_name: str, cfg: RunConfig) -> int:
    """The MuJoCo substeps per env step that ``cfg`` gives ``env_name``: ``--frame-skip``, else the env's default."""
    return cfg.frame_skip if cfg.frame_skip is not None else int(build_env(env_name, cfg).frame_skip)


def results_group(env_name: str, cfg: RunConfig) -> str:
    """Sub-folder of ``runs/``: the env, with ``-fs<N>`` when ``--frame-skip`` gives another time step than the env's
    default (so runs at different time steps never share, or skip for, each other's files)."""
    if cfg.frame_skip is None or cfg.frame_skip == frame_skip_of(env_name, dataclasses.replace(cfg, frame_skip=None)):
        return env_name
    return f"{env_name}-fs{cfg.frame_skip}"


def build_env(env_name: str, cfg: RunConfig) -> Any:
    return make_env("pointmass" if env_name.startswith("pointmass") else env_name, env_kwargs(env_name, cfg))


def horizon_of(env: Any) -> int:
    return int(env.unwrapped.max_episode_steps)


# --- one run ----------------------------------------------------------------------------------------------------
def run_paths(out: str, group: str, name: str) -> dict[str, str]:
    folder = os.path.join(out, "runs", group)
    return {ext: os.path.join(folder, f"{name}.{ext}") for ext in ("csv", "zip", "json")}


def _write_json(path: str, data: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


def _already_done(paths: dict[str, str], cfg_dict: dict[str, Any], label: str) -> bool:
    if not os.path.exists(paths["csv"]):
        return False
    note = ""
    if os.path.exists(paths["json"]):
        with open(paths["json"]) as f:
            saved = json.load(f).get("config", {})
        changed = {k: (saved.get(k), v) for k, v in cfg_dict.items() if k in saved and saved.get(k) != v}
        if changed:
            note = f" (made with a different configuration: {changed}; use another --out to rerun)"
    print(f"[{label}] skip: {paths['csv']} exists{note}")
    return True


def meta_model(method: str, env: Any, env_name: str, seed: int, cfg: RunConfig, **overrides: Any) -> Any:
    """A meta-learner with the YAML defaults of ``env_name``, the budget's batch sizes and ``overrides``."""
    hyperparams = load_hyperparams(method, "pointmass" if env_name.startswith("pointmass") else env_name)
    kwargs = {k: v for k, v in hyperparams.items() if k not in NON_ALGO_KEYS}
    kwargs.update(meta_batch_size=cfg.meta_batch_size, fast_batch_size=cfg.fast_batch_size, **overrides)
    if cfg.target_kl is not None and issubclass(ALGOS[method], MAML):  # a TRPO outer step (MAML, FOMAML); not Reptile
        kwargs["target_kl"] = cfg.target_kl
    if cfg.hidden_size is not None:
        kwargs["policy_kwargs"] = dict(net_arch=dict(pi=[cfg.hidden_size] * 2, vf=[]))
    if "sub_sampling_factor" in (cfg.algo_kwargs or {}) and not issubclass(ALGOS[method], MAML):
        raise ValueError(f"--sub-sampling-factor applies to the TRPO meta-step of MAML and FOMAML, not to {method}")
    kwargs.update(cfg.algo_kwargs or {})
    return ALGOS[method]("MlpPolicy", env, seed=seed, device=cfg.device, **kwargs)


def train_meta(model: Any, cfg: RunConfig, horizon: int) -> int:
    """Meta-train for exactly ``cfg.iterations`` meta-iterations; return the env steps they sampled."""
    passes = model.sampling_passes
    nominal = cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon * passes
    stop = StopTrainingOnIterations(cfg.iterations)
    model.learn(nominal, callback=stop)  # ends at the budget, or at the iteration count when episodes end early
    return int(stop.timesteps_at_stop or model.num_timesteps)


def baseline_target_kl(env: Any, env_name: str, cfg: RunConfig) -> float:
    """The sb3-contrib TRPO baseline's ``target_kl`` that gives it the meta-learners' trust region.

    The meta-learners (as the original MAML/rllab code) bound the mean over samples of the KL summed over action
    dimensions; sb3-contrib's TRPO bounds its mean over samples and action dimensions. With the same number it
    would get ``action_dim`` times the trust region (8x on Ant), so it gets ``target_kl / action_dim``
    (tests/test_trpo_consistency.py shows the two steps agree then).
    """
    target_kl = cfg.target_kl
    if target_kl is None:
        target_kl = float(
            load_hyperparams("fomaml", "pointmass" if env_name.startswith("pointmass") else env_name)["target_kl"]
        )
    space = env.action_space
    action_dim = int(np.prod(space.shape)) if space.shape else 1  # a categorical distribution has one KL term
    return target_kl / action_dim


def baseline_budget(cfg: RunConfig, horizon: int) -> int:
    """The baselines' env steps: MAML's nominal env steps, iterations x meta_batch_size x fast_batch_size x horizon
    x 2 (pre/post episodes); with ``cfg.baseline_budget == "updates"``, half of it: ``cfg.iterations`` updates of
    ``n_envs x horizon`` steps (``n_envs = meta_batch_size x fast_batch_size``, one episode per sub-env)."""
    if cfg.baseline_budget == "updates":
        if cfg.baseline_n_envs not in (None, cfg.meta_batch_size * cfg.fast_batch_size):
            raise SystemExit("baseline_budget='updates' compares equal batches: leave --baseline-n-envs unset")
        return cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon
    return cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon * 2


class RunCheckpoint(BaseCallback):
    """Checkpoint a run in progress and log every iteration/update to CSV, so that a run survives being stopped.

    The model is saved at the start of an iteration (SB3's ``on_rollout_start``) once ``every_s`` seconds have
    passed since the last save: there it holds exactly the state the previous iteration left (parameters,
    optimiser, counters, and for the meta-learners every RNG state), so that a meta-learner loaded from the
    checkpoint trains on bit for bit. The file is written beside the target and renamed over it, so a kill
    during a save leaves the previous checkpoint intact. ``progress`` (wall-clock so far) is written with it.

    :param path: checkpoint path (``.zip``)
    :param log_path: CSV of the logger's values at every iteration (one file per resumed segment)
    :param every_s: seconds between two checkpoints
    :param train_s_before: training seconds of the earlier segments (resumed runs)
    """

    def __init__(self, path: str, log_path: str, every_s: float, train_s_before: float = 0.0) -> None:
        super().__init__()
        self.path, self.log_path, self.every_s = path, log_path, every_s
        self.train_s_before = train_s_before
        self._started = self._last_save = time.perf_counter()

    def _on_training_start(self) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.model.set_logger(Logger(folder=None, output_formats=[CSVOutputFormat(self.log_path)]))
        self._started = self._last_save = time.perf_counter()

    @property
    def train_s(self) -> float:
        return self.train_s_before + time.perf_counter() - self._started

    def _on_rollout_start(self) -> None:
        if time.perf_counter() - self._last_save >= self.every_s:
            self.save()

    def _on_step(self) -> bool:
        return True

    def save(self) -> None:
        progress = {"train_s": self.train_s, "num_timesteps": int(self.model.num_timesteps)}
        atomic_write(self.path, self.model.save)  # SB3 baselines too: their own save is not atomic
        _write_json(self.path + ".json", progress)
        self._last_save = time.perf_counter()


class BatchReturn(BaseCallback):
    """Log the mean return of the episodes that ended in each rollout of an SB3 baseline (``rollout/batch_return``).

    SB3's ``rollout/ep_rew_mean`` averages the last 100 episodes only; the meta-learners' ``pre_adapt_return``
    averages every episode of the pass, and the learning curves compare like with like.
    """

    def __init__(self) -> None:
        super().__init__()
        self._returns: list[float] = []

    def _on_rollout_start(self) -> None:
        self._returns = []

    def _on_step(self) -> bool:
        self._returns += [float(info["episode"]["r"]) for info in self.locals.get("infos", ()) if "episode" in info]
        return True

    def _on_rollout_end(self) -> None:
        if self._returns:
            self.logger.record("rollout/batch_return", float(np.mean(self._returns)))
            self.logger.record("rollout/batch_episodes", len(self._returns))


def checkpoint_paths(out: str, group: str, name: str, segment: int) -> tuple[str, str]:
    """(checkpoint zip, CSV log of the segment starting at ``segment`` env steps) of a run in progress."""
    return (
        os.path.join(out, "checkpoints", group, f"{name}.zip"),
        os.path.join(out, "progress", group, f"{name}.from{segment}.csv"),
    )


def resume_state(ckpt: str) -> tuple[bool, float]:
    """Whether a checkpoint of the run exists, and the training seconds it had taken."""
    if not os.path.exists(ckpt):
        return False, 0.0
    progress = ckpt + ".json"
    train_s = json.load(open(progress)).get("train_s", 0.0) if os.path.exists(progress) else 0.0
    return True, float(train_s)


def train_meta_resumable(
    method: str, env: Any, env_name: str, seed: int, cfg: RunConfig, out: str, group: str, name: str
) -> tuple[Any, int, float]:
    """Meta-train for ``cfg.iterations`` iterations, resuming from the run's checkpoint if there is one.

    :return: the model, the env steps sampled and the training seconds (all segments)
    """
    ckpt, _ = checkpoint_paths(out, group, name, 0)
    resumed, train_s_before = resume_state(ckpt)
    if resumed:
        model = ALGOS[method].load(ckpt, env=env, device=cfg.device)
        print(f"[{group}/{name}] resumed at iteration {model.n_iterations} ({train_s_before:.0f} s trained before)")
    else:
        model = meta_model(method, env, env_name, seed, cfg)
    passes = model.sampling_passes
    nominal = cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon_of(env) * passes
    remaining = cfg.iterations - model.n_iterations
    _, log_path = checkpoint_paths(out, group, name, model.num_timesteps)
    saver = RunCheckpoint(ckpt, log_path, CHECKPOINT_EVERY_S, train_s_before)
    stop = StopTrainingOnIterations(remaining)
    if remaining > 0:
        # the same total as an uninterrupted run (progress_remaining, hence any schedule, continues unchanged)
        model.learn(nominal - model.num_timesteps, callback=CallbackList([saver, stop]), reset_num_timesteps=not resumed)
    return model, int(stop.timesteps_at_stop or model.num_timesteps), saver.train_s


def train_baseline_resumable(
    method: str, env: Any, cfg: RunConfig, total_timesteps: int, out: str, group: str, name: str, **kwargs: Any
) -> tuple[Any, float]:
    """The pretrained/oracle baseline for ``total_timesteps`` env steps, resuming from its checkpoint if any.

    SB3 does not save its env's or torch's RNG state, so a resumed baseline is not bit-identical to an
    uninterrupted one (it continues from the checkpoint's policy on fresh episodes, with another env seed).
    """
    from sb3_contrib import TRPO
    from stable_baselines3 import PPO

    ckpt, _ = checkpoint_paths(out, group, name, 0)
    resumed, train_s_before = resume_state(ckpt)
    if not resumed:
        _, log_path = checkpoint_paths(out, group, name, 0)
        saver = RunCheckpoint(ckpt, log_path, CHECKPOINT_EVERY_S)
        train = train_oracle if method == "oracle" else train_pretrained
        return train(env, total_timesteps, callback=CallbackList([saver, BatchReturn()]), **kwargs), saver.train_s
    model = {"trpo": TRPO, "ppo": PPO}[cfg.baseline_algo].load(ckpt, device=cfg.device)
    env_seed = kwargs["seed"] + 7919 * (model.num_timesteps + 1)  # fresh episodes, not those of the first segment
    venv = make_mixture_vec_env(env, kwargs["n_envs"], seed=env_seed, oracle=method == "oracle")
    model.set_env(venv)
    print(f"[{group}/{name}] resumed at {model.num_timesteps:,} env steps ({train_s_before:.0f} s trained before)")
    _, log_path = checkpoint_paths(out, group, name, model.num_timesteps)
    saver = RunCheckpoint(ckpt, log_path, CHECKPOINT_EVERY_S, train_s_before)
    if model.num_timesteps < total_timesteps:
        model.learn(
            total_timesteps - model.num_timesteps, callback=CallbackList([saver, BatchReturn()]), reset_num_timesteps=False
        )
    return model, saver.train_s


def run_one(
    out: str,
    experiment: str,
    group: str,
    env_name: str,
    method: str,
    seed: int,
    cfg: RunConfig,
    run_name: str | None = None,
    **meta_overrides: Any,
) -> None:
    """Train ``method`` on ``env_name`` with ``seed``, evaluate it on the held-out tasks, write its files.

    Training checkpoints every :data:`CHECKPOINT_EVERY_S` seconds under ``<out>/checkpoints/`` and resumes from
    there when the run is started again (bit for bit for the meta-learners); per-iteration logs go to
    ``<out>/progress/``.

    :param experiment: experiment name recorded in the CSV (``pointmass``, ``ant``, ``ablation``)
    :param group: sub-folder of ``runs/``
    :param run_name: the run's file name without seed (default: ``method`` and the ``meta_overrides``)
    :param meta_overrides: batch sizes that differ from ``cfg`` (ablation)
    """
    short = {"fast_batch_size": "fb", "meta_batch_size": "mb"}
    suffix = "".join(f"_{short.get(k, k)}{v}" for k, v in meta_overrides.items())
    name = f"{run_name or method + suffix}_seed{seed}"
    paths = run_paths(out, group, name)
    label = f"{group}/{name}"
    cfg_dict = {**dataclasses.asdict(cfg), **meta_overrides}
    if _already_done(paths, cfg_dict, label):
        return
    os.makedirs(os.path.dirname(paths["csv"]), exist_ok=True)
    run_cfg = dataclasses.replace(cfg, **meta_overrides)
    env = build_env(env_name, run_cfg)
    info: dict[str, Any] = {}
    if method == "reptile" and run_cfg.algo_kwargs is None:  # no configuration given: the sweep's chosen one
        run_cfg = reptile_config(run_cfg, horizon_of(env))
        info["reptile_config"] = {"name": REPTILE_CHOSEN, **dataclasses.asdict(run_cfg)}
    horizon = horizon_of(env)
    start = time.perf_counter()
    baseline_kwargs = dict(
        algo=run_cfg.baseline_algo,
        seed=seed,
        n_envs=run_cfg.baseline_n_envs or run_cfg.meta_batch_size * run_cfg.fast_batch_size,
        device=run_cfg.device,
        policy_kwargs=(
            dict(net_arch=dict(pi=[run_cfg.hidden_size] * 2, vf=[run_cfg.hidden_size] * 2))
            if run_cfg.hidden_size is not None
            else BASELINE_POLICY_KWARGS
        ),
    )
    if run_cfg.baseline_algo == "trpo":
        baseline_kwargs["target_kl"] = info["baseline_target_kl"] = baseline_target_kl(env, env_name, run_cfg)
    train_s = None
    if method in META_METHODS:
        model, env_steps, train_s = train_meta_resumable(method, env, env_name, seed, run_cfg, out, group, name)
        info["iteration_times"] = list(model.iteration_times)  # this segment's iterations
    elif method in ("pretrained", "oracle"):
        budget = baseline_budget(run_cfg, horizon)
        model, train_s = train_baseline_resumable(method, env, run_cfg, budget, out, group, name, **baseline_kwargs)
        env_steps = model.num_timesteps
    elif method == "random":
        baseline_kwargs.pop("n_envs")
        baseline_kwargs.pop("target_kl", None)
        model = make_random(env, **baseline_kwargs)  # type: ignore[arg-type]
        env_steps = 0
    else:
        raise ValueError(f"Unknown method {method!r}")
    if train_s is None:
        train_s = time.perf_counter() - start
    model.save(paths["zip"])

    start = time.perf_counter()
    eval_env = build_env(env_name, run_cfg)
    tasks = sample_eval_tasks(eval_env, run_cfg.n_test_tasks, seed=run_cfg.eval_seed)
    result = evaluate_adaptation(
        model,
        make_oracle_env(eval_env) if method == "oracle" else eval_env,
        tasks=tasks,
        n_steps=0 if method == "oracle" else run_cfg.test_steps,
        n_episodes=run_cfg.test_episodes,
        seed=seed,
        adapt_lr=None if method in META_METHODS else run_cfg.baseline_adapt_lr,
    )
    eval_s = time.perf_counter() - start
    _write_json(
        paths["json"],
        {"config": cfg_dict, "env": env_name, "method": method, "seed": seed, "train_s": train_s, "eval_s": eval_s}
        | {"env_steps": env_steps, **info},
    )
    extra = dict(experiment=experiment, env=env_name, method=method, seed=seed)
    extra.update(meta_batch_size=run_cfg.meta_batch_size, fast_batch_size=run_cfg.fast_batch_size)
    result.to_csv(paths["csv"] + ".tmp", **extra)
    os.replace(paths["csv"] + ".tmp", paths["csv"])  # the CSV marks the run as done
    means = " ".join(f"{m:.2f}" for m in result.mean)
    print(
        f"[{label}] train {train_s:.1f} s, eval {eval_s:.1f} s, {env_steps:,} env steps; "
        f"mean return after 0..{result.n_steps} steps: {means}"
    )


# --- experiments ----------------------------------------------------------------------------------------------
def check_methods(methods: Iterable[str]) -> list[str]:
    methods = list(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}; choose among {list(METHODS)}")
    return methods


def experiment_pointmass(args: argparse.Namespace) -> None:
    cfg = make_config(args, "pointmass")
    env_name = f"pointmass-{args.start}"
    methods = check_methods(args.methods)
    print(f"pointmass ({env_name}): {cfg}")
    start = time.perf_counter()
    for seed in args.seeds:
        for method in methods:
            run_one(args.out, "pointmass", env_name, env_name, method, seed, cfg)
    print(f"pointmass done in {time.perf_counter() - start:.1f} s")


def experiment_ant(args: argparse.Namespace) -> None:
    cfg = make_config(args, "ant")
    methods = check_methods(args.methods)
    print(f"ant ({', '.join(args.envs)}): {cfg}")
    start = time.perf_counter()
    for env_name in args.envs:
        for seed in args.seeds:
            for method in methods:
                run_one(args.out, "ant", results_group(env_name, cfg), env_name, method, seed, cfg)
    print(f"ant done in {time.perf_counter() - start:.1f} s")


def experiment_cheetah(args: argparse.Namespace) -> None:
    """HalfCheetahDir and HalfCheetahVel at the MAML paper's settings (``--budget paper``), all methods."""
    methods = check_methods(args.methods)
    start = time.perf_counter()
    for env_name in args.envs:
        cfg = make_config(args, env_name)
        print(f"cheetah ({env_name}): {cfg}")
        for seed in args.seeds:
            for method in methods:
                run_one(args.out, "cheetah", results_group(env_name, cfg), env_name, method, seed, cfg)
    print(f"cheetah done in {time.perf_counter() - start:.1f} s")


def schedule_env_name(env_name: str, step_sizes: list[float]) -> str:
    """Name of the re-evaluation of ``env_name``'s runs with per-step sizes, e.g. ``pointmass-origin@0.1-0.05-0.05``."""
    return f"{env_name}@{'-'.join(f'{a:g}' for a in step_sizes)}"


def base_env(env_name: str) -> str:
    """The env of a results group: ``antvel-fs5@0.1-0.05-0.05`` -> ``antvel`` (time step and step sizes dropped)."""
    return env_name.split("@")[0].split("-fs")[0]


def env_note(env: str) -> str | None:
    """How the group's env differs from the MAML paper's, with its time step when a ``-fs<N>`` group names one."""
    note = ENV_NOTES.get(base_env(env))
    if note is not None and "-fs" in env:
        frame_skip = int(env.split("@")[0].split("-fs")[1])
        note += f" This group: frame_skip {frame_skip}, dt = {frame_skip * 0.01:.2f} s."
    return note


def experiment_schedule(args: argparse.Namespace) -> None:
    """Evaluate the saved models of ``--env`` again, with one step size per adaptation step (no training).

    The original MAML test script adapted with a learning rate for the first step and half of it for the later
    ones; ``--step-sizes 0.1 0.05 0.05`` does that here. Same held-out tasks and episodes budget as the runs.
    """
    from sb3_contrib import TRPO
    from stable_baselines3 import PPO

    step_sizes = [float(a) for a in args.step_sizes]
    name = schedule_env_name(args.env, step_sizes)
    methods = [m for m in check_methods(args.methods) if m != "oracle"]  # the oracle does not adapt
    start = time.perf_counter()
    for seed in args.seeds:
        for method in methods:
            source = run_paths(args.out, args.env, f"{method}_seed{seed}")
            paths = run_paths(args.out, name, f"{method}_seed{seed}")
            if os.path.exists(paths["csv"]):
                print(f"[{name}/{method}_seed{seed}] already done: {paths['csv']}")
                continue
            if not (os.path.exists(source["zip"]) and os.path.exists(source["json"])):
                print(f"[{name}/{method}_seed{seed}] no saved run {source['zip']}: run the experiment first; skipped")
                continue
            with open(source["json"]) as f:
                info = json.load(f)
            cfg = RunConfig(**{k: v for k, v in info["config"].items() if k in RunConfig.__dataclass_fields__})
            if len(step_sizes) != cfg.test_steps:
                raise SystemExit(f"--step-sizes: {cfg.test_steps} values expected (one per test step of the runs)")
            if method in META_METHODS:
                model = ALGOS[method].load(source["zip"], device=cfg.device)
            else:
                model = {"trpo": TRPO, "ppo": PPO}[cfg.baseline_algo].load(source["zip"], device=cfg.device)
            eval_start = time.perf_counter()
            eval_env = build_env(args.env, cfg)
            tasks = sample_eval_tasks(eval_env, cfg.n_test_tasks, seed=cfg.eval_seed)
            result = evaluate_adaptation(
                model,
                eval_env,
                tasks=tasks,
                n_steps=cfg.test_steps,
                n_episodes=cfg.test_episodes,
                seed=seed,
                adapt_lr=step_sizes,
            )
            os.makedirs(os.path.dirname(paths["csv"]), exist_ok=True)
            _write_json(
                paths["json"],
                {"config": info["config"], "env": name, "method": method, "seed": seed, "source": source["zip"]}
                | {"step_sizes": step_sizes, "eval_s": time.perf_counter() - eval_start}
                | {"train_s": 0.0, "env_steps": 0},  # no training of its own: the source run's JSON has those
            )
            extra = dict(experiment="schedule", env=name, method=method, seed=seed)
            extra.update(meta_batch_size=cfg.meta_batch_size, fast_batch_size=cfg.fast_batch_size)
            result.to_csv(paths["csv"] + ".tmp", **extra)
            os.replace(paths["csv"] + ".tmp", paths["csv"])
            means = " ".join(f"{m:.2f}" for m in result.mean)
            print(f"[{name}/{method}_seed{seed}] mean return after 0..{result.n_steps} steps: {means}")
    print(f"schedule done in {time.perf_counter() - start:.1f} s")


def experiment_curves(args: argparse.Namespace) -> None:
    """Learning curves at equal updates and batch: FOMAML (or another method) per meta-iteration beside TRPO per update.

    Each TRPO update takes one episode on each of ``meta_batch_size x fast_batch_size`` sub-envs of the task
    mixture (the meta-learners' pre-adaptation batch), with the meta-learners' trust region
    (:func:`baseline_target_kl`), for ``iterations`` updates. Runs under ``<out>/curves/`` (resumable as the
    others); then ``<out>/curves/<env>.md`` and ``<env>-curves.png`` from the per-iteration logs so far.
    """
    out = os.path.join(args.out, "curves")
    cfg = dataclasses.replace(make_config(args, "curves"), baseline_budget="updates")
    # curves compare time steps: their group always names it
    group = f"{args.env}-fs{frame_skip_of(args.env, cfg)}"
    methods = check_methods(args.methods)
    print(f"curves ({group}): {cfg}")
    start = time.perf_counter()
    if not args.plot_only:
        for seed in args.seeds:
            for method in methods:
                run_one(out, "curves", group, args.env, method, seed, cfg)
    print(f"curves done in {time.perf_counter() - start:.1f} s")
    report_curves(out, group)


def read_progress(out: str, group: str, name: str) -> list[dict[str, str]]:
    """The per-iteration log rows of one run, its resumed segments joined (a re-run iteration: the later row)."""
    folder = os.path.join(out, "progress", group)
    if not os.path.isdir(folder):
        return []
    segments = [f for f in os.listdir(folder) if f.startswith(f"{name}.from") and f.endswith(".csv")]
    rows: dict[int, dict[str, str]] = {}
    for segment in sorted(segments, key=lambda f: int(f[len(name) + 5 : -4])):
        for row in read_csv(os.path.join(folder, segment)):
            if row.get("time/total_timesteps"):
                rows[int(float(row["time/total_timesteps"]))] = row
    return [rows[k] for k in sorted(rows)]


def curve_series(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Per-iteration series of a meta-learner's or a TRPO baseline's log: return(s), log-std, KL, accepted."""

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])

    if rows and "rollout/pre_adapt_return" in rows[0]:
        return {
            "iteration": column("time/iterations"),
            "return": column("rollout/pre_adapt_return"),
            "post_return": column("rollout/post_adapt_return"),
            "log_std": column("train/log_std"),
            "kl": column("train/kl"),
            "accepted": column("train/step_accepted"),
        }
    # SB3 dumps a rollout's values before train() runs, so train/* of update k appear in row k + 1
    shifted = {key: np.append(column(key)[1:], np.nan) for key in ("train/std", "train/kl_divergence_loss")}
    return {
        "iteration": np.arange(1, len(rows) + 1, dtype=np.float64),
        "return": column("rollout/batch_return"),
        "log_std": np.log(shifted["train/std"]),
        "kl": shifted["train/kl_divergence_loss"],
    }


def report_curves(out: str, env_name: str) -> None:
    """``<out>/<env>.md`` (milestones every 10 iterations) and ``<out>/<env>-curves.png`` from the progress logs."""
    # the update's log-std and KL; a TRPO run's last update has none (nan in curve_series): an empty cell
    train_columns = (("log_std", ".3f"), ("kl", ".4f"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = os.path.join(out, "progress", env_name)
    names = sorted({f.split(".from")[0] for f in os.listdir(folder)}) if os.path.isdir(folder) else []
    series = {name: curve_series(read_progress(out, env_name, name)) for name in names}
    series = {name: s for name, s in series.items() if len(s["iteration"])}
    if not series:
        print(f"curves: no progress logs under {folder} yet")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in series.items():
        method = name.split("_seed")[0]
        color = COLORS.get(method)
        axes[0].plot(
            s["iteration"], s["return"], color=color, label=f"{name}: {'pre-adaptation' if 'post_return' in s else 'TRPO'}"
        )
        if "post_return" in s:
            axes[0].plot(s["iteration"], s["post_return"], color=color, ls="--", label=f"{name}: after 1 step")
        axes[1].plot(s["iteration"], s["log_std"], color=color, label=name)
    axes[0].set(
        xlabel="outer update (meta-iteration / TRPO update)", ylabel="mean return of the batch", title=env_title(env_name)
    )
    axes[1].set(xlabel="outer update", ylabel="mean log-std of the policy", title="exploration noise")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = os.path.join(out, f"{env_name}-curves.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    lines = []
    for name, s in series.items():
        for k in sorted({*range(10, int(np.nanmax(s["iteration"])) + 1, 10), int(np.nanmax(s["iteration"]))}):
            i = int(np.searchsorted(s["iteration"], k))
            if i < len(s["iteration"]):
                window = slice(max(0, i - 4), i + 1)  # mean of the last 5 updates: one batch is noisy
                post = f"{np.nanmean(s['post_return'][window]):.1f}" if "post_return" in s else ""
                log_std, kl = (f"{s[key][i]:{spec}}" if np.isfinite(s[key][i]) else "" for key, spec in train_columns)
                lines.append([name, k, f"{np.nanmean(s['return'][window]):.1f}", post, log_std, kl])
    md = [
        f"# Learning curves at equal updates and batch: {env_title(env_name)}",
        "",
        "Made by `examples/reproduce.py curves` from the per-iteration logs under "
        f"`{os.path.relpath(folder)}`. Returns: mean over the update's batch, averaged over the last 5 updates up to that "
        "one. KL of the update's step: the meta-learners' is summed over the action dimensions (the MAML code's), "
        "sb3-contrib TRPO's is their mean; TRPO's last update has no log-std/KL (SB3 logs train/* at the next update).",
        "",
        *markdown_table(["run", "update", "return (pre-adaptation / TRPO)", "after 1 step", "log-std", "KL"], lines),
    ]
    with open(os.path.join(out, f"{env_name}.md"), "w") as f:
        f.write("\n".join(md))
    print(f"curves: wrote {png} and {os.path.join(out, env_name + '.md')}")


def experiment_timing(args: argparse.Namespace) -> None:
    """Seconds per meta-iteration (sampling / inner / meta-step) of FOMAML and MAML on the same env and batches."""
    cfg = make_config(args, "timing")
    print(f"timing ({args.env}): {cfg}")
    start = time.perf_counter()
    for seed in args.seeds:
        for method in ("fomaml", "maml"):
            paths = run_paths(args.out, os.path.join("timing", args.env), f"{method}_seed{seed}")
            label = f"timing/{args.env}/{method}_seed{seed}"
            if _already_done(paths, dataclasses.asdict(cfg), label):
                continue
            os.makedirs(os.path.dirname(paths["csv"]), exist_ok=True)
            env = build_env(args.env, cfg)
            model = meta_model(method, env, args.env, seed, cfg)
            t0 = time.perf_counter()
            env_steps = train_meta(model, cfg, horizon_of(env))
            train_s = time.perf_counter() - t0
            _write_json(paths["json"], {"config": dataclasses.asdict(cfg), "train_s": train_s, "env_steps": env_steps})
            keys = ("sampling_s", "inner_s", "meta_step_s", "iteration_s")
            with open(paths["csv"] + ".tmp", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["env", "method", "seed", "iteration", *keys])
                for i, times in enumerate(model.iteration_times):
                    writer.writerow([args.env, method, seed, i, *(times[k] for k in keys)])
            os.replace(paths["csv"] + ".tmp", paths["csv"])
            meta_steps = [t["meta_step_s"] for t in model.iteration_times]
            print(
                f"[{label}] {train_s:.1f} s for {len(meta_steps)} iterations; median meta-step {np.median(meta_steps):.3f} s"
            )
    print(f"timing done in {time.perf_counter() - start:.1f} s")


def experiment_ablation(args: argparse.Namespace) -> None:
    """FOMAML's post-adaptation return vs fast_batch_size (meta_batch_size fixed) and vs meta_batch_size."""
    cfg = make_config(args, "ablation")
    env_name = f"pointmass-{args.start}"
    configs = [(fb, cfg.meta_batch_size) for fb in args.fast_batch_sizes]
    configs += [(cfg.fast_batch_size, mb) for mb in args.meta_batch_sizes if (cfg.fast_batch_size, mb) not in configs]
    print(f"ablation ({env_name}): (fast_batch_size, meta_batch_size) in {configs}; {cfg}")
    start = time.perf_counter()
    for seed in args.seeds:
        for fast, meta in configs:
            overrides = dict(fast_batch_size=fast, meta_batch_size=meta)
            run_one(args.out, "ablation", os.path.join("ablation", env_name), env_name, "fomaml", seed, cfg, **overrides)
    print(f"ablation done in {time.perf_counter() - start:.1f} s")


#: the inner steps of a "reuse_noclip" sweep entry: on reused episodes, the unclipped probability ratio
REUSE_NOCLIP: dict[str, Any] = dict(reuse_inner_episodes=True, reuse_clip_range=None)

#: The Reptile sweep (issue "Reptile that adapts"): one factor at a time around the defaults (3 inner VPG steps of
#: 0.1 on fresh episodes, the budget's episodes per inner step, epsilon = 1), at FOMAML's env-step budget.
#: Name -> (Reptile arguments, episodes per inner step as a multiple of the budget's fast_batch_size).
#: every entry names its inner step size: the class default (0.3) was itself chosen from this sweep
REPTILE_SWEEP: dict[str, tuple[dict[str, Any], float]] = {
    "k1": (dict(n_inner_steps=1, inner_lr=0.1), 1.0),
    "k3": (dict(n_inner_steps=3, inner_lr=0.1), 1.0),
    "k5": (dict(n_inner_steps=5, inner_lr=0.1), 1.0),
    "k10": (dict(n_inner_steps=10, inner_lr=0.1), 1.0),
    "k3_lr0.03": (dict(n_inner_steps=3, inner_lr=0.03), 1.0),
    "k3_lr0.3": (dict(n_inner_steps=3, inner_lr=0.3), 1.0),
    "k3_fbx0.5": (dict(n_inner_steps=3, inner_lr=0.1), 0.5),
    "k3_fbx2": (dict(n_inner_steps=3, inner_lr=0.1), 2.0),
    "k3_eps0.5": (dict(n_inner_steps=3, outer_lr=0.5, inner_lr=0.1), 1.0),
    "k3_anneal": (dict(n_inner_steps=3, anneal_outer_lr=True, inner_lr=0.1), 1.0),
    "k10_anneal": (dict(n_inner_steps=10, anneal_outer_lr=True, inner_lr=0.1), 1.0),
    # second round, around the first round's best (the inner step size)
    "k3_lr0.5": (dict(n_inner_steps=3, inner_lr=0.5), 1.0),
    "k3_lr1": (dict(n_inner_steps=3, inner_lr=1.0), 1.0),
    "k1_lr0.3": (dict(n_inner_steps=1, inner_lr=0.3), 1.0),
    "k5_lr0.3": (dict(n_inner_steps=5, inner_lr=0.3), 1.0),
    "k3_lr0.3_fbx0.5": (dict(n_inner_steps=3, inner_lr=0.3), 0.5),
    "k3_lr0.3_eps2": (dict(n_inner_steps=3, inner_lr=0.3, outer_lr=2.0), 1.0),
    # third round: the original Reptile's variants, from the chosen configuration. reuse: every inner step on the
    # first pass's episodes (one pass per iteration, so three times the iterations at equal env steps)
    "k3_lr0.3_fbx0.5_reuse": (dict(n_inner_steps=3, inner_lr=0.3, reuse_inner_episodes=True), 0.5),
    "k3_lr0.3_reuse": (dict(n_inner_steps=3, inner_lr=0.3, reuse_inner_episodes=True), 1.0),
    "k10_lr0.1_reuse": (dict(n_inner_steps=10, inner_lr=0.1, reuse_inner_episodes=True), 1.0),
    # adamA: Adam with β1 = 0 as the inner optimiser, step A (its first step is ~A per parameter, hence small A)
    "k3_adam0.003_fbx0.5": (dict(n_inner_steps=3, inner_lr=0.003, inner_optimizer="adam"), 0.5),
    "k3_adam0.01_fbx0.5": (dict(n_inner_steps=3, inner_lr=0.01, inner_optimizer="adam"), 0.5),
    "k3_adam0.03_fbx0.5": (dict(n_inner_steps=3, inner_lr=0.03, inner_optimizer="adam"), 0.5),
    # noclip: the unclipped probability ratio instead of PPO's clipped surrogate
    "k3_lr0.3_fbx0.5_reuse_noclip": (dict(REUSE_NOCLIP, n_inner_steps=3, inner_lr=0.3), 0.5),
    "k3_lr0.3_reuse_noclip": (dict(REUSE_NOCLIP, n_inner_steps=3, inner_lr=0.3), 1.0),
    "k3_adam0.01_fbx0.5_reuse": (dict(n_inner_steps=3, inner_lr=0.01, inner_optimizer="adam", reuse_inner_episodes=True), 0.5),
}


#: the sweep's configuration that the other experiments run as "reptile" (best after 2-3 steps on PointMass)
REPTILE_CHOSEN = "k3_lr0.3_fbx0.5"


def reptile_config(cfg: RunConfig, horizon: int, name: str = REPTILE_CHOSEN) -> RunConfig:
    """``cfg`` for the Reptile configuration ``name`` of :data:`REPTILE_SWEEP` at FOMAML's env steps under ``cfg``.

    FOMAML samples ``iterations x meta_batch_size x fast_batch_size x horizon x 2`` env steps; Reptile with k inner
    steps of e episodes per task gets that budget divided by ``meta_batch_size x e x horizon x k`` iterations (x 1
    instead of x k when its inner steps reuse one pass's episodes).
    """
    algo_kwargs, episodes_factor = REPTILE_SWEEP[name]
    budget = cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon * 2
    episodes = max(1, round(cfg.fast_batch_size * episodes_factor))
    passes = 1 if algo_kwargs.get("reuse_inner_episodes") else int(algo_kwargs.get("n_inner_steps", 3))
    iterations = max(1, round(budget / (cfg.meta_batch_size * episodes * horizon * passes)))
    return dataclasses.replace(
        cfg, iterations=iterations, fast_batch_size=episodes, algo_kwargs={**algo_kwargs, **(cfg.algo_kwargs or {})}
    )


def experiment_reptile_sweep(args: argparse.Namespace) -> None:
    """Reptile on PointMass (``--start``) for each entry of :data:`REPTILE_SWEEP`, at equal env steps.

    The budget is FOMAML's at ``--budget`` (iterations x meta_batch_size x fast_batch_size x horizon x 2 passes);
    a Reptile configuration with k inner steps of e episodes per task gets ``budget / (meta_batch_size x e x horizon
    x k)`` iterations (rounded; exact when ``iterations`` is a multiple of the ks). Each run is evaluated as the
    others (0..``--test-steps`` steps of ``inner_lr``, its own inner step size, on the same held-out goals). Runs
    under ``<out>/reptile_sweep/`` (resumable); then ``reptile_sweep.md`` and ``reptile_sweep.png`` there.
    """
    out = os.path.join(args.out, "reptile_sweep")
    cfg = make_config(args, "pointmass")
    env_name = f"pointmass-{args.start}"
    horizon = horizon_of(build_env(env_name, cfg))
    budget = cfg.iterations * cfg.meta_batch_size * cfg.fast_batch_size * horizon * 2
    names = args.configs or list(REPTILE_SWEEP)
    unknown = sorted(set(names) - set(REPTILE_SWEEP))
    if unknown:
        raise SystemExit(f"Unknown sweep configurations {unknown}; choose among {list(REPTILE_SWEEP)}")
    print(f"reptile sweep ({env_name}): {budget:,} env steps per run; {names}")
    start = time.perf_counter()
    if not args.plot_only:
        for seed in args.seeds:
            for name in names:
                run_cfg = reptile_config(cfg, horizon, name)
                failed = os.path.join(out, "runs", env_name, f"reptile_{name}_seed{seed}.failed")
                try:
                    run_one(out, "reptile-sweep", env_name, env_name, "reptile", seed, run_cfg, run_name=f"reptile_{name}")
                except RuntimeError as error:  # a configuration that diverges is a result: recorded, the sweep goes on
                    print(f"[{env_name}/reptile_{name}_seed{seed}] failed: {error}")
                    os.makedirs(os.path.dirname(failed), exist_ok=True)
                    with open(failed, "w") as f:
                        f.write(f"{error}\n")
                else:
                    if os.path.exists(failed):
                        os.remove(failed)
    print(f"reptile sweep done in {time.perf_counter() - start:.1f} s")
    report_reptile_sweep(out, env_name)


def report_reptile_sweep(out: str, env_name: str) -> None:
    """``reptile_sweep.md`` (return after 0..k steps per configuration, mean ± SE over tasks x seeds) and its PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for path in find_files(os.path.join(out, "runs", env_name), ".csv"):
        runs[os.path.basename(path).split("_seed")[0].removeprefix("reptile_")] += read_csv(path)
    if not runs:
        print(f"reptile sweep: no finished runs under {os.path.join(out, 'runs', env_name)} yet")
        return
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for name, rows in runs.items():
        by_step: dict[int, list[float]] = collections.defaultdict(list)
        for row in rows:
            by_step[int(row["grad_steps"])].append(float(row["return"]))
        table[name] = {k: {**stats(v), "n_seeds": len({r["seed"] for r in rows})} for k, v in sorted(by_step.items())}
    max_steps = max(max(t) for t in table.values())
    order = [n for n in REPTILE_SWEEP if n in table] + sorted(set(table) - set(REPTILE_SWEEP))
    lines = [[n, table[n][0]["n_seeds"], *[_fmt(table[n].get(k)) for k in range(max_steps + 1)]] for n in order]
    for path in sorted(find_files(os.path.join(out, "runs", env_name), ".failed")):  # diverged: no returns
        name, seed = os.path.basename(path).removeprefix("reptile_").removesuffix(".failed").split("_seed")
        with open(path) as f:
            why = f.read().split(":")[0].strip()
        lines.append([name, f"seed {seed} failed", why, *[""] * max_steps])
    md = [
        f"# Reptile sweep: {env_title(env_name)}",
        "",
        "Made by `examples/reproduce.py reptile-sweep` from the runs under "
        f"`{os.path.join(out, 'runs', env_name)}`: every configuration at FOMAML's env-step budget, evaluated on the "
        "same held-out goals with its own inner step size. Names: kK = K inner VPG steps per task (each on fresh "
        "episodes), lrA = inner step A (0.1 where no lr is named), fbxF = F times the budget's episodes per inner "
        "step, epsE = outer step E (default 1), anneal = outer step annealed linearly from 1 to 0, reuse = every "
        "inner step on the first pass's episodes (one pass per iteration; also at test time), adamA = Adam with "
        "β1 = 0 as the inner optimiser, step A (also at test time). Mean return ± standard error over tasks x seeds.",
        "",
        *markdown_table(["configuration", "seeds", *[steps_label(k) for k in range(max_steps + 1)]], lines),
    ]
    with open(os.path.join(out, "reptile_sweep.md"), "w") as f:
        f.write("\n".join(md))
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, name in enumerate(order):
        steps = sorted(table[name])
        means = [table[name][k]["mean_return"] for k in steps]
        errs = [table[name][k]["stderr"] for k in steps]
        style = dict(color=plt.cm.tab20(i % 20), ls=("-", "--", ":")[i // 20 % 3])  # one colour per configuration
        ax.errorbar(steps, means, yerr=errs, marker="o", capsize=3, label=name, **style)
    ax.set(xlabel="adaptation steps", ylabel="mean return", title=f"Reptile sweep: {env_title(env_name)}")
    ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "reptile_sweep.png"), dpi=120)
    plt.close(fig)
    print(f"reptile sweep: wrote {os.path.join(out, 'reptile_sweep.md')} and reptile_sweep.png")


# --- report -----------------------------------------------------------------------------------------------------
def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def find_files(folder: str, suffix: str) -> list[str]:
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, name) for name in files if name.endswith(suffix)]
    return sorted(found)


def stats(values: list[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=np.float64)
    std = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return {"n": len(x), "mean_return": float(x.mean()), "std": std, "stderr": std / math.sqrt(len(x))}


def load_reference(path: str) -> dict[tuple[str, str, int], dict[str, float]]:
    if not os.path.exists(path):
        print(f"report: no reference table at {path}: plots without the MAML paper's numbers")
        return {}
    return {
        (row["env"], row["method"], int(row["grad_steps"])): {
            "mean": float(row["mean_return"]),
            "stderr": float(row["stderr"]),
        }
        for row in read_csv(path)
    }


def aggregate(out: str, reference: dict[tuple[str, str, int], dict[str, float]]) -> list[dict[str, Any]]:
    """One row per (experiment, env, method, batch sizes, grad steps): mean and standard error over tasks x seeds."""
    groups: dict[tuple, dict[str, Any]] = collections.defaultdict(lambda: {"values": [], "seeds": set(), "tasks": set()})
    for path in find_files(os.path.join(out, "runs"), ".csv"):
        if os.sep + "timing" + os.sep in path:
            continue
        group = os.path.basename(os.path.dirname(path))
        for row in read_csv(path):
            key = (
                row["experiment"],
                group if "-fs" in group else row["env"],  # a --frame-skip group is its own env in the tables
                row["method"],
                int(row["fast_batch_size"]),
                int(row["meta_batch_size"]),
                int(row["grad_steps"]),
            )
            groups[key]["values"].append(float(row["return"]))
            groups[key]["seeds"].add(row["seed"])
            groups[key]["tasks"].add(row["task_index"])
    rows = []
    for key in sorted(groups):
        experiment, env, method, fast, meta, steps = key
        group = groups[key]
        paper = reference.get((REFERENCE_ENVS.get(base_env(env), ""), REFERENCE_METHODS.get(method, ""), steps), {})
        rows.append(
            {
                "experiment": experiment,
                "env": env,
                "method": method,
                "fast_batch_size": fast,
                "meta_batch_size": meta,
                "grad_steps": steps,
                "n_seeds": len(group["seeds"]),
                "n_tasks": len(group["tasks"]),
                **stats(group["values"]),
                "paper_mean_return": paper.get("mean", ""),
                "paper_stderr": paper.get("stderr", ""),
            }
        )
    return rows


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Difference a - b of two mean returns, its standard error, and the verdict at two standard errors."""
    diff = a["mean_return"] - b["mean_return"]
    se = math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)
    verdict = "as well as" if abs(diff) <= 2 * se else ("better than" if diff > 0 else "worse than")
    return {"difference": diff, "se": se, "verdict": verdict}


def _fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    stderr = "" if math.isnan(row["stderr"]) else f" ± {row['stderr']:.2f}"
    return f"{row['mean_return']:.2f}{stderr}"


def steps_label(k: int) -> str:
    return f"{k} step" if k == 1 else f"{k} steps"


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def main_rows(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """Rows of the main experiments (pointmass, ant) by env, then (method, grad steps)."""
    by_env: dict[str, dict[tuple[str, int], dict[str, Any]]] = collections.defaultdict(dict)
    for row in rows:
        if row["experiment"] != "ablation":
            by_env[row["env"]][(row["method"], row["grad_steps"])] = row
    return by_env


def timing_rows(out: str) -> list[dict[str, Any]]:
    runs: dict[tuple[str, str], list[dict[str, str]]] = collections.defaultdict(list)
    for path in find_files(os.path.join(out, "runs", "timing"), ".csv"):
        rows = read_csv(path)
        for row in rows[1:] if len(rows) > 1 else rows:  # the first iteration includes one-off warm-up costs
            runs[(row["env"], row["method"])].append(row)
    return [{"env": env, "method": method, "rows": r} for (env, method), r in sorted(runs.items())]


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = args.out
    reference = load_reference(args.reference)
    rows = aggregate(out, reference)
    timings = timing_rows(out)
    if not rows and not timings:
        raise SystemExit(f"report: no runs under {os.path.join(out, 'runs')}")
    os.makedirs(out, exist_ok=True)
    if rows:
        with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    md = [
        "# Results",
        "",
        f"Made by `examples/reproduce.py report` from the runs under `{os.path.join(out, 'runs')}`. Returns: mean over "
        "held-out tasks x seeds ± standard error (std / sqrt(tasks x seeds)); MAML paper: Finn et al. (2017), Fig. 5, "
        "mean ± standard error over 40 tasks.",
        "",
    ]
    by_env = main_rows(rows)
    figures = []
    for env, table in sorted(by_env.items()):
        methods = [m for m in METHODS if any(k[0] == m for k in table)]
        max_steps = max(k[1] for k in table)
        ref_env = REFERENCE_ENVS.get(base_env(env), "")
        md += [f"## {env_title(env)}: return after k adaptation steps", ""]
        header = ["method", "seeds", *[steps_label(k) for k in range(max_steps + 1)]]
        lines = []
        for method in methods:
            seeds = max(r["n_seeds"] for k, r in table.items() if k[0] == method)
            lines.append([method, seeds, *[_fmt(table.get((method, k))) for k in range(max_steps + 1)]])
        for ref_method in REFERENCE_METHODS.values():
            ref = [reference.get((ref_env, ref_method, k)) for k in range(max_steps + 1)]
            if any(ref):
                cells = [f"{r['mean']:.2f} ± {r['stderr']:.2f}" if r else "" for r in ref]
                lines.append([f"MAML paper: {ref_method}", "", *cells])
        md += markdown_table(header, lines)
        if env_note(env):
            md += [f"Note: {env_note(env)}", ""]
        figures.append(plot_env(plt, out, env, table, methods, reference))

    comparisons = []
    for env, table in sorted(by_env.items()):
        for (method, steps), row in sorted(table.items()):
            other = table.get(("maml", steps))
            if method == "fomaml" and other is not None:
                c = compare(row, other)
                comparisons.append(
                    [
                        env,
                        steps,
                        _fmt(row),
                        _fmt(other),
                        f"{c['difference']:+.2f}",
                        f"{2 * c['se']:.2f}",
                        f"FOMAML {c['verdict']} MAML",
                    ]
                )
    if comparisons:
        md += [
            "## FOMAML vs MAML",
            "",
            '"as well as": |mean(FOMAML) - mean(MAML)| <= 2 SE, SE = sqrt(SE_FOMAML^2 + SE_MAML^2), each SE over '
            "tasks x seeds.",
            "",
        ]
        md += markdown_table(["env", "grad steps", "FOMAML", "MAML", "difference", "2 SE", "verdict"], comparisons)

    if timings:
        md += ["## Meta-iteration time (seconds; first iteration of each run dropped as warm-up)", ""]
        lines = []
        medians: dict[tuple[str, str], float] = {}
        for t in timings:
            meta = np.array([float(r["meta_step_s"]) for r in t["rows"]])
            it = np.array([float(r["iteration_s"]) for r in t["rows"]])
            medians[(t["env"], t["method"])] = float(np.median(meta))
            q1, q3 = np.percentile(meta, [25, 75])
            lines.append(
                [t["env"], t["method"], len(meta), f"{np.median(meta):.3f}", f"{q1:.3f}-{q3:.3f}", f"{np.median(it):.3f}"]
            )
        md += markdown_table(["env", "method", "iterations", "median meta-step", "IQR meta-step", "median iteration"], lines)
        for env in sorted({t["env"] for t in timings}):
            if (env, "maml") in medians and (env, "fomaml") in medians and medians[(env, "fomaml")] > 0:
                ratio = medians[(env, "maml")] / medians[(env, "fomaml")]
                md += [f"{env}: median meta-step MAML / FOMAML = {ratio:.2f}", ""]
        figures.append(plot_timing(plt, out, timings))

    ablation = [r for r in rows if r["experiment"] == "ablation"]
    if ablation:
        max_steps = max(r["grad_steps"] for r in ablation)
        md += ["## Ablation: FOMAML on the point mass vs batch sizes", ""]
        cells: dict[tuple[str, int, int], dict[int, dict[str, Any]]] = collections.defaultdict(dict)
        for r in ablation:
            cells[(r["env"], r["fast_batch_size"], r["meta_batch_size"])][r["grad_steps"]] = r
        lines = [
            [
                env,
                fast,
                meta,
                max(r["n_seeds"] for r in by_step.values()),
                *[_fmt(by_step.get(k)) for k in range(max_steps + 1)],
            ]
            for (env, fast, meta), by_step in sorted(cells.items())
        ]
        md += markdown_table(
            ["env", "fast_batch_size", "meta_batch_size", "seeds", *[steps_label(k) for k in range(max_steps + 1)]], lines
        )
        figures.append(plot_ablation(plt, out, ablation))

    wall = wall_clock_rows(out)
    if wall:
        md += ["## Wall-clock per run (this machine)", ""]
        md += markdown_table(["run group", "method", "runs", "mean train s", "mean eval s", "mean env steps"], wall)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md))
    print(f"report: wrote {os.path.join(out, 'summary.csv')}, {os.path.join(out, 'summary.md')} and {', '.join(figures)}")


def wall_clock_rows(out: str) -> list[list[Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    runs = os.path.join(out, "runs")
    for path in find_files(runs, ".json"):
        with open(path) as f:
            data = json.load(f)
        group = os.path.relpath(os.path.dirname(path), runs)
        method = data.get("method") or os.path.basename(path).split("_seed")[0]
        groups[(group, method)].append(data)
    return [
        [
            group,
            method,
            len(items),
            f"{np.mean([d.get('train_s', 0.0) for d in items]):.1f}",
            f"{np.mean([d.get('eval_s', 0.0) for d in items]):.1f}",
            f"{np.mean([d.get('env_steps', 0) for d in items]):,.0f}",
        ]
        for (group, method), items in sorted(groups.items())
    ]


def env_title(env: str) -> str:
    title = ENV_TITLES.get(base_env(env), base_env(env))
    if "-fs" in env:
        title += f", frame_skip {env.split('-fs')[1].split('@')[0]}"
    if "@" in env:
        title += ", step sizes " + env.split("@")[1].replace("-", ", ")
    return title


def plot_env(plt: Any, out: str, env: str, table: dict, methods: list[str], reference: dict) -> str:
    """Return vs gradient steps for every method run here, and the MAML paper's curves (dashed) for this env."""
    fig, ax = plt.subplots(figsize=(7, 5))
    ref_env = REFERENCE_ENVS.get(base_env(env), "")
    max_steps = 0
    for method in methods:
        steps = sorted(k for m, k in table if m == method)
        max_steps = max(max_steps, *steps)
        mean = [table[(method, k)]["mean_return"] for k in steps]
        err = [0.0 if math.isnan(table[(method, k)]["stderr"]) else table[(method, k)]["stderr"] for k in steps]
        if method == "oracle":
            ax.axhline(mean[0], color=COLORS.get(method), label=f"{method} (here)")
        else:
            ax.errorbar(steps, mean, yerr=err, marker="o", capsize=3, color=COLORS.get(method), label=f"{method} (here)")
    for method, ref_method in REFERENCE_METHODS.items():
        ref = sorted((k, v["mean"]) for (e, m, k), v in reference.items() if e == ref_env and m == ref_method)
        if not ref:
            continue
        label = f"{ref_method} (MAML paper)"
        if method == "oracle":
            ax.axhline(ref[0][1], color=COLORS.get(method), linestyle="--", label=label)
        else:
            max_steps = max(max_steps, ref[-1][0])
            ax.plot([k for k, _ in ref], [v for _, v in ref], "x--", color=COLORS.get(method), label=label)
    ax.set_xticks(range(max_steps + 1))
    ax.set_xlabel("number of gradient steps")
    ax.set_ylabel("average return")
    ax.set_title(env_title(env))
    ax.legend(fontsize=8)
    if env_note(env):
        fig.text(0.01, 0.01, f"Note: {env_note(env)}", fontsize=7, wrap=True, va="bottom")
        fig.subplots_adjust(bottom=0.2)
    path = os.path.join(out, f"{env.replace('@', '_lr')}.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_timing(plt: Any, out: str, timings: list[dict[str, Any]]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{t['env']}\n{t['method']}" for t in timings]
    for ax, key, title in zip(axes, ("meta_step_s", "iteration_s"), ("meta-step (outer update)", "whole meta-iteration")):
        ax.boxplot([[float(r[key]) for r in t["rows"]] for t in timings])
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_ylabel("seconds")
        ax.set_title(title)
    fig.tight_layout()
    path = os.path.join(out, "timing.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ablation(plt: Any, out: str, ablation: list[dict[str, Any]]) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    fixed_meta = collections.Counter(r["meta_batch_size"] for r in ablation).most_common(1)[0][0]
    fixed_fast = collections.Counter(r["fast_batch_size"] for r in ablation).most_common(1)[0][0]
    steps = sorted({r["grad_steps"] for r in ablation})
    for ax, vary, fixed_key, fixed in (
        (axes[0], "fast_batch_size", "meta_batch_size", fixed_meta),
        (axes[1], "meta_batch_size", "fast_batch_size", fixed_fast),
    ):
        for k in steps:
            sel = sorted((r for r in ablation if r[fixed_key] == fixed and r["grad_steps"] == k), key=lambda r: r[vary])
            if sel:
                err = [0.0 if math.isnan(r["stderr"]) else r["stderr"] for r in sel]
                ax.errorbar(
                    [r[vary] for r in sel],
                    [r["mean_return"] for r in sel],
                    yerr=err,
                    marker="o",
                    capsize=3,
                    label=steps_label(k),
                )
        ax.set_xscale("log", base=2)
        values = sorted({r[vary] for r in ablation if r[fixed_key] == fixed})
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(f"{vary} ({fixed_key} = {fixed})")
        ax.set_title(f"FOMAML return vs {vary}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("average return")
    fig.tight_layout()
    path = os.path.join(out, "ablation.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- command line ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="results", help="output folder (default: results)")
    common.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    common.add_argument("--budget", choices=("small", "paper"), default="small", help="iterations and batch sizes")
    common.add_argument("--iterations", type=int, default=None, help="meta-iterations (overrides the budget)")
    common.add_argument("--meta-batch-size", type=int, default=None, help="tasks per meta-iteration (overrides the budget)")
    common.add_argument("--fast-batch-size", type=int, default=None, help="episodes per task (overrides the budget)")
    common.add_argument("--methods", nargs="+", default=list(METHODS), help=f"subset of {list(METHODS)}")
    common.add_argument("--n-test-tasks", type=int, default=40, help="held-out tasks")
    common.add_argument("--test-steps", type=int, default=3, help="adaptation steps at test time")
    common.add_argument("--test-episodes", type=int, default=20, help="episodes per held-out task and step")
    common.add_argument("--eval-seed", type=int, default=2017, help="seed of the held-out tasks (the same for all runs)")
    common.add_argument("--baseline-algo", choices=("trpo", "ppo"), default="trpo", help="pretrained/oracle/random")
    common.add_argument("--baseline-adapt-lr", type=float, default=0.1, help="VPG step size of pretrained/random")
    common.add_argument("--device", default="cpu")
    common.add_argument("--start", choices=("origin", "random"), default="origin", help="point-mass start")
    # Tiny budgets for the smoke tests
    common.add_argument("--max-episode-steps", type=int, default=None, help=argparse.SUPPRESS)
    common.add_argument("--hidden-size", type=int, default=None, help=argparse.SUPPRESS)
    common.add_argument("--baseline-n-envs", type=int, default=None, help="baselines' sub-envs (episodes/update)")
    common.add_argument("--checkpoint-every-s", type=float, default=CHECKPOINT_EVERY_S, help="seconds between checkpoints")
    common.add_argument("--target-kl", type=float, default=None, help="trust region of the TRPO steps (overrides the budget)")
    common.add_argument(
        "--sub-sampling-factor",
        type=int,
        default=None,
        help="MAML/FOMAML: the meta-step's Fisher products on every k-th outer sample (default 1; use another --out)",
    )
    common.add_argument(
        "--inner-lr",
        type=float,
        default=None,
        help="the meta-learners' inner step size (default: the YAML's); e.g. 1e-8 makes FOMAML/MAML's outer step TRPO on "
        "the task mixture with their own advantages (a diagnostic; use another --out: runs are named by method and seed)",
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    sub.add_parser("pointmass", parents=[common], help="Fig. 6 / table: PointMass, all methods")
    ant = sub.add_parser("ant", parents=[common], help="Figs. 4-5: AntVel and AntDir, all methods")
    ant.add_argument("--envs", nargs="+", choices=("antvel", "antdir"), default=["antvel", "antdir"])
    cheetah = sub.add_parser("cheetah", parents=[common], help="Fig. 5: HalfCheetahDir and HalfCheetahVel, all methods")
    cheetah.add_argument("--envs", nargs="+", choices=("halfcheetahdir", "halfcheetahvel"), default=["halfcheetahdir"])
    timing = sub.add_parser("timing", parents=[common], help="Fig. 3: meta-step time FOMAML vs MAML")
    timing.add_argument("--env", default="antvel", help="env of the timing runs (antvel, antdir, pointmass-origin, ...)")
    curves = sub.add_parser("curves", parents=[common], help="learning curves at equal updates: FOMAML vs TRPO")
    curves.add_argument("--env", default="antvel", choices=("antvel", "antdir", "halfcheetahdir", "halfcheetahvel"))
    curves.add_argument("--plot-only", action="store_true", help="only the table and plot of the logs so far")
    for mujoco_parser in (ant, cheetah, curves):
        mujoco_parser.add_argument(
            "--frame-skip",
            type=int,
            default=None,
            help="MuJoCo substeps per env step (default: the env's; Ant: 2, rllab Ant's 0.02 s step; Ant-v5's own is "
            "5); runs with it go to the group <env>-fs<N>",
        )
    sweep = sub.add_parser("reptile-sweep", parents=[common], help="Reptile on PointMass: one factor at a time")
    sweep.add_argument("--configs", nargs="+", default=None, help=f"subset of {list(REPTILE_SWEEP)}")
    sweep.add_argument("--plot-only", action="store_true", help="only the table and plot of the finished runs")
    ablation = sub.add_parser("ablation", parents=[common], help="Figs. 1-2: FOMAML vs batch sizes on PointMass")
    ablation.add_argument("--fast-batch-sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    ablation.add_argument("--meta-batch-sizes", type=int, nargs="+", default=[5, 10, 20, 40])
    schedule = sub.add_parser("schedule", parents=[common], help="re-evaluate saved runs with one step size per step")
    schedule.add_argument("--env", default="pointmass-origin", help="runs to re-evaluate (runs/<env>/)")
    schedule.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.05, 0.05], help="one per test step")
    rep = sub.add_parser("report", parents=[common], help="summary.csv, summary.md and PNGs from the runs present")
    rep.add_argument("--reference", default=DEFAULT_REFERENCE, help="MAML reference CSV (../shared/reference/... of the repo)")
    everything = sub.add_parser("all", parents=[common], help="pointmass, ablation, timing, ant, then report")
    everything.add_argument("--reference", default=DEFAULT_REFERENCE)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    global CHECKPOINT_EVERY_S
    CHECKPOINT_EVERY_S = args.checkpoint_every_s
    start = time.perf_counter()
    if args.experiment == "all":  # every experiment with its defaults (and the options given)
        experiment_pointmass(args)
        experiment_ablation(
            argparse.Namespace(**vars(args), fast_batch_sizes=[5, 10, 20, 40], meta_batch_sizes=[5, 10, 20, 40])
        )
        experiment_timing(argparse.Namespace(**vars(args), env="antvel"))
        experiment_ant(argparse.Namespace(**vars(args), envs=["antvel", "antdir"]))
        report(args)
    else:
        {
            "pointmass": experiment_pointmass,
            "ant": experiment_ant,
            "cheetah": experiment_cheetah,
            "timing": experiment_timing,
            "curves": experiment_curves,
            "reptile-sweep": experiment_reptile_sweep,
            "ablation": experiment_ablation,
            "schedule": experiment_schedule,
            "report": report,
        }[args.experiment](args)
    print(f"{args.experiment}: {time.perf_counter() - start:.1f} s wall-clock")


if __name__ == "__main__":
    main()
