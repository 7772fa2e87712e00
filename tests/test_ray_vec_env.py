"""RayTaskVecEnv: shards on Ray actors, bitwise equal to the local batched VecEnv, with actor loss recovered.

A local two-node cluster (one CPU each, Ray's own ``ray.cluster_utils.Cluster``) serves the whole module. Actors
are costly to start here (each imports sb3_meta, torch and MuJoCo), so one pair of HalfCheetah VecEnvs (Ray and
local) serves every training test, each of which runs the same calls on both and compares.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
import warnings
from signal import SIGKILL

import numpy as np
import pytest
from conftest import params_equal, point_mass, small_kwargs
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.vec_env import VecNormalize

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from sb3_meta import FOMAML, MAML, evaluate_adaptation  # noqa: E402
from sb3_meta.common.callbacks import MetaEvalCallback  # noqa: E402
from sb3_meta.envs import HalfCheetahVelTasks, PointMassTask, make_task_vec_env  # noqa: E402
from sb3_meta.envs.bandit import BanditTasks  # noqa: E402
from sb3_meta.envs.ray_vec_env import RayTaskVecEnv, ShardLostError, shard_ranges  # noqa: E402

FAST_TRPO = dict(cg_max_steps=3, line_search_max_iter=5)
HALF_CPU = {"num_cpus": 0.5}  # two VecEnvs of two actors fit in the two one-CPU nodes
TRAIN_KWARGS = dict(max_episode_steps=4, **FAST_TRPO)


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of one CPU each; the driver connects to it and everything is shut down at the end."""
    if ray.is_initialized():
        ray.shutdown()
    local_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        local_cluster.add_node(num_cpus=1)
        ray.init(address=local_cluster.address)
        local_cluster.wait_for_nodes()
        yield local_cluster
    finally:
        ray.shutdown()
        local_cluster.shutdown()


@pytest.fixture(scope="module")
def cheetah_pair(cluster):
    """(Ray VecEnv with 2 actors, local batched VecEnv) of 4 HalfCheetahVel sub-envs (2 tasks x 2 episodes)."""
    env = HalfCheetahVelTasks(max_episode_steps=6, seed=0)
    ray_venv = make_task_vec_env(env, 4, seed=0, vec_env_cls="ray", ray_workers=2, ray_actor_options=HALF_CPU)
    local = make_task_vec_env(env, 4, seed=0)
    yield ray_venv, local
    ray_venv.close()
    local.close()


def run_transitions(venv, actions: np.ndarray) -> dict[str, list]:
    """Reset, then step through ``actions``: every output, and the RNG states at the end."""
    out: dict[str, list] = {"obs": [venv.reset()], "rewards": [], "dones": [], "infos": [venv.reset_infos]}
    for step_actions in actions:
        obs, rewards, dones, infos = venv.step(step_actions)
        out["obs"].append(obs)
        out["rewards"].append(rewards)
        out["dones"].append(dones)
        out["infos"].append(infos)
    out["tasks"] = [venv.get_tasks()]
    out["rng"] = [venv.get_rng_states()]
    return out


def assert_same_transitions(a: dict[str, list], b: dict[str, list]) -> None:
    for key in ("obs", "rewards", "dones"):
        x, y = np.array(a[key]), np.array(b[key])
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key
    assert a["tasks"] == b["tasks"] and a["rng"] == b["rng"]
    for infos_a, infos_b in zip(a["infos"], b["infos"], strict=True):
        assert len(infos_a) == len(infos_b)
        for info_a, info_b in zip(infos_a, infos_b, strict=True):
            assert list(info_a) == list(info_b)  # same keys, same order
            for key, value in info_a.items():
                if isinstance(value, np.ndarray):
                    assert value.dtype == info_b[key].dtype and value.tobytes() == info_b[key].tobytes(), key
                else:
                    assert type(value) is type(info_b[key]) and value == info_b[key], key


class KillActorAt(BaseCallback):
    """Kill the actor of shard ``shard`` after the ``at``-th env step (a lost node, mid-pass): with ``ray.kill``, or
    with ``SIGKILL`` to its process (``signal=True``: as the OOM killer or a crash would)."""

    def __init__(self, venv: RayTaskVecEnv, at: int, shard: int = 0, signal: bool = False) -> None:
        super().__init__()
        self.venv, self.at, self.shard, self.signal, self.calls = venv, at, shard, signal, 0

    def _on_step(self) -> bool:
        self.calls += 1
        if self.calls == self.at:
            actor = self.venv.actors[self.shard]
            if self.signal:
                os.kill(ray.get(actor.hello.remote())["pid"], SIGKILL)
            else:
                ray.kill(actor, no_restart=True)
        return True


# --- bad input: clear errors before anything starts (no cluster needed) -----------------------------------------


def test_bad_arguments_are_refused_before_any_actor_starts(monkeypatch):
    env = point_mass(seed=0)
    with pytest.raises(ValueError, match=r"ray_workers .* >= 1"):
        make_task_vec_env(env, 4, vec_env_cls="ray", ray_workers=0)
    with pytest.raises(ValueError, match="more than the 4 sub-envs"):
        make_task_vec_env(env, 4, vec_env_cls="ray", ray_workers=5)
    with pytest.raises(ValueError, match="only apply with vec_env_cls='ray'"):
        make_task_vec_env(env, 4, ray_workers=2)
    with pytest.raises(ValueError, match="no batched VecEnv"):
        make_task_vec_env(BanditTasks(), 4, vec_env_cls="ray", ray_workers=2)
    with pytest.raises(ValueError, match="sets the actor options"):
        make_task_vec_env(env, 4, vec_env_cls="ray", ray_workers=2, ray_actor_options={"max_restarts": 3})
    with pytest.raises(ValueError, match="num_cpus"):
        make_task_vec_env(env, 4, vec_env_cls="ray", ray_workers=2, ray_actor_options={"num_cpus": -1})
    unpicklable = point_mass(seed=0)
    unpicklable.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="cannot be sent to Ray actors"):
        make_task_vec_env(unpicklable, 4, vec_env_cls="ray", ray_workers=2)
    # a port nobody listens on; as if this process were not connected yet (the check comes before ray.init)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(ConnectionError, match=r"No Ray cluster reachable .*`ray start --head"):
        make_task_vec_env(env, 4, vec_env_cls="ray", ray_workers=2, ray_address=f"127.0.0.1:{port}")


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "sb3_meta\[ray\]"'):
        make_task_vec_env(point_mass(seed=0), 4, vec_env_cls="ray", ray_workers=2)


MORE_WORKERS_THAN_CORES = """
import os, warnings
import numpy as np, ray
from sb3_meta.envs import PointMassTasks, make_task_vec_env

workers = (os.cpu_count() or 1) + 1
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    venv = make_task_vec_env(PointMassTasks(seed=0), 2 * workers, seed=0, vec_env_cls="ray", ray_workers=workers)
messages = [str(w.message) for w in caught]
assert any("share the cores" in m for m in messages), messages
assert ray.cluster_resources()["CPU"] == workers and venv.n_workers == workers == len(set(venv.shard_ranges))
local = make_task_vec_env(PointMassTasks(seed=0), 2 * workers, seed=0)
assert np.array_equal(venv.reset(), local.reset())
actions = np.random.default_rng(0).uniform(-1, 1, (2 * workers, 2))
assert np.array_equal(venv.step(actions)[0], local.step(actions)[0])
venv.close()
ray.shutdown()
print("started", workers, "actors")
"""


def test_more_workers_than_cores_start_on_a_new_local_ray(tmp_path):
    """``ray_workers`` above the machine's cores with no Ray running (a laptop): the local Ray started for them gets
    a logical CPU per actor, so they all start (sharing the cores, with a warning) instead of waiting for nodes.
    A fresh process with its own Ray temp dir, so that it finds no cluster of this module."""
    import subprocess
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": ray_tmp}
    result = subprocess.run(
        [sys.executable, "-c", MORE_WORKERS_THAN_CORES], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"started {(os.cpu_count() or 1) + 1} actors" in result.stdout


def test_shard_ranges():
    assert shard_ranges(800, 4) == [(0, 200), (200, 400), (400, 600), (600, 800)]
    assert shard_ranges(5, 2) == [(0, 3), (3, 5)]
    with pytest.raises(ValueError):
        shard_ranges(2, 3)


# --- placement, equality, close -----------------------------------------------------------------------------------


def test_shards_spread_over_nodes_equal_the_local_vec_env_and_close_releases_them(cluster):
    env = point_mass(seed=3, max_episode_steps=5, goal_radius=0.05)
    n = 5
    ray_venv = make_task_vec_env(
        env, n, seed=7, vec_env_cls="ray", ray_workers=2, ray_actor_options={"num_cpus": 1, "scheduling_strategy": "SPREAD"}
    )
    local = make_task_vec_env(env, n, seed=7)
    try:
        assert ray_venv.shard_ranges == [(0, 3), (3, 5)]
        node_ids = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        assert len(set(ray_venv.actor_node_ids)) == 2 and set(ray_venv.actor_node_ids) == node_ids
        assert ray_venv.get_tasks() == local.get_tasks()  # the placeholder tasks, before any reset
        assert ray_venv.sample_task_batch(3) == local.sample_task_batch(3)
        # towards the goal on every other step, so that some episodes end early (terminal observations)
        rng = np.random.default_rng(0)
        actions = rng.normal(0.0, 1.5, size=(12, n, 2)).astype(np.float32)
        tasks = [PointMassTask(goal=(0.1 * i, -0.1), start=(0.0, 0.05 * i)) for i in range(n)]
        for venv in (ray_venv, local):
            venv.set_tasks(tasks[:2], indices=[2, 3])  # across the shard boundary
            venv.set_options([{}] * (n - 1) + [{"task": tasks[4]}])
        assert_same_transitions(run_transitions(ray_venv, actions), run_transitions(local, actions))
        with pytest.raises(ValueError, match="Actions must be finite"):
            ray_venv.step(np.full((n, 2), np.nan))
    finally:
        ray_venv.close()
    actors = ray_venv.actors
    assert actors == []
    with pytest.raises(RuntimeError, match="closed"):
        ray_venv.reset()
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2  # both actors' CPUs are free again


def test_a_vec_env_made_right_after_another_is_closed_gets_its_cpus_without_a_warning(cluster):
    """``close()`` kills the actors and Ray frees their CPUs a moment later: the next VecEnv neither warns that
    other actors hold the CPUs nor waits for them."""
    free = ray.available_resources().get("CPU", 0.0)
    options = {"num_cpus": free / 2}  # two actors take every CPU that is free
    first = make_task_vec_env(point_mass(seed=0), 4, seed=0, vec_env_cls="ray", ray_workers=2, ray_actor_options=options)
    first.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the class, as with SB3's make_vec_env(vec_env_cls=...), means vec_env_cls="ray"
        second = make_task_vec_env(
            point_mass(seed=0), 4, seed=0, vec_env_cls=RayTaskVecEnv, ray_workers=2, ray_actor_options=options
        )
    try:
        assert isinstance(second, RayTaskVecEnv) and second.n_workers == 2
        assert second.reset().shape == (4, 2)
    finally:
        second.close()


def test_actors_that_do_not_fit_in_the_free_cpus_warn_before_they_wait(cluster):
    deadline = time.monotonic() + 30  # until the CPUs of the VecEnvs closed by earlier tests are free again
    while ray.available_resources().get("CPU", 0.0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.05)
    n_halves = int(ray.available_resources().get("CPU", 0.0) / 0.5)
    holder = make_task_vec_env(
        point_mass(seed=0), n_halves, seed=0, vec_env_cls="ray", ray_workers=n_halves, ray_actor_options=HALF_CPU
    )
    try:
        with pytest.warns(UserWarning, match="other actors hold the rest"):
            with pytest.raises(RuntimeError, match="close other Ray VecEnvs"):
                RayTaskVecEnv(point_mass(seed=0), 2, n_workers=1, actor_options=HALF_CPU, start_timeout_s=3)
    finally:
        holder.close()


def test_actors_larger_than_the_cluster_are_refused(cluster):
    with pytest.raises(ValueError, match="num_cpus=3, and the Ray cluster has 2 CPUs"):
        make_task_vec_env(point_mass(seed=0), 4, vec_env_cls="ray", ray_actor_options={"num_cpus": 3})
    with pytest.raises(ValueError, match="already connected to the Ray cluster at"):
        make_task_vec_env(point_mass(seed=0), 4, vec_env_cls="ray", ray_workers=1, ray_address="10.0.0.1:1")


def test_mujoco_transitions_equal_the_local_vec_env(cheetah_pair):
    ray_venv, local = cheetah_pair
    assert ray_venv.get_tasks() == local.get_tasks()
    actions = np.random.default_rng(1).uniform(-1, 1, size=(8, 4, 6))  # 6-step episodes: one automatic reset
    assert_same_transitions(run_transitions(ray_venv, actions), run_transitions(local, actions))


# --- training: the same results as on the local VecEnv ------------------------------------------------------------


@pytest.mark.parametrize("algo", [FOMAML, MAML])
def test_one_iteration_equals_the_local_vec_env(cheetah_pair, algo):
    ray_venv, local = cheetah_pair
    params = []
    for venv in (ray_venv, local):  # built and trained one after the other: a model seeds torch's global RNG
        model = algo("MlpPolicy", venv, **small_kwargs(), **TRAIN_KWARGS)
        model.learn(1)
        params.append(model.meta_parameters())
    assert params_equal(*params)


def test_callbacks_adapt_and_evaluate_adaptation_work_unchanged_and_equal_the_local_vec_env(cheetah_pair, tmp_path):
    """SB3's CheckpointCallback and MetaEvalCallback during training on Ray, then adapt and evaluate_adaptation: the
    same checkpoints, evaluations, adapted parameters and returns as with the local VecEnv."""
    outs = []
    for name, venv in zip(("ray", "local"), cheetah_pair, strict=True):
        model = FOMAML("MlpPolicy", venv, **small_kwargs(), **TRAIN_KWARGS)
        meta_eval = MetaEvalCallback(HalfCheetahVelTasks(max_episode_steps=6, seed=5), eval_freq=1, n_tasks=2, n_episodes=2)
        checkpoints = CheckpointCallback(1, str(tmp_path / name), name_prefix="fomaml")
        model.learn(2 * 4 * 6 * 2, callback=[checkpoints, meta_eval])
        task = HalfCheetahVelTasks(seed=9).sample_tasks(1)[0]
        adapted = model.adapt(task, steps=1, seed=0)
        result = evaluate_adaptation(
            model, HalfCheetahVelTasks(max_episode_steps=6, seed=4), n_tasks=2, n_steps=1, n_episodes=2, seed=0
        )
        saved = sorted(p.name for p in (tmp_path / name).iterdir())
        outs.append((saved, np.array(meta_eval.evaluations_results), adapted.meta_parameters(), result.returns))
    (ray_saved, ray_evals, ray_adapted, ray_returns), (local_saved, local_evals, local_adapted, local_returns) = outs
    assert ray_saved == local_saved and len(ray_saved) > 0
    assert ray_evals.shape[0] >= 2 and np.array_equal(ray_evals, local_evals)
    assert params_equal(ray_adapted, local_adapted)
    assert np.array_equal(ray_returns, local_returns)


def test_vec_normalize_around_it_trains_as_around_the_local_vec_env(cheetah_pair):
    results = []
    for venv in cheetah_pair:
        model = FOMAML("MlpPolicy", VecNormalize(venv), **small_kwargs(), **TRAIN_KWARGS)
        model.learn(1)
        results.append((model.meta_parameters(), model.normalization))
    (ray_params, ray_stats), (local_params, local_stats) = results
    assert params_equal(ray_params, local_params)
    assert (
        np.array_equal(ray_stats.obs_rms.var, local_stats.obs_rms.var) and ray_stats.obs_rms.count == local_stats.obs_rms.count
    )


def test_save_load_resumes_bit_for_bit(cheetah_pair):
    ray_venv, _ = cheetah_pair
    model = FOMAML("MlpPolicy", ray_venv, **small_kwargs(), **TRAIN_KWARGS)
    model.learn(1)
    buffer = io.BytesIO()
    model.save(buffer)
    model.learn(1, reset_num_timesteps=False)
    buffer.seek(0)
    resumed = FOMAML.load(buffer, env=ray_venv)
    assert len(resumed._rng_state["vec_env"]["sub_envs"]["init_rngs"]) == 4  # the actors' RNG states are in it
    resumed.learn(1, reset_num_timesteps=False)
    assert params_equal(resumed.meta_parameters(), model.meta_parameters())


@pytest.mark.parametrize("signal", [False, True], ids=["ray.kill", "SIGKILL"])
def test_actor_killed_mid_pass_is_replaced_and_the_iteration_is_unchanged(cheetah_pair, signal):
    ray_venv, local = cheetah_pair
    killed, restarts = ray_venv.actors[0], ray_venv.n_restarts
    interrupted = FOMAML("MlpPolicy", ray_venv, **small_kwargs(), **TRAIN_KWARGS)
    # step 6 of 8: mid post-adaptation pass, whose reset has no seeds, so the replay needs the snapshot's RNG states
    with pytest.warns(UserWarning, match="died"):
        interrupted.learn(1, callback=KillActorAt(ray_venv, at=6, signal=signal))
    assert ray_venv.n_restarts == restarts + 1 and ray_venv.actors[0] != killed
    uninterrupted = FOMAML("MlpPolicy", local, **small_kwargs(), **TRAIN_KWARGS)
    uninterrupted.learn(1)
    assert params_equal(interrupted.meta_parameters(), uninterrupted.meta_parameters())


def test_actor_that_cannot_be_replaced_raises_then_training_resumes_from_the_checkpoint(cheetah_pair):
    ray_venv, local = cheetah_pair
    model = FOMAML("MlpPolicy", ray_venv, **small_kwargs(), **TRAIN_KWARGS)
    model.learn(1)
    checkpoint = io.BytesIO()
    model.save(checkpoint)
    before = model.meta_parameters()
    options, timeout = ray_venv._actor_options, ray_venv.restart_timeout_s
    # a replacement actor needs a resource no node has: it never starts
    ray_venv._actor_options, ray_venv.restart_timeout_s = {**options, "resources": {"absent": 1}}, 2.0
    try:
        with pytest.warns(UserWarning, match="died"), pytest.raises(ShardLostError, match="restart_timeout_s"):
            model.learn(1, callback=KillActorAt(ray_venv, at=1), reset_num_timesteps=False)
    finally:
        ray_venv._actor_options, ray_venv.restart_timeout_s = options, timeout
    assert params_equal(model.meta_parameters(), before)
    # resources are back: the shard is rebuilt at its next call; the checkpoint resumes alike on Ray and locally
    resumed = []
    for venv in (ray_venv, local):
        checkpoint.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "died ... replaying" warning of the rebuilt shard
            loaded = FOMAML.load(checkpoint, env=venv)
            loaded.learn(1, reset_num_timesteps=False)
        resumed.append(loaded.meta_parameters())
    assert params_equal(*resumed)


def kill_and_wait(actor) -> None:
    """``ray.kill`` the actor and wait until it is gone (``ray.kill`` is asynchronous: a call made right after it may
    still run)."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(actor.hello.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:  # dying: ask again
            continue
        time.sleep(0.1)
    pytest.fail("the killed actor still answers after 60 s")


def test_infos_carry_the_tasks_set_mid_pass_across_a_replaced_actor(cheetah_pair):
    """A shard sends the tasks of its infos only when they change: tasks set mid-pass, in one shard or across both,
    before and after an actor is replaced, still reach every info as on the local VecEnv."""
    ray_venv, local = cheetah_pair
    local.set_rng_states(ray_venv.get_rng_states())  # earlier tests leave the two in different states
    local.set_tasks(ray_venv.get_tasks())
    new_tasks = HalfCheetahVelTasks(seed=1).sample_tasks(3)  # not from either VecEnv: their RNGs stay alike
    actions = np.random.default_rng(2).uniform(-1, 1, size=(8, 4, 6))
    outs = []
    for venv in (ray_venv, local):
        out = run_transitions(venv, actions[:2])
        venv.set_tasks(new_tasks[:2], indices=[1, 2])  # one sub-env of each shard
        for step_actions in actions[2:4]:
            out["infos"].append(venv.step(step_actions)[3])
        if venv is ray_venv:
            kill_and_wait(ray_venv.actors[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "died ... replaying"
            out["infos"].append(venv.step(actions[4])[3])
        venv.set_tasks(new_tasks[2:], indices=[3])
        for step_actions in actions[5:]:
            out["infos"].append(venv.step(step_actions)[3])
        out["tasks"].append(venv.get_tasks())
        outs.append(out)
    assert_same_transitions(*outs)
    assert [info["task"] for info in outs[0]["infos"][-1]] == outs[0]["tasks"][-1]


def test_tasks_set_before_a_lost_step_reach_the_infos_of_the_next(cheetah_pair):
    """A step whose results are dropped (one shard lost, the other answered) leaves the learner unsure of what the
    answering shard sent; the next step gets every shard's tasks anew."""
    ray_venv, _ = cheetah_pair
    ray_venv.reset()
    ray_venv.step(np.zeros((4, 6)))
    new_task = HalfCheetahVelTasks(seed=2).sample_tasks(1)[0]
    ray_venv.set_tasks([new_task], indices=[3])  # shard 1
    attempts = ray_venv.restart_attempts
    ray_venv.restart_attempts = 0
    try:
        kill_and_wait(ray_venv.actors[0])
        with pytest.raises(ShardLostError, match="restart_attempts=0"):
            ray_venv.step(np.zeros((4, 6)))  # shard 1 stepped (with the new task), shard 0 was lost
    finally:
        ray_venv.restart_attempts = attempts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "died ... replaying": the next call rebuilds shard 0
        infos = ray_venv.step(np.zeros((4, 6)))[3]
    assert [info["task"] for info in infos] == ray_venv.get_tasks()
    assert infos[3]["task"] == new_task


def test_shard_lost_past_max_replay_steps_raises(cheetah_pair):
    """Last of the module: it leaves the Ray VecEnv unusable, as documented."""
    ray_venv, _ = cheetah_pair
    ray_venv.max_replay_steps = 2
    ray_venv.reset()
    for _ in range(3):
        ray_venv.step(np.zeros((4, 6)))
    kill_and_wait(ray_venv.actors[1])
    with pytest.raises(ShardLostError, match="max_replay_steps=2"):
        ray_venv.step(np.zeros((4, 6)))
