# Shared by scripts/{pact_sweep,group_ablation,kd_effect,kd_parts}.sh (source it, do not run it).
#
# A family script parses   TASK DATA_BIN TEACHER OUT_DIR [DEVICE]   with family_init, lists
# its cells with add_cell, and hands them to scripts/lib/qat_runner.py with run_family, which
# writes OUT_DIR/plans/FAMILY_TASK.json (the table layout), evaluates the FP baseline
# (OUT_DIR/fp/TASK/...), and runs every cell in OUT_DIR/runs/TASK/NAME-HASH (finished cells
# are skipped, interrupted ones resume).  Tables: scripts/make_tables.py OUT_DIR.

set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON=python; fi
fi
RUNNER="$REPO_DIR/scripts/lib/qat_runner.py"

family_usage() {
  cat >&2 <<EOF
usage: $0 TASK DATA_BIN TEACHER OUT_DIR [DEVICE]

  TASK      GLUE task (SST-2, RTE, CoLA, ...)
  DATA_BIN  output of qbert-preprocess-glue for TASK (e.g. mini/SST-2-bin)
  TEACHER   fine-tuned full-precision checkpoint (e.g. teachers/SST-2/checkpoint_best.pt)
  OUT_DIR   experiment folder (runs/, fp/, plans/); shared by all families
  DEVICE    cpu (default) or gpu

Hyperparameters (fairseq GLUE recipe names) from the environment: ARCH LR TOTAL_NUM_UPDATES
WARMUP_UPDATES MAX_SENTENCES MAX_EPOCH SEED FP16 DATA_KIND JOBS (parallel cells); see
scripts/lib/qat_runner.py.  Family-specific grid variables: see the top of $0.
EOF
}

family_init() {
  if [[ $# -lt 4 || $# -gt 5 ]]; then family_usage; exit 2; fi
  TASK=$1; DATA_BIN=$2; TEACHER=$3; OUT_DIR=$4; DEVICE=${5:-${DEVICE:-cpu}}
  case "$DEVICE" in cpu|gpu) ;; *) echo "error: DEVICE=$DEVICE; expected cpu or gpu" >&2; exit 2 ;; esac
  if [[ ! -f "$TEACHER" ]]; then echo "error: teacher checkpoint $TEACHER not found" >&2; exit 2; fi
  TEACHER=$(cd "$(dirname "$TEACHER")" && pwd)/$(basename "$TEACHER")
  mkdir -p "$OUT_DIR"
  CELLS_FILE=$(mktemp "${TMPDIR:-/tmp}/qbert-cells.XXXXXX")
  trap 'rm -f "$CELLS_FILE"' EXIT
}

# add_cell ROW COL NAME FLAGS...   (flag values must not contain spaces)
add_cell() {
  local row=$1 col=$2 name=$3; shift 3
  printf '%s\t%s\t%s\t%s\n' "$row" "$col" "$name" "$*" >> "$CELLS_FILE"
}

# run_family FAMILY VARIANT TITLE [KEY=VALUE...]
#   VARIANT: "" or a tag of the grid (e.g. w2_FFN) when one family has several tables
#   KEY=VALUE: facts for the table header
run_family() {
  local family=$1 variant=$2 title=$3; shift 3
  local meta=()
  for kv in "$@"; do meta+=(--meta "$kv"); done
  "$PYTHON" "$RUNNER" family --family "$family" --task "$TASK" --data-bin "$DATA_BIN" \
    --teacher "$TEACHER" --out-dir "$OUT_DIR" --device "$DEVICE" --cells "$CELLS_FILE" \
    --variant "$variant" --title "$title" "${meta[@]}"
}

# --- flag builders --------------------------------------------------------------------

# group label (FFN, FFN+EMB, ALL, ...) -> --quant-groups value, in the fixed order EMB,QKV,FFN
# so that the same set of groups always gives the same flags (and so the same run).
groups_spec() {
  local label=$1 out=()
  if [[ "$label" == ALL || "$label" == All ]]; then label=EMB+QKV+FFN; fi
  for g in EMB QKV FFN HEAD; do
    if [[ "+$label+" == *"+$g+"* ]]; then out+=("$g"); fi
  done
  local rest=$label
  for g in EMB QKV FFN HEAD; do rest=${rest//$g/}; done
  if [[ -n "${rest//+/}" || ${#out[@]} -eq 0 ]]; then
    echo "error: bad group label '$1'; use EMB, QKV, FFN, HEAD joined by '+', or ALL" >&2
    return 2
  fi
  local IFS=,
  echo "${out[*]}"
}

# run-name fragment of a --quant-groups value: EMB,QKV,FFN -> EMB-QKV-FFN
groups_name() { echo "${1//,/-}"; }

# LSQ weight quantization of GROUPS (a --quant-groups value) at BITS
lsq_flags() { echo "--quant-groups $2 --weight-bits $1 --weight-quantizer lsq"; }

# KD criterion with PARTS (a --kd-parts value); "none" = the plain sentence_prediction loss
kd_flags() {
  if [[ "$1" == none || "$1" == -KD ]]; then return 0; fi
  echo "--criterion kd_sentence_prediction --teacher-path $TEACHER --kd-parts $1"
}

# KD with augmented data (the "KD + aug" column of kd_effect / kd_parts): train on the task's
# train split plus its TinyBERT-style augmented rows, the ground-truth loss on original rows only
# (--task sentence_prediction_aug). The runner resolves train_aug to the split it writes into
# DATA_BIN with qbert-augment (once per task; AUG_N AUG_TOP_K AUG_P AUG_SEED AUG_PRETRAINED).
aug_flags() { echo "--task sentence_prediction_aug --train-subset train_aug"; }

# aug_column: true when the KD + aug column is to be run. AUG=0: never; AUG=1: always (a cell
# error when no masked LM is known); AUG=auto (default): when a pretrained masked LM is known
# (AUG_PRETRAINED, or the pretrained model.pt the teacher was fine-tuned from).
aug_column() {
  case "${AUG:-auto}" in
    0) return 1 ;;
    1) return 0 ;;
    auto)
      if [[ -n "$("$PYTHON" "$RUNNER" aug-pretrained "$TEACHER" 2>/dev/null)" ]]; then return 0; fi
      echo "note: no KD + aug column: the teacher was not fine-tuned from a pretrained masked LM; set" \
        "AUG_PRETRAINED=model.pt (or AUG=0 to silence this)" >&2
      return 1 ;;
    *) echo "error: AUG=$AUG; expected auto, 0 or 1" >&2; exit 2 ;;
  esac
}

# column label of a --kd-parts value, as in the seed tables
kd_label() {
  case "$1" in
    none|-KD) echo "-KD" ;;
    trm,logits|logits,trm) echo "KD(Trm+Logits)" ;;
    logits) echo "Logits" ;;
    trm) echo "Trm" ;;
    output) echo "Output" ;;
    attn) echo "Atts" ;;
    hidden) echo "Hidden" ;;
    *) local l=${1//,/+}; echo "KD(${l})" ;;
  esac
}

kd_name() { if [[ "$1" == none || "$1" == -KD ]]; then echo nokd; else echo "kd-${1//,/-}"; fi; }
