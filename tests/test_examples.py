"""The example scripts: reproduce.py (resume, report), train.py, inspect_episodes.py."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from conftest import (
    fomaml,
    load_example,
)

from sb3_meta import FOMAML, AdaptationResult, Reptile
from sb3_meta.envs import PointMassTasks


def test_reproduce_pointmass_skip_and_report(tmp_path, capsys):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["pointmass", "--out", out, *TINY])
    runs = tmp_path / "results" / "runs" / "pointmass-origin"
    for method in reproduce.METHODS:
        for ext in ("csv", "zip", "json"):
            assert (runs / f"{method}_seed0.{ext}").exists(), (method, ext)
    maml = AdaptationResult.from_csv(runs / "maml_seed0.csv")
    oracle = AdaptationResult.from_csv(runs / "oracle_seed0.csv")
    assert maml.returns.shape == (3, 3) and oracle.returns.shape == (3, 1)
    assert maml.tasks == oracle.tasks  # the same held-out tasks for every method
    mtimes = {p: p.stat().st_mtime_ns for p in runs.iterdir()}
    capsys.readouterr()
    reproduce.main(["pointmass", "--out", out, *TINY, "--methods", "maml", "oracle"])
    printed = capsys.readouterr().out
    assert printed.count("] skip:") == 2
    assert mtimes == {p: p.stat().st_mtime_ns for p in runs.iterdir()}
    reproduce.main(["ablation", "--out", out, *TINY, "--fast-batch-sizes", "2", "3", "--meta-batch-sizes", "2"])
    reproduce.main(["timing", "--out", out, *TINY, "--env", "pointmass-origin", "--iterations", "2"])
    # re-evaluation of the saved runs with one step size per step: the first step is the same as the runs' own
    reproduce.main(
        ["schedule", "--out", out, "--seeds", "0", "--methods", "maml", "pretrained", "--step-sizes", "0.1", "0.02"]
    )
    rerun = tmp_path / "results" / "runs" / "pointmass-origin@0.1-0.02"
    assert sorted(p.name for p in rerun.glob("*.csv")) == ["maml_seed0.csv", "pretrained_seed0.csv"]
    again = AdaptationResult.from_csv(rerun / "maml_seed0.csv")
    assert again.adapt_lr == [0.1, 0.02] and again.tasks == maml.tasks
    np.testing.assert_array_equal(again.returns[:, :2], maml.returns[:, :2])
    assert not np.array_equal(again.returns[:, 2], maml.returns[:, 2])
    with pytest.raises(SystemExit, match="2 values expected"):
        reproduce.main(["schedule", "--out", out, "--seeds", "0", "--methods", "fomaml", "--step-sizes", "0.1"])
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "env,method,grad_steps,n_tasks,mean_return,std_across_tasks,stderr\nPointMass2D,maml,0,40,-40.0,12.0,2.0\n"
    )
    reproduce.main(["report", "--out", out, "--reference", str(reference)])
    results = tmp_path / "results"
    for name in ("summary.csv", "summary.md", "pointmass-origin.png", "timing.png", "ablation.png"):
        assert (results / name).exists() and (results / name).stat().st_size > 0, name
    with open(results / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    row = next(r for r in summary if r["method"] == "maml" and r["grad_steps"] == "0" and r["experiment"] == "pointmass")
    assert float(row["mean_return"]) == pytest.approx(maml.mean[0]) and float(row["paper_mean_return"]) == -40.0
    markdown = (results / "summary.md").read_text()
    assert "FOMAML vs MAML" in markdown and ("as well as" in markdown or "than MAML" in markdown)
    assert "MAML paper: maml" in markdown and "Ablation" in markdown and "Meta-iteration time" in markdown
    assert "PointMass (start at the origin), step sizes 0.1, 0.02" in markdown
    assert (results / "pointmass-origin_lr0.1-0.02.png").exists()


def test_reproduce_curves_give_equal_updates_and_batches(tmp_path):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(
        ["curves", "--env", "antvel", "--out", out, *TINY, "--methods", "fomaml", "pretrained", "--iterations", "3"]
    )
    curves = tmp_path / "results" / "curves"
    meta = reproduce.read_progress(str(curves), "antvel-fs2", "fomaml_seed0")
    trpo = reproduce.read_progress(str(curves), "antvel-fs2", "pretrained_seed0")
    assert len(meta) == len(trpo) == 3  # one TRPO update per meta-iteration
    # each update takes one episode per sub-env of the meta-learners' pre-adaptation batch (2 tasks x 2 episodes)
    assert [int(r["rollout/batch_episodes"]) >= 4 for r in trpo] == [True] * 3
    assert int(trpo[-1]["time/total_timesteps"]) == 3 * 2 * 2 * 5  # 3 updates x 4 sub-envs x horizon 5
    info = reproduce.json.loads((curves / "runs" / "antvel-fs2" / "pretrained_seed0.json").read_text())
    assert info["baseline_target_kl"] == pytest.approx(0.01 / 8)  # the meta-learners' trust region, per action dim
    table = (curves / "antvel-fs2.md").read_text()
    assert "| fomaml_seed0 | 3 |" in table and "| pretrained_seed0 | 3 |" in table
    assert "nan" not in table  # TRPO's last update logs no train/* values: an empty cell, not nan
    last_trpo_row = table.split("| pretrained_seed0 | 3 |")[1].split("\n")[0]
    assert last_trpo_row.endswith("|  |  |"), last_trpo_row
    assert (curves / "antvel-fs2-curves.png").stat().st_size > 0


def test_reproduce_reptile_sweep_at_equal_env_steps(tmp_path):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    names = ("k1", "k3_fbx0.5", "k3_adam0.01_fbx0.5_reuse")
    reproduce.main(["reptile-sweep", "--out", out, *TINY, "--iterations", "3", "--configs", *names])
    runs = tmp_path / "results" / "reptile_sweep" / "runs" / "pointmass-origin"
    configs = {n: reproduce.json.loads((runs / f"reptile_{n}_seed0.json").read_text())["config"] for n in names}
    # FOMAML's budget: 3 iterations x 2 tasks x 2 episodes x 2 passes; Reptile's: iterations x 2 tasks x episodes x k
    # passes (one pass when the k steps reuse its episodes)
    assert (configs["k1"]["iterations"], configs["k1"]["fast_batch_size"]) == (6, 2)
    assert (configs["k3_fbx0.5"]["iterations"], configs["k3_fbx0.5"]["fast_batch_size"]) == (4, 1)
    reuse = configs["k3_adam0.01_fbx0.5_reuse"]
    assert (reuse["iterations"], reuse["fast_batch_size"]) == (12, 1)
    variant = Reptile.load(runs / "reptile_k3_adam0.01_fbx0.5_reuse_seed0.zip")
    assert variant.inner_optimizer == "adam" and variant.reuse_inner_episodes and variant.num_timesteps == 3 * 2 * 2 * 2 * 5
    assert configs["k3_fbx0.5"]["algo_kwargs"] == {"n_inner_steps": 3, "inner_lr": 0.1}
    model = Reptile.load(runs / "reptile_k3_fbx0.5_seed0.zip")
    assert model.n_inner_steps == 3 and model.fast_batch_size == 1 and model.n_iterations == 4
    table = (tmp_path / "results" / "reptile_sweep" / "reptile_sweep.md").read_text()
    assert "| k1 | 1 |" in table and "| k3_fbx0.5 | 1 |" in table


def test_reproduce_reptile_runs_the_sweeps_chosen_configuration_at_fomamls_env_steps(tmp_path):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["pointmass", "--out", out, *TINY, "--iterations", "3", "--methods", "reptile"])
    run = tmp_path / "results" / "runs" / "pointmass-origin"
    info = reproduce.json.loads((run / "reptile_seed0.json").read_text())
    assert info["reptile_config"]["name"] == reproduce.REPTILE_CHOSEN == "k3_lr0.3_fbx0.5"
    model = Reptile.load(run / "reptile_seed0.zip")
    # FOMAML: 3 iterations x 2 tasks x 2 episodes x 2 passes = 24 episodes; Reptile: 4 x 2 tasks x 1 episode x 3 steps
    assert (model.n_inner_steps, model.inner_lr, model.fast_batch_size, model.n_iterations) == (3, 0.3, 1, 4)
    rows = reproduce.read_csv(str(run / "reptile_seed0.csv"))
    assert {float(r["adapt_lr"]) for r in rows} == {0.3}  # evaluated with its own inner step size


def test_reproduce_cheetah_runs_every_meta_learner(tmp_path):
    """The HalfCheetah budget carries a trust region (target_kl): MAML/FOMAML take it, Reptile has none."""
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["cheetah", "--out", out, *TINY, "--methods", "fomaml", "reptile"])
    run = tmp_path / "results" / "runs" / "halfcheetahdir"
    assert FOMAML.load(run / "fomaml_seed0.zip").target_kl == 0.02  # the HalfCheetahDir budgets' bound
    assert Reptile.load(run / "reptile_seed0.zip").inner_lr == 0.3


def test_reproduce_frame_skip_runs_go_to_their_own_group(tmp_path):
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["ant", "--out", out, *TINY, "--envs", "antvel", "--frame-skip", "5", "--methods", "random"])
    run = tmp_path / "results" / "runs" / "antvel-fs5" / "random_seed0.json"
    assert reproduce.json.loads(run.read_text())["config"]["frame_skip"] == 5
    config = reproduce.RunConfig(**reproduce.json.loads(run.read_text())["config"])
    assert reproduce.build_env("antvel", config).dt == 0.05  # the env really stepped Ant-v5's time step
    # the default time step, named or not, is the default group
    assert reproduce.results_group("antvel", reproduce.dataclasses.replace(config, frame_skip=2)) == "antvel"
    assert reproduce.results_group("antvel", reproduce.dataclasses.replace(config, frame_skip=None)) == "antvel"
    assert not (tmp_path / "results" / "runs" / "antvel").exists()
    reproduce.main(["report", "--out", out])
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "## Ant goal velocity, frame_skip 5:" in summary and "This group: frame_skip 5, dt = 0.05 s." in summary


def test_report_statistics():
    reproduce = load_example("reproduce")
    a = {"mean_return": 1.0, "stderr": 0.5}
    assert reproduce.compare(a, {"mean_return": 0.0, "stderr": 0.0})["verdict"] == "as well as"  # 1.0 <= 2 * 0.5
    assert reproduce.compare(a, {"mean_return": -1.0, "stderr": 0.0})["verdict"] == "better than"
    assert reproduce.compare({"mean_return": -2.0, "stderr": 0.1}, a)["verdict"] == "worse than"
    assert reproduce.stats([1.0, 2.0, 3.0]) == pytest.approx(
        {"n": 3, "mean_return": 2.0, "std": 1.0, "stderr": 1 / np.sqrt(3)}
    )


def test_train_script(tmp_path):
    train_script = load_example("train")
    save = tmp_path / "model.zip"
    model, result = train_script.main(
        [
            "--algo", "reptile", "--env", "pointmass-origin", "--timesteps", "1", "--save", str(save),
            "--hyperparams", "meta_batch_size=2", "fast_batch_size=2", "n_inner_steps=2", "max_episode_steps=5",
            "policy_kwargs=dict(net_arch=dict(pi=[8], vf=[]))",
            "--eval-tasks", "2", "--eval-steps", "1", "--eval-episodes", "2", "--eval-freq", "1", "--checkpoint-freq", "8",
            "--no-progress-bar", "--verbose", "0",
        ]
    )  # fmt: skip
    assert isinstance(model, Reptile) and model.meta_batch_size == 2 and model.n_inner_steps == 2
    assert save.exists() and (tmp_path / "best_model.zip").exists() and (tmp_path / "evaluations.npz").exists()
    assert any((tmp_path / "checkpoints").iterdir())
    assert AdaptationResult.from_csv(tmp_path / "model_adaptation.csv").returns.shape == (2, 2) == result.returns.shape
    defaults = train_script.load_hyperparams("maml", "antvel")
    assert defaults["meta_batch_size"] == 40 and defaults["policy_kwargs"] == dict(net_arch=dict(pi=[100, 100], vf=[]))
    assert train_script.load_hyperparams("fomaml", "sb3_meta/PointMass-v0")["meta_batch_size"] == 20  # default entry
    with pytest.raises(ValueError, match="key=value"):
        train_script.parse_overrides(["meta_batch_size"])
    assert os.path.basename(train_script.HYPERPARAMS_DIR) == "hyperparams"


def test_inspect_episodes_prints_lengths_returns_and_log_std(tmp_path, capsys):
    inspect = load_example("inspect_episodes")
    model = fomaml()
    model.save(tmp_path / "model.zip")
    inspect.main([str(tmp_path / "model.zip"), "--algo", "fomaml", "--env", "pointmass-origin", "--episodes", "2"])
    out = capsys.readouterr().out
    assert "lengths [100, 100]" in out  # seeded: neither episode reaches its goal, so both run to the time limit
    assert f"{model.n_iterations} training updates, {model.num_timesteps:,} steps" in out
    log_std = float(model.policy.log_std.mean())
    assert f"mean log-std {log_std:.3f}" in out
    returns = [float(x) for x in out.split("returns [")[1].split("]")[0].split(",")]
    assert len(returns) == 2 and all(r < 0 for r in returns)  # negative distances to the goal
    assert "ended early: 0 of 2; median length 100" in out


def test_inspect_episodes_of_an_untrained_ant_counts_the_episodes_that_end_early(capsys):
    inspect = load_example("inspect_episodes")
    inspect.main(["random", "--algo", "fomaml", "--env", "antvel", "--episodes", "6", "--frame-skip", "5"])
    out = capsys.readouterr().out
    lengths = [int(x) for x in out.split("lengths [")[1].split("]")[0].split(",")]
    early = sum(n < 200 for n in lengths)
    assert "0 training updates" in out and f"ended early: {early} of 6; median length {np.median(lengths):.0f}" in out
    assert early >= 1  # at Ant-v5's 0.05 s step the random Ant jumps out of the healthy range within its horizon


TINY = [
    "--seeds", "0", "--iterations", "1", "--meta-batch-size", "2", "--fast-batch-size", "2", "--max-episode-steps", "5",
    "--hidden-size", "8", "--n-test-tasks", "3", "--test-episodes", "2", "--test-steps", "2",
]  # fmt: skip


def test_reptile_displacement_prints_the_coherence_of_the_update(monkeypatch, capsys):
    script = load_example("reptile_displacement")
    argv = ["x", "--inner-lrs", "0.1", "1.0", "--iterations", "2", "--meta-batch-size", "4", "--fast-batch-size", "2"]
    monkeypatch.setattr("sys.argv", argv)
    script.main()
    rows = [
        line.split("|")[1:-1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| 0.1") or line.startswith("| 1.0")
    ]
    assert len(rows) == 2
    for _, per_task, mean, coherence, bound, _ in rows:
        assert 0 < float(mean) <= float(per_task) and 0 < float(coherence) <= 1 and float(bound) == 0.5
    assert float(rows[1][1]) > float(rows[0][1])  # a 10x inner step moves each task further


def test_reptile_reuse_ratios(tmp_path, capsys):
    script = load_example("reptile_reuse_ratios")
    model = Reptile("MlpPolicy", PointMassTasks(), reuse_inner_episodes=True, meta_batch_size=2, fast_batch_size=2, seed=0)
    shares = script.ratio_shares(model, n_tasks=3, n_episodes=2, seed=0)
    assert sum(shares[k] for k in ("clipped", "active_wrong_side", "active_right_side")) == pytest.approx(1.0)
    assert shares["median_abs_log_ratio"] > 0
    model.inner_lr = 1e-9  # a vanishing step leaves every ratio at 1: nothing clipped
    tiny = script.ratio_shares(model, n_tasks=3, n_episodes=2, seed=0)
    assert tiny["clipped"] == 0.0 and tiny["median_abs_log_ratio"] < 1e-6
    model.save(tmp_path / "reptile.zip")
    script.main([str(tmp_path / "reptile.zip"), "--tasks", "2", "--episodes", "2"])
    assert "clipped" in capsys.readouterr().out


def test_reproduce_inner_lr_reaches_the_meta_learner_and_its_record(tmp_path):
    """``--inner-lr`` (the Ant diagnosis' vanishing inner step) sets the meta-learners' step and names itself."""
    reproduce = load_example("reproduce")
    out = str(tmp_path / "results")
    reproduce.main(["pointmass", "--out", out, *TINY, "--methods", "fomaml", "reptile", "--inner-lr", "1e-8"])
    run = tmp_path / "results" / "runs" / "pointmass-origin"
    assert FOMAML.load(run / "fomaml_seed0.zip").inner_lr == 1e-8
    reptile_info = reproduce.json.loads((run / "reptile_seed0.json").read_text())
    assert Reptile.load(run / "reptile_seed0.zip").inner_lr == 1e-8 and "reptile_config" not in reptile_info  # no sweep
    assert reptile_info["config"]["algo_kwargs"] == {"inner_lr": 1e-8}


def test_step_size_probe_evaluates_each_step_size_on_the_same_tasks_and_episodes(tmp_path, capsys):
    probe = load_example("step_size_probe")
    model = fomaml()
    model.save(tmp_path / "model.zip")
    out = tmp_path / "probe.csv"
    argv = [str(tmp_path / "model.zip"), "--algo", "fomaml", "--env", "pointmass-origin", "--step-sizes", "0.1", "1.0"]
    probe.main([*argv, "--steps", "1", "--n-tasks", "3", "--episodes", "2", "--out", str(out)])
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step_size"], r["steps"]) for r in rows] == [("0.1", "0"), ("0.1", "1"), ("1.0", "0"), ("1.0", "1")]
    assert rows[0]["mean_return"] == rows[2]["mean_return"]  # before adaptation both step sizes see the same episodes
    env = PointMassTasks(start="origin")
    tasks = probe.sample_eval_tasks(env, 3, seed=2017)
    expected = probe.evaluate_adaptation(model, env, tasks=tasks, n_steps=1, n_episodes=2, seed=0, adapt_lr=1.0)
    assert float(rows[3]["mean_return"]) == pytest.approx(float(expected.mean[1]))
    gain = expected.returns[:, 1] - expected.returns[:, 0]
    assert float(rows[3]["mean_gain"]) == pytest.approx(float(gain.mean()))
    assert "step 1: mean return after 0..1 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        probe.main([*argv[:4], "--step-sizes", "0"])


def test_training_updates_counts_meta_iterations_and_sb3_policy_updates():
    train_script = load_example("train")
    model = fomaml()
    model.learn(1)
    assert train_script.training_updates(model) == 1  # one meta-iteration
    trpo = train_script.MODEL_CLASSES["trpo"]("MlpPolicy", PointMassTasks(max_episode_steps=5), n_steps=8, batch_size=8)
    trpo.learn(16)
    assert train_script.training_updates(trpo) == trpo._n_updates == 2  # one per rollout of n_steps
