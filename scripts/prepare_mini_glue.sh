#!/usr/bin/env bash
# Generate mini-GLUE and binarize it for fairseq (whitespace tokenizer, no download).
#
#   scripts/prepare_mini_glue.sh OUT [TASKS]
#
# OUT    folder; writes OUT/glue/TASK/*.tsv (GLUE layout) and OUT/TASK-bin (fairseq binaries)
# TASKS  comma-separated subset of CoLA,SST-2,MRPC,STS-B,QQP,MNLI,QNLI,RTE (default: all)
# Environment: SEED (1), TRAIN_SIZE (8000, or glue: GLUE's train sizes capped at MAX_TRAIN_SIZE,
#   default 8000), DEV_SIZE (1000), TEST_SIZE (500), PYTHON,
#   ALIASES, ALIAS_PROB  the latent lexicon (qbert.data.lexicon; default 0 = off, 0.5): made-up
#         synonyms in dev/test, not in train; give the same values to scripts/pretrain_mini.sh,
#         whose corpus teaches them, and binarize with its DICT; ALIASES_IN_TRAIN=1: train uses
#         them too (the low-resource QAT setting),
#   COMPOSITE=1  SST-2, CoLA, RTE, MRPC in composite form (qbert.data.composite: several units
#         per example, the label aggregates theirs, no label noise; default 0),
#   DICT  a dictionary to binarize with (a pretrained model's dict.txt, e.g. the
#         OUT/corpus-bin/dict.txt of scripts/pretrain_mini.sh); default: built from train.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 OUT [TASKS]" >&2
  exit 2
fi
OUT=$1
TASKS=${2:-all}

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"

IN_TRAIN=()
case "${ALIASES_IN_TRAIN:-0}" in
  1) IN_TRAIN=(--aliases-in-train) ;;
  0) ;;
  *) echo "error: ALIASES_IN_TRAIN=$ALIASES_IN_TRAIN; expected 0 or 1" >&2; exit 2 ;;
esac
case "${COMPOSITE:-0}" in
  1) IN_TRAIN+=(--composite) ;;
  0) ;;
  *) echo "error: COMPOSITE=$COMPOSITE; expected 0 or 1" >&2; exit 2 ;;
esac
"$PYTHON" -m qbert.data.mini_glue --out-dir "$OUT/glue" --tasks "$TASKS" \
  --seed "${SEED:-1}" --train-size "${TRAIN_SIZE:-8000}" --max-train-size "${MAX_TRAIN_SIZE:-8000}" --dev-size "${DEV_SIZE:-1000}" \
  --test-size "${TEST_SIZE:-500}" --aliases "${ALIASES:-0}" --alias-prob "${ALIAS_PROB:-0.5}" \
  ${IN_TRAIN[@]+"${IN_TRAIN[@]}"}

if [[ "$TASKS" == all || "$TASKS" == ALL ]]; then
  TASKS=$("$PYTHON" -m qbert.data.glue_tasks list)
fi
for TASK in ${TASKS//,/ }; do
  TASK=$("$PYTHON" -m qbert.data.glue_tasks name "$TASK")
  "$PYTHON" -m fairseq_qbert.data.preprocess_glue --glue-dir "$OUT/glue" --task "$TASK" \
    --dest-dir "$OUT/$TASK-bin" --bpe whitespace ${DICT:+--dict "$DICT"}
done
