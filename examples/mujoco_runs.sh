#!/usr/bin/env bash
# The MuJoCo runs of the results docs at the MAML paper's budgets, in priority order (AntVel FOMAML early: Ant is
# the open question). Each command skips the
# runs already finished (their CSV under results/runs/) and resumes a run in progress from its checkpoint
# (results/checkpoints/, written every 3 minutes; bit for bit for the meta-learners), so this script can be
# stopped at any time and started again in the next sitting:  bash examples/mujoco_runs.sh

cd "$(dirname "$0")/.."
OUT=${OUT:-results}  # OUT=/abs/path/results to run from another checkout (e.g. a git worktree of the last commit)
R="python examples/reproduce.py cheetah --budget paper --out $OUT"
$R --envs halfcheetahdir --methods fomaml --seeds 0
$R --envs halfcheetahdir --methods random --seeds 0
$R --envs halfcheetahdir --methods maml --seeds 0
$R --envs halfcheetahdir --methods pretrained --seeds 0
$R --envs halfcheetahdir --methods reptile --seeds 0  # the sweep's configuration at FOMAML's env steps
# AntVel at the original batch and rllab's 0.02 s step (the default); FOMAML continues from the learning-curve
# run's checkpoint (same configuration, iteration 58), see docs/results.md
A="python examples/reproduce.py ant --envs antvel --budget paper --out $OUT"
$A --methods fomaml --seeds 0
$R --envs halfcheetahdir --methods fomaml --seeds 1
$R --envs halfcheetahdir --methods maml --seeds 1
$R --envs halfcheetahdir --methods oracle --seeds 0
$R --envs halfcheetahvel --methods fomaml pretrained maml random oracle --seeds 0
$R --envs halfcheetahvel --methods fomaml maml --seeds 1
$A --methods pretrained maml random oracle --seeds 0
