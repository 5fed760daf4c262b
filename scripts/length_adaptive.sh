#!/usr/bin/env bash
# The length_adaptive family (QuaLA, README "Length-adaptive quantized RoBERTa"): LengthDrop
# fine-tunes FP and W8A8 of TASK's teacher through the ablation runner, qbert-length-search on
# each with the latency of the ONNX export (--measure-latency), and
# RESULTS_DIR/length_adaptive_TASK.{md,json,png} (python -m qbert.experiments.length_adaptive).
#
#   scripts/length_adaptive.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Runs go to OUT_DIR/runs/TASK/length_adaptive_{FP,W8A8}-HASH (search in .../search); re-running
# skips what is done. Environment: the QAT recipe variables of scripts/lib/qat_runner.py,
# RESULTS_DIR (default results/), and, defaulting to the settings of the committed mini-GLUE
# tables (a 2-layer model wants a larger LengthDrop bound to drop as many tokens as 6 layers do):
#   LAT_TRAIN   "--criterion length_drop_sentence_prediction --num-sandwich 2 --length-drop-ratio-bound 0.5 --layer-dropout-prob 0.2"
#   LAT_SEARCH  "--population-size 8 --evo-iter 4 --mutation-size 8 --crossover-size 8 --seed 1 --batch-size 128 --length-drop-ratio-bound 0.8 --measure-latency"
# (python -m qbert.experiments.length_adaptive alone defaults to the reference's recipe and sizes).
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

export LAT_TRAIN=${LAT_TRAIN:-"--criterion length_drop_sentence_prediction --num-sandwich 2 --length-drop-ratio-bound 0.5 --layer-dropout-prob 0.2"}
export LAT_SEARCH=${LAT_SEARCH:-"--population-size 8 --evo-iter 4 --mutation-size 8 --crossover-size 8 --seed 1 --batch-size 128 --length-drop-ratio-bound 0.8 --measure-latency"}
export RESULTS_DIR=${RESULTS_DIR:-$REPO_DIR/results}
"$PYTHON" -m qbert.experiments.length_adaptive "$TASK" "$DATA_BIN" "$TEACHER" "$OUT_DIR" "$DEVICE"
