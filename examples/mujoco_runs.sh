#!/usr/bin/env bash
# The MuJoCo runs of the results docs at the MAML paper's budgets, in priority order, as two streams that run side
# by side (one per core of the 2-core development machine): A the TRPO baselines and Ant (then HalfCheetahVel's
# pretrained), B the meta-learners on HalfCheetah, then Ant's MAML and HalfCheetahVel's oracle (B's runs are shorter). Each command skips the runs already finished (their CSV under results/runs/) and resumes a run in
# progress from its checkpoint (results/checkpoints/, written every 3 minutes; bit for bit for the meta-learners),
# so this script can be stopped at any time and started again in the next sitting:
#
#   bash examples/mujoco_runs.sh              # both streams (each run belongs to one stream: no run twice at once)
#   STREAM=a bash examples/mujoco_runs.sh     # one stream only (a or b)

cd "$(dirname "$0")/.."
OUT=${OUT:-results}  # OUT=/abs/path/results to run from another checkout (e.g. a git worktree of the last commit)
STREAM=${STREAM:-both}
R="python examples/reproduce.py cheetah --budget paper --out $OUT"
# AntVel at the original batch and rllab's 0.02 s step (the default); FOMAML continues from the learning-curve
# run's checkpoint (same configuration, iteration 58), see docs/results.md. 375 iterations (120M env steps), the
# MAML paper's Ant checkpoint, not the paper budget's 500: the machine time goes to the baselines first; the
# pretrained budget (iterations x 40 x 20 x 200 x 2) then equals the meta-learners'
A="python examples/reproduce.py ant --envs antvel --budget paper --iterations 375 --out $OUT"

stream_a() {
  $R --envs halfcheetahdir --methods pretrained --seeds 0
  $A --methods fomaml --seeds 0  # before the oracle: Ant is the open question, and a partial run is reportable
  $R --envs halfcheetahdir --methods oracle --seeds 0
  $A --methods random --seeds 0  # no training: evaluation only (minutes)
  $A --methods pretrained --seeds 0  # ~27 h here: sb3-contrib TRPO at 120M env steps
  $R --envs halfcheetahvel --methods pretrained --seeds 0  # before Ant's oracle: "far above pretrained" on HCVel
  $A --methods oracle --seeds 0
}

stream_b() {
  $R --envs halfcheetahdir --methods fomaml random maml --seeds 0
  $R --envs halfcheetahdir --methods reptile --seeds 0  # the sweep's configuration at FOMAML's env steps
  $R --envs halfcheetahdir --methods fomaml --seeds 1
  $R --envs halfcheetahvel --methods fomaml random --seeds 0
  $R --envs halfcheetahdir --methods maml --seeds 1
  $R --envs halfcheetahvel --methods maml --seeds 0
  $R --envs halfcheetahvel --methods fomaml maml --seeds 1
  $A --methods maml --seeds 0  # Ant's "as well as MAML" (after the HalfCheetahVel seeds: ~1.5x FOMAML's 8 h)
  $R --envs halfcheetahvel --methods oracle --seeds 0
}

case "$STREAM" in
  a) stream_a ;;
  b) stream_b ;;
  both) stream_a & stream_b & wait ;;
  *) echo "STREAM must be a, b or both, got $STREAM" >&2; exit 2 ;;
esac
