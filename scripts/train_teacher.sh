#!/usr/bin/env bash
# Fine-tune a full-precision RoBERTa teacher on one GLUE task with fairseq-train.
#
#   scripts/train_teacher.sh TASK DATA_BIN SAVE_DIR [extra fairseq-train args...]
#
# TASK      one of CoLA SST-2 MRPC STS-B QQP MNLI QNLI RTE (task flags come from
#           qbert/data/glue_tasks.py: --num-classes / --regression-target,
#           --init-token 0 --separator-token 2, --report-* metrics, best-checkpoint metric)
# DATA_BIN  output of qbert-preprocess-glue (input0/ [input1/] label/)
# SAVE_DIR  checkpoints, SAVE_DIR/train.log and tensorboard events in SAVE_DIR/tb
#
# Variables of fairseq's RoBERTa GLUE recipe, overridable from the environment:
#   ROBERTA_PATH       pretrained model.pt (roberta.base's, or scripts/pretrain_mini.sh's with
#                      ARCH=roberta); unset -> train from scratch
#   ARCH               roberta = the tiny CPU model and recipe (default without ROBERTA_PATH;
#                      ENCODER_LAYERS sets its depth, default 2)
#                      | roberta_base (default with ROBERTA_PATH) | roberta_large
#   TOTAL_NUM_UPDATES  WARMUP_UPDATES  LR  MAX_SENTENCES (batch size)
#   HEAD_NAME          classification head name (sentence_classification_head)
#   NUM_CLASSES        default from the task table
# and: DEVICE=cpu|gpu (default cpu: adds --cpu), MAX_EPOCH (default: 10 with ROBERTA_PATH,
# else 0 = stop at TOTAL_NUM_UPDATES), SEED, LOG_INTERVAL, FP16=1 (GPU only),
# PYTHON (default: the repo's .venv python if present, else python),
# USER_DIR=0 (plain fairseq: no --user-dir fairseq_qbert, whose safe checkpoint loading
# ROBERTA_PATH and resuming need under torch >= 2.6), EXTRA_ARGS (more fairseq-train flags).
#
# fairseq checkpoints are pickles: the plugin loads them with torch's restricted unpickler
# (fairseq's own types only); a file you trust that needs more: QBERT_TRUST_CHECKPOINT=PATH.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 TASK DATA_BIN SAVE_DIR [extra fairseq-train args...]" >&2
  exit 2
fi
TASK=$1; DATA_BIN=$2; SAVE_DIR=$3; shift 3

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
if [[ -z "${FAIRSEQ_TRAIN:-}" ]]; then
  PY_BIN_DIR=$(dirname "$(command -v "$PYTHON")")
  if [[ -x "$PY_BIN_DIR/fairseq-train" ]]; then FAIRSEQ_TRAIN="$PY_BIN_DIR/fairseq-train"; else FAIRSEQ_TRAIN=fairseq-train; fi
fi

# Task table (run as a plain file: no fairseq import, no plugin import).
GLUE_TASKS="$PYTHON -m qbert.data.glue_tasks"
TASK_ARGS=$($GLUE_TASKS train-args "$TASK") || exit 2
METRIC=$($GLUE_TASKS metric "$TASK")
TASK_NUM_CLASSES=$($GLUE_TASKS num-classes "$TASK")

for sub in input0 label; do
  if [[ ! -d "$DATA_BIN/$sub" ]]; then
    echo "error: $DATA_BIN/$sub not found; expected the output of qbert-preprocess-glue for $TASK" >&2
    exit 2
  fi
done

DEVICE=${DEVICE:-cpu}
HEAD_NAME=${HEAD_NAME:-sentence_classification_head}
NUM_CLASSES=${NUM_CLASSES:-$TASK_NUM_CLASSES}
SEED=${SEED:-1}
LOG_INTERVAL=${LOG_INTERVAL:-20}

MODEL_ARGS=()
# ARCH picks the recipe: roberta = the tiny CPU model (2 layers x 64), anything else =
# fairseq's RoBERTa GLUE recipe (defaults: RTE on roberta_base).
if [[ -n "${ROBERTA_PATH:-}" ]]; then ARCH=${ARCH:-roberta_base}; else ARCH=${ARCH:-roberta}; fi
if [[ "$ARCH" == roberta ]]; then
  # tiny model: learns mini-GLUE in ~1-2 CPU minutes, from scratch or from the masked-LM
  # checkpoint of scripts/pretrain_mini.sh (ROBERTA_PATH=PRETRAIN_OUT/model.pt)
  TOTAL_NUM_UPDATES=${TOTAL_NUM_UPDATES:-3000}
  WARMUP_UPDATES=${WARMUP_UPDATES:-180}
  LR=${LR:-1e-03}
  MAX_SENTENCES=${MAX_SENTENCES:-32}
  MAX_EPOCH=${MAX_EPOCH:-0}
  # one thread: the tiny model gains nothing from more, and OpenMP spinning collapses
  # throughput when other processes share the cores
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  MODEL_ARGS+=(--encoder-layers "${ENCODER_LAYERS:-2}" --encoder-embed-dim 64 --encoder-ffn-embed-dim 128
               --encoder-attention-heads 4 --max-positions 128)
else
  TOTAL_NUM_UPDATES=${TOTAL_NUM_UPDATES:-2036}
  WARMUP_UPDATES=${WARMUP_UPDATES:-122}
  LR=${LR:-2e-05}
  MAX_SENTENCES=${MAX_SENTENCES:-16}
  MAX_EPOCH=${MAX_EPOCH:-10}
  MODEL_ARGS+=(--max-positions 512 --max-tokens 4400)
fi
if [[ -n "${ROBERTA_PATH:-}" ]]; then
  if [[ ! -f "$ROBERTA_PATH" ]]; then echo "error: ROBERTA_PATH=$ROBERTA_PATH not found" >&2; exit 2; fi
  # pretrained encoder (+ LM head, unused); the classification head starts fresh
  MODEL_ARGS+=(--restore-file "$ROBERTA_PATH" --reset-optimizer --reset-dataloader --reset-meters)
  PRETRAINED_DICT=$(dirname "$ROBERTA_PATH")/dict.txt   # roberta.base/{model.pt,dict.txt}
  if [[ -f "$PRETRAINED_DICT" ]] && ! cmp -s "$PRETRAINED_DICT" "$DATA_BIN/input0/dict.txt"; then
    echo "error: $DATA_BIN/input0/dict.txt differs from the pretrained model's $PRETRAINED_DICT;" \
         "binarize the task with it (prepare_mini_glue.sh with DICT=..., qbert-preprocess-glue with --dict ...)" >&2
    exit 2
  fi
fi

DEVICE_ARGS=()
case "$DEVICE" in
  cpu) DEVICE_ARGS+=(--cpu --num-workers 0) ;;
  gpu) if [[ "${FP16:-0}" == 1 ]]; then
         DEVICE_ARGS+=(--fp16 --fp16-init-scale 4 --threshold-loss-scale 1 --fp16-scale-window 128)
       fi ;;
  *) echo "error: DEVICE=$DEVICE; expected cpu or gpu" >&2; exit 2 ;;
esac

USER_DIR_ARGS=()
if [[ "${USER_DIR:-1}" == 1 ]]; then USER_DIR_ARGS+=(--user-dir "$REPO_DIR/fairseq_qbert"); fi
# shellcheck disable=SC2206
EXTRA=(${EXTRA_ARGS:-})

mkdir -p "$SAVE_DIR"
LOG="$SAVE_DIR/train.log"
TB="$SAVE_DIR/tb"

# shellcheck disable=SC2086
"$FAIRSEQ_TRAIN" "$DATA_BIN" \
  "${USER_DIR_ARGS[@]}" \
  --task sentence_prediction --criterion sentence_prediction \
  --arch "$ARCH" "${MODEL_ARGS[@]}" \
  $TASK_ARGS --num-classes "$NUM_CLASSES" \
  --classification-head-name "$HEAD_NAME" \
  --batch-size "$MAX_SENTENCES" --required-batch-size-multiple 1 \
  --dropout 0.1 --attention-dropout 0.1 \
  --optimizer adam --adam-betas "(0.9, 0.98)" --adam-eps 1e-06 --weight-decay 0.1 --clip-norm 0.0 \
  --lr-scheduler polynomial_decay --lr "$LR" \
  --total-num-update "$TOTAL_NUM_UPDATES" --warmup-updates "$WARMUP_UPDATES" \
  --max-update "$TOTAL_NUM_UPDATES" --max-epoch "$MAX_EPOCH" \
  --seed "$SEED" \
  --save-dir "$SAVE_DIR" --no-epoch-checkpoints \
  --tensorboard-logdir "$TB" \
  --log-format simple --log-interval "$LOG_INTERVAL" \
  "${DEVICE_ARGS[@]}" "${EXTRA[@]}" "$@" 2>&1 | tee "$LOG"

# Best dev metric: best value of METRIC over the 'valid' subset lines (the one that
# chose checkpoint_best.pt), with the other metrics of that evaluation.
awk -F' [|] ' -v m="$METRIC" -v tb="$TB" -v ckpt="$SAVE_DIR/checkpoint_best.pt" '
  index($0, "valid on '"'"'valid'"'"' subset") {
    for (i = 1; i <= NF; i++) {
      n = split($i, kv, " ")
      if (n == 2 && kv[1] == m) {
        if (!found || kv[2] + 0 > best + 0) { best = kv[2]; line = $0; found = 1 }
      }
    }
  }
  END {
    if (!found) { print "error: no \"" m "\" on a valid line of the log" > "/dev/stderr"; exit 1 }
    sub(/^.*valid on .valid. subset [|] /, "", line)
    print "best dev " m ": " best
    print "  (" line ")"
    print "checkpoint: " ckpt
    print "tensorboard: " tb "   (tensorboard --logdir " tb ")"
  }' "$LOG"
