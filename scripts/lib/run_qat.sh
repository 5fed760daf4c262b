#!/usr/bin/env bash
# One QAT fine-tune (the runner every ablation script uses).
#
#   scripts/lib/run_qat.sh TASK DATA_BIN TEACHER RUN_DIR [cpu|gpu] [-- EXTRA fairseq-train FLAGS]
#
# e.g. scripts/lib/run_qat.sh SST-2 mini/SST-2-bin teachers/SST-2/checkpoint_best.pt runs/w2 cpu \
#        -- --quant-groups EMB,QKV,FFN --weight-bits 2 \
#           --criterion kd_sentence_prediction --teacher-path teachers/SST-2/checkpoint_best.pt --kd-parts trm,logits
#
# Starts quant_roberta from TEACHER with --finetune-from-model; skips RUN_DIR when RUN_DIR/DONE
# exists; resumes from RUN_DIR/checkpoints/checkpoint_last.pt after an interruption. Writes
# RUN_DIR/train.log, RUN_DIR/tb/, RUN_DIR/result.json (best dev metric, flags, git commit, ...)
# and RUN_DIR/DONE. Hyperparameters from the environment (fairseq GLUE recipe names): ARCH LR
# TOTAL_NUM_UPDATES WARMUP_UPDATES MAX_SENTENCES ... -- see scripts/lib/qat_runner.py.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
exec "$PYTHON" "$REPO_DIR/scripts/lib/qat_runner.py" run "$@"
