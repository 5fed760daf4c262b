#!/usr/bin/env bash
# The main job, end to end on mini-GLUE SST-2 (2 CPU cores, a few minutes):
#   1. virtualenv + pinned install (reused on later runs)
#   2. mini-GLUE SST-2 in its composite form (qbert.data.composite: reviews of 3-7 clauses,
#      label = the majority polarity), GLUE layout, binarized for fairseq
#   3. full-precision teacher fine-tune (tiny RoBERTa, all 8000 train rows)
#   4. NVIDIA's PTQ -> QAT -> QAT+KD sequence at W2A8 (EMB,QKV,FFN; scripts/ptq.sh
#      PARTS=sequence), the student on the first 300 train rows (QAT_TRAIN_SIZE=300)
#   5. the table FP | PTQ | QAT | QAT+KD | QAT from the FP teacher, and the tensorboard logs
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

DATA_SETTING="COMPOSITE=1"   # what $WORK/data was made with; another setting starts over
if [[ -e "$WORK/data" && "$(cat "$WORK/data/setting" 2>/dev/null)" != "$DATA_SETTING" ]]; then
  say "$WORK was made with another data setting: removing its data, teacher and runs"
  rm -rf "$WORK/data" "$WORK/teacher" "$WORK/exp" "$WORK/results" "$WORK/deploy"
fi
if [[ ! -d "$WORK/data/$TASK-bin/label" ]]; then
  say "generating and binarizing mini-GLUE $TASK -> $WORK/data"
  COMPOSITE=1 scripts/prepare_mini_glue.sh "$WORK/data" "$TASK" > "$WORK/prepare.log" 2>&1 || { cat "$WORK/prepare.log"; exit 1; }
  echo "$DATA_SETTING" > "$WORK/data/setting"
fi
TEACHER="$WORK/teacher/checkpoint_best.pt"
if [[ ! -f "$TEACHER" ]]; then
  say "fine-tuning the full-precision teacher -> $WORK/teacher"
  scripts/train_teacher.sh "$TASK" "$WORK/data/$TASK-bin" "$WORK/teacher" > "$WORK/teacher.log" 2>&1 \
    || { tail -n 30 "$WORK/teacher.log"; exit 1; }
fi
tail -n 4 "$WORK/teacher.log" 2>/dev/null || true

say "W2A8 of EMB,QKV,FFN: PTQ, then QAT and QAT+KD from it on 300 train rows -> $WORK/exp"
PARTS=sequence SEQ_BITS=2 QUANT_GROUPS=EMB,QKV,FFN KD_PARTS=trm,logits QAT_TRAIN_SIZE=300 DATA_KIND=mini \
  scripts/ptq.sh "$TASK" "$WORK/data/$TASK-bin" "$TEACHER" "$WORK/exp" cpu

say "results table"
"$PYTHON" scripts/make_tables.py "$WORK/exp" --results-dir "$WORK/results" --clean
for table in "$WORK"/results/*.md; do echo; cat "$table"; done

QAT_KD="$(find "$WORK/exp/runs" -path '*_kd-*' -name checkpoint_best.pt | head -n 1)"
say "exporting $QAT_KD -> $WORK/deploy (packed weights + int8 ONNX), verified on the dev set"
"$VENV/bin/qbert-export" "$QAT_KD" --out "$WORK/deploy" --force --verify "$WORK/data/$TASK-bin"
DEV="$WORK/data/glue/$TASK/dev.tsv"
sed -n "2,6p" "$DEV" | cut -f1 > "$WORK/raw.tsv"   # not head: with pipefail its early exit is a SIGPIPE failure
say "qbert-predict on 5 raw dev sentences (needs only onnxruntime + numpy)"
"$VENV/bin/qbert-predict" "$WORK/deploy" --input "$WORK/raw.tsv"
echo
say "done. Tensorboard logs:"
echo "  teacher: $WORK/teacher/tb"
find "$WORK/exp" -maxdepth 4 -type d -name tb | sed 's/^/  /'
echo "  view them with: pip install tensorboard && tensorboard --logdir $WORK"
