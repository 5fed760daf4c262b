#!/usr/bin/env bash
# The main job, end to end on mini-GLUE SST-2 (2 CPU cores, a few minutes):
#   1. virtualenv + pinned install (reused on later runs)
#   2. mini-GLUE SST-2 in the GLUE layout, binarized for fairseq
#   3. full-precision teacher fine-tune (tiny RoBERTa)
#   4. 4-bit LSQ QAT of EMB,QKV,FFN started from the teacher, without and with KD (trm,logits)
#   5. the table FP vs QAT vs QAT+KD, and where the tensorboard logs are
#   6. export of the QAT+KD model to packed integer weights + an int8 ONNX Runtime model,
#      verified against the fake-quant model on the dev set, and a prediction on raw text
# Re-running skips finished steps. WORK (default work/quickstart) holds everything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export PYTHON="$VENV/bin/python"
WORK="${WORK:-$ROOT/work/quickstart}"
TASK=SST-2
mkdir -p "$WORK"
T0=$SECONDS
say() { echo "[quickstart +$((SECONDS - T0))s] $*"; }

if [[ ! -d "$WORK/data/$TASK-bin/label" ]]; then
  say "generating and binarizing mini-GLUE $TASK -> $WORK/data"
  scripts/prepare_mini_glue.sh "$WORK/data" "$TASK" > "$WORK/prepare.log" 2>&1 || { cat "$WORK/prepare.log"; exit 1; }
fi
TEACHER="$WORK/teacher/checkpoint_best.pt"
if [[ ! -f "$TEACHER" ]]; then
  say "fine-tuning the full-precision teacher -> $WORK/teacher"
  scripts/train_teacher.sh "$TASK" "$WORK/data/$TASK-bin" "$WORK/teacher" > "$WORK/teacher.log" 2>&1 \
    || { tail -n 30 "$WORK/teacher.log"; exit 1; }
fi
tail -n 4 "$WORK/teacher.log" 2>/dev/null || true

say "4-bit LSQ QAT of EMB,QKV,FFN without and with KD -> $WORK/exp"
BITS=4 QUANT_GROUPS=EMB,QKV,FFN KD_PARTS=trm,logits DATA_KIND=mini \
  scripts/kd_effect.sh "$TASK" "$WORK/data/$TASK-bin" "$TEACHER" "$WORK/exp" cpu

say "results table"
"$PYTHON" scripts/make_tables.py "$WORK/exp" --results-dir "$WORK/results" --clean
for table in "$WORK"/results/*.md; do echo; cat "$table"; done

QAT_KD="$(find "$WORK/exp/runs" -path '*_kd-*' -name checkpoint_best.pt | head -n 1)"
say "exporting $QAT_KD -> $WORK/deploy (packed weights + int8 ONNX), verified on the dev set"
"$VENV/bin/qbert-export" "$QAT_KD" --out "$WORK/deploy" --force --verify "$WORK/data/$TASK-bin"
DEV="$WORK/data/glue/$TASK/dev.tsv"
tail -n +2 "$DEV" | cut -f1 | head -n 5 > "$WORK/raw.tsv"
say "qbert-predict on 5 raw dev sentences (needs only onnxruntime + numpy)"
"$VENV/bin/qbert-predict" "$WORK/deploy" --input "$WORK/raw.tsv"
echo
say "done. Tensorboard logs:"
echo "  teacher: $WORK/teacher/tb"
find "$WORK/exp" -maxdepth 4 -type d -name tb | sed 's/^/  /'
echo "  view them with: pip install tensorboard && tensorboard --logdir $WORK"
