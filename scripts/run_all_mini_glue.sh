#!/usr/bin/env bash
# Every ablation family on mini-GLUE SST-2, RTE and CoLA (CPU), then the tables in results/.
#
#   scripts/run_all_mini_glue.sh [WORK_DIR]        (default WORK_DIR: work/mini-glue)
#
# Uses WORK_DIR/data/TASK-bin (scripts/prepare_mini_glue.sh WORK_DIR/data) and the teachers
# WORK_DIR/teachers/TASK/checkpoint_best.pt (scripts/train_teacher.sh); either is made with
# those scripts' defaults when missing. With PRETRAIN=1 (default) the teachers are fine-tuned,
# as roberta.base is, from a masked-LM pretrained checkpoint (scripts/pretrain_mini.sh
# WORK_DIR/pretrain) and the data is binarized with its dictionary; PRETRAIN=0 trains the
# teachers from scratch (use another WORK_DIR: the two do not mix). Runs go to WORK_DIR/exp
# (re-running skips finished runs and resumes interrupted ones), tables and plots to
# RESULTS_DIR (default: results/).
#
# Environment: TASKS (default "SST-2 RTE CoLA": every family), FAMILIES (default: all of
# "group_ablation kd_parts kd_effect pact_sweep sparsity"; a subset makes only those tables and
# merges them into RESULTS_DIR/index.md: make_tables.py --only, no --clean), KD_EFFECT_TASKS
# (default: all eight), KD_EFFECT_SEEDS (default "1 2 3": the KD effect table is a mean over seeds),
# PACT_TASKS (default SST-2: the seed's PACT table), KD_PARTS_FFN=1 (default) also runs the
# seed's "FFN 2bit" KD-parts table, JOBS (parallel runs, default: number of CPUs),
# RESULTS_DIR, TRAIN_SIZE (data, e.g. glue), ALIASES ALIAS_PROB GLOSSES ALIASES_IN_TRAIN (the
# latent lexicon of data and corpus, default 0 = off, 0.5, 40, 0; see prepare_mini_glue.sh), COMPOSITE
# (1: SST-2, CoLA, RTE, MRPC in composite form, qbert.data.composite; default 0), AUG (auto: kd_effect and kd_parts get their
# "KD + aug" column, the augmentation made with WORK_DIR/pretrain/model.pt, the masked LM the
# teachers were fine-tuned from; 0: without it) and AUG_N AUG_TOP_K AUG_P AUG_SEED (defaults
# 4, 15, 0.4, 1; each task's augmented split is written once into WORK_DIR/data/TASK-bin,
# about 20-40 s a task here), and the QAT recipe variables of
# scripts/lib/qat_runner.py (TOTAL_NUM_UPDATES, LR, SEED, ...; pretraining, data and
# teachers keep their own defaults). Time on 2 CPU cores: see the README.
set -euo pipefail
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHON
WORK=${1:-$REPO_DIR/work/mini-glue}
TASKS=${TASKS-"SST-2 RTE CoLA"}   # TASKS="" : no family but kd_effect
PACT_TASKS=${PACT_TASKS:-SST-2}
# the KD effect table also covers the other GLUE tasks (kd_effect only: 3 runs a task)
KD_EFFECT_TASKS=${KD_EFFECT_TASKS:-"SST-2 RTE CoLA MRPC STS-B QQP MNLI QNLI"}
KD_PARTS_FFN=${KD_PARTS_FFN:-1}
ALL_FAMILIES="group_ablation kd_parts kd_effect pact_sweep sparsity"
FAMILIES=${FAMILIES:-$ALL_FAMILIES}
for f in $FAMILIES; do
  [[ " $ALL_FAMILIES " == *" $f "* ]] || { echo "error: FAMILIES: unknown family '$f'; known: $ALL_FAMILIES" >&2; exit 2; }
done
has() { [[ " $FAMILIES " == *" $1 "* ]]; }
has kd_effect || KD_EFFECT_TASKS=""
PRETRAIN=${PRETRAIN:-1}
# KD effects on mini-GLUE are about one point, the size of seed noise: that table averages seeds
KD_EFFECT_SEEDS=${KD_EFFECT_SEEDS:-"1 2 3"}
RESULTS_DIR=${RESULTS_DIR:-$REPO_DIR/results}
export JOBS=${JOBS:-$(nproc 2>/dev/null || echo 1)}
export DATA_KIND=mini
# The latent lexicon (qbert.data.lexicon, README "Data"): dev/test and the pretraining corpus
# use ALIASES made-up synonyms per content word, train does not (default 0: off; with the
# tiny model it did not give the teacher knowledge its labels lack, see the README). Data,
# corpus and teachers of one WORK_DIR must share it: WORK_DIR/lexicon records it, and
# COMPOSITE=1 (composite tasks, qbert.data.composite) too.
export ALIASES=${ALIASES:-0} ALIAS_PROB=${ALIAS_PROB:-0.5} GLOSSES=${GLOSSES:-40} ALIASES_IN_TRAIN=${ALIASES_IN_TRAIN:-0}
export COMPOSITE=${COMPOSITE:-0}
case "$COMPOSITE" in 0|1) ;; *) echo "error: COMPOSITE=$COMPOSITE; expected 0 or 1" >&2; exit 2 ;; esac
LEXICON="aliases=$ALIASES alias_prob=$ALIAS_PROB glosses=$GLOSSES in_train=$ALIASES_IN_TRAIN"
if [[ "$COMPOSITE" == 1 ]]; then LEXICON="$LEXICON composite=1"; fi
if [[ -f "$WORK/lexicon" && "$(cat "$WORK/lexicon")" != "$LEXICON" ]]; then
  echo "error: ALIASES/ALIAS_PROB/GLOSSES/ALIASES_IN_TRAIN/COMPOSITE: $WORK was made with '$(cat "$WORK/lexicon")', not '$LEXICON'; use another WORK_DIR" >&2
  exit 2
elif [[ ! -f "$WORK/lexicon" && ( "$ALIASES" != 0 || "$COMPOSITE" != 0 ) && ( -d "$WORK/data" || -d "$WORK/pretrain" ) ]]; then
  echo "error: ALIASES=$ALIASES COMPOSITE=$COMPOSITE: $WORK holds data made without them; use another WORK_DIR or ALIASES=0 COMPOSITE=0" >&2
  exit 2
fi
S=$REPO_DIR/scripts
EXP=$WORK/exp
mkdir -p "$WORK"
echo "$LEXICON" > "$WORK/lexicon"
T0=$SECONDS
stamp() { echo "[$(date +%T)] +$((SECONDS - T0)) s: $*"; }

DATA_ENV=(env -u SEED)                 # SEED here is the QAT seed
TEACHER_ENV=(env -u TOTAL_NUM_UPDATES -u WARMUP_UPDATES -u LR -u MAX_SENTENCES -u ARCH -u SEED -u MAX_EPOCH)
if [[ "$PRETRAIN" == 1 ]]; then
  if [[ ! -f "$WORK/pretrain/model.pt" ]]; then
    stamp "masked-LM pretraining of the tiny RoBERTa -> $WORK/pretrain"
    env -u SEED -u TOTAL_UPDATES -u WARMUP_UPDATES -u MAX_SENTENCES "$S/pretrain_mini.sh" "$WORK/pretrain" \
      > "$WORK/pretrain.out" 2>&1 || { echo "error: pretraining failed; see $WORK/pretrain.out" >&2; exit 1; }
  fi
  DATA_ENV+=(DICT="$WORK/pretrain/dict.txt")
  TEACHER_ENV+=(ROBERTA_PATH="$WORK/pretrain/model.pt" ARCH=roberta)
fi

ALL_TASKS=$(printf '%s\n' $TASKS $KD_EFFECT_TASKS | awk '!seen[$0]++' | tr '\n' ' ')
for TASK in $ALL_TASKS; do
  if [[ ! -d "$WORK/data/$TASK-bin/label" ]]; then
    stamp "preparing mini-GLUE $TASK"
    "${DATA_ENV[@]}" "$S/prepare_mini_glue.sh" "$WORK/data" "$TASK" > /dev/null
  fi
  if [[ ! -f "$WORK/teachers/$TASK/checkpoint_best.pt" ]]; then
    stamp "training the FP teacher for $TASK"
    # the teacher script reads its own recipe variables: do not pass ours on
    "${TEACHER_ENV[@]}" "$S/train_teacher.sh" "$TASK" "$WORK/data/$TASK-bin" "$WORK/teachers/$TASK" > "$WORK/teacher_$TASK.out" 2>&1 \
      || { echo "error: teacher training for $TASK failed; see $WORK/teacher_$TASK.out" >&2; exit 1; }
    tail -n 4 "$WORK/teacher_$TASK.out"
  fi
done

status=0
for TASK in $TASKS; do
  args=("$TASK" "$WORK/data/$TASK-bin" "$WORK/teachers/$TASK/checkpoint_best.pt" "$EXP" cpu)
  if has group_ablation; then stamp "$TASK: group_ablation"; "$S/group_ablation.sh" "${args[@]}" || status=1; fi
  if has kd_parts; then stamp "$TASK: kd_parts"; "$S/kd_parts.sh" "${args[@]}" || status=1; fi
  if has kd_effect; then
    stamp "$TASK: kd_effect";     SEEDS="$KD_EFFECT_SEEDS" "$S/kd_effect.sh" "${args[@]}" || status=1
  fi
  if has kd_parts && [[ "$KD_PARTS_FFN" == 1 ]]; then
    stamp "$TASK: kd_parts (FFN)"; QUANT_GROUPS=FFN "$S/kd_parts.sh" "${args[@]}" || status=1
  fi
  if has pact_sweep && [[ " $PACT_TASKS " == *" $TASK "* ]]; then
    stamp "$TASK: pact_sweep";    "$S/pact_sweep.sh" "${args[@]}" || status=1
  fi
  # 2:4 sparsity: FP | 2:4 FP | 2:4 + W8A8 QAT (+KD) | 2:4 + W4 QAT + KD, groups FFN and QKV,FFN
  if has sparsity; then stamp "$TASK: sparsity"; "$S/sparsity.sh" "${args[@]}" || status=1; fi
done

for TASK in $KD_EFFECT_TASKS; do
  [[ " $TASKS " == *" $TASK "* ]] && continue   # done above
  args=("$TASK" "$WORK/data/$TASK-bin" "$WORK/teachers/$TASK/checkpoint_best.pt" "$EXP" cpu)
  stamp "$TASK: kd_effect";       SEEDS="$KD_EFFECT_SEEDS" "$S/kd_effect.sh" "${args[@]}" || status=1
done

stamp "tables"
if [[ "$(echo $FAMILIES | tr ' ' '\n' | sort | tr '\n' ' ')" == "$(echo $ALL_FAMILIES | tr ' ' '\n' | sort | tr '\n' ' ')" ]]; then
  "$PYTHON" "$S/make_tables.py" "$EXP" --results-dir "$RESULTS_DIR" --clean
else  # a subset: only its tables, the other entries of RESULTS_DIR/index.md stay
  for f in $FAMILIES; do
    "$PYTHON" "$S/make_tables.py" "$EXP" --results-dir "$RESULTS_DIR" --only "$f" || status=1
  done
fi
stamp "done (status $status)"
exit $status
