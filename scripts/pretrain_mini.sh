#!/usr/bin/env bash
# Masked-LM "pretraining" of the tiny CPU RoBERTa on an unlabeled mini-GLUE-world corpus:
# the stand-in for roberta.base's pretraining, so that a teacher fine-tuned from it knows more
# than its task's labels (which is what KD passes on to a quantized student).
#
#   scripts/pretrain_mini.sh OUT
#
# Writes OUT/corpus/{train,valid}.txt (qbert.data.mini_corpus),
#        OUT/corpus-bin/ (fairseq-preprocess --only-source; its dict.txt, copied to OUT/dict.txt,
#                         is the dictionary every task must be binarized with:
#                         prepare_mini_glue.sh with DICT=OUT/dict.txt),
#        OUT/model.pt, OUT/dict.txt  (laid out like roberta.base/: pass OUT/model.pt to
#                         train_teacher.sh as ROBERTA_PATH with ARCH=roberta),
#        OUT/train.log, OUT/tb (tensorboard).
# It is fairseq's RoBERTa pretraining recipe (examples/roberta/README.pretraining.md) with the
# tiny model (2 layers x 64, FFN 128, 4 heads, 128 positions).
#
# Environment: SEED (corpus and training seed, 1), SENTENCES_PER_TASK (20000),
# TOTAL_UPDATES (4000), WARMUP_UPDATES (240), PEAK_LR (1e-3), MAX_SENTENCES (32 blocks of
# TOKENS_PER_SAMPLE=128 tokens), ENCODER_LAYERS (2; fine-tune with the same value),
# DEVICE=cpu|gpu, PYTHON, LOG_INTERVAL (100).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
OUT=$1
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
PY_BIN_DIR=$(dirname "$(command -v "$PYTHON")")
tool() { if [[ -x "$PY_BIN_DIR/$1" ]]; then echo "$PY_BIN_DIR/$1"; else echo "$1"; fi; }
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"

SEED=${SEED:-1}
SENTENCES_PER_TASK=${SENTENCES_PER_TASK:-20000}
TOTAL_UPDATES=${TOTAL_UPDATES:-4000}
WARMUP_UPDATES=${WARMUP_UPDATES:-240}
PEAK_LR=${PEAK_LR:-1e-03}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-128}
MAX_SENTENCES=${MAX_SENTENCES:-32}
LOG_INTERVAL=${LOG_INTERVAL:-100}
DEVICE=${DEVICE:-cpu}
case "$DEVICE" in
  cpu) DEVICE_ARGS=(--cpu --num-workers 0); export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  gpu) DEVICE_ARGS=() ;;
  *) echo "error: DEVICE=$DEVICE; expected cpu or gpu" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
if [[ ! -f "$OUT/corpus-bin/dict.txt" ]]; then
  "$PYTHON" -m qbert.data.mini_corpus --out-dir "$OUT/corpus" --seed "$SEED" \
    --sentences-per-task "$SENTENCES_PER_TASK" --aliases "${ALIASES:-0}" --alias-prob "${ALIAS_PROB:-0.5}" --glosses "${GLOSSES:-40}"
  rm -rf "$OUT/corpus-bin.tmp"
  "$(tool fairseq-preprocess)" --only-source --trainpref "$OUT/corpus/train.txt" \
    --validpref "$OUT/corpus/valid.txt" --destdir "$OUT/corpus-bin.tmp" --workers 2 >/dev/null
  mv "$OUT/corpus-bin.tmp" "$OUT/corpus-bin"
fi

if [[ ! -f "$OUT/model.pt" ]]; then
  # --user-dir: the plugin's safe checkpoint loading (resuming an interrupted run)
  "$(tool fairseq-train)" "$OUT/corpus-bin" --user-dir "$REPO_DIR/fairseq_qbert" \
    --task masked_lm --criterion masked_lm \
    --arch roberta --encoder-layers "${ENCODER_LAYERS:-2}" --encoder-embed-dim 64 --encoder-ffn-embed-dim 128 \
    --encoder-attention-heads 4 --max-positions "$TOKENS_PER_SAMPLE" \
    --sample-break-mode complete --tokens-per-sample "$TOKENS_PER_SAMPLE" \
    --optimizer adam --adam-betas "(0.9,0.98)" --adam-eps 1e-6 --clip-norm 0.0 \
    --lr-scheduler polynomial_decay --lr "$PEAK_LR" --warmup-updates "$WARMUP_UPDATES" \
    --total-num-update "$TOTAL_UPDATES" --max-update "$TOTAL_UPDATES" \
    --dropout 0.1 --attention-dropout 0.1 --weight-decay 0.01 \
    --batch-size "$MAX_SENTENCES" --seed "$SEED" \
    --save-dir "$OUT/checkpoints" --no-epoch-checkpoints --save-interval-updates 1000 \
    --keep-interval-updates 1 --tensorboard-logdir "$OUT/tb" \
    --log-format simple --log-interval "$LOG_INTERVAL" "${DEVICE_ARGS[@]}" 2>&1 | tee "$OUT/train.log"
  cp "$OUT/corpus-bin/dict.txt" "$OUT/dict.txt"
  cp "$OUT/checkpoints/checkpoint_last.pt" "$OUT/model.pt.tmp"
  mv "$OUT/model.pt.tmp" "$OUT/model.pt"
fi
grep "valid on 'valid' subset" "$OUT/train.log" | tail -n 1 || true
echo "pretrained model: $OUT/model.pt   dictionary: $OUT/dict.txt"
