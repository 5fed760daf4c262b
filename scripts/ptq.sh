#!/usr/bin/env bash
# Post-training quantization (PTQ) and NVIDIA's BERT PTQ -> QAT -> QAT+KD sequence
# (seeds/004: calibrate the fine-tuned FP model, evaluate it, and only if that is not good
# enough run QAT / QAT+KD *starting from the calibrated model*).
#
#   scripts/ptq.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Two tables (python scripts/make_tables.py OUT_DIR):
#   ptq_grid_TASK.md   PTQ only (qbert-calibrate, then fairseq-validate of the written checkpoint):
#                      rows W8 W4 W2 (weights of QUANT_GROUPS only; columns = weight calibrator
#                      max | mse) and W8A8 W4A8 W2A8 (columns = activation calibrator max |
#                      percentile 99.99 | percentile 99.999 | mse | entropy; weights WA_WEIGHT_CALIBRATOR)
#   ptq_sequence.md    per task and SEQ_BITS (W8A8, W4A8): FP | PTQ (percentile PTQ_PERCENTILE) |
#                      QAT from a calibration at QAT_PERCENTILE | the same with KD (KD_PARTS) |
#                      QAT from the FP teacher (quantizers initialised from the first batch)
#
# Environment (besides the recipe variables of scripts/lib/qat_runner.py):
#   BITS (default "8 4 2")   SEQ_BITS ("8 4")   QUANT_GROUPS (EMB,QKV,FFN)   ACT_BITS (8)
#   CALIB_BATCHES (16)   CALIB_BATCH_SIZE (16)   WA_WEIGHT_CALIBRATOR (mse)
#   PTQ_PERCENTILE (99.999, NVIDIA's PTQ recipe)   QAT_PERCENTILE (99.99, NVIDIA's QAT init)
#   KD_PARTS (trm,logits)   PARTS ("grid sequence": which tables to run)
#   CALIBRATORS (WA columns, default "max pct99.99 pct99.999 mse entropy")
#   W_CALIBRATORS (W columns, default "max mse")
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

BITS=${BITS:-"8 4 2"}
SEQ_BITS=${SEQ_BITS:-"8 4"}
QUANT_GROUPS=${QUANT_GROUPS:-EMB,QKV,FFN}
ACT_BITS=${ACT_BITS:-8}
CALIB_BATCHES=${CALIB_BATCHES:-16}
CALIB_BATCH_SIZE=${CALIB_BATCH_SIZE:-16}
WA_WEIGHT_CALIBRATOR=${WA_WEIGHT_CALIBRATOR:-mse}
PTQ_PERCENTILE=${PTQ_PERCENTILE:-99.999}
QAT_PERCENTILE=${QAT_PERCENTILE:-99.99}
KD_PARTS=${KD_PARTS:-trm,logits}
PARTS=${PARTS:-"grid sequence"}
CALIBRATORS=${CALIBRATORS:-"max pct99.99 pct99.999 mse entropy"}
W_CALIBRATORS=${W_CALIBRATORS:-"max mse"}
spec=$(groups_spec "${QUANT_GROUPS//,/+}")
gname=$(groups_name "$spec")
BATCHES="--num-calib-batches $CALIB_BATCHES --batch-size $CALIB_BATCH_SIZE"

# add_calib_cell MODE ROW COL NAME "CALIB FLAGS" FLAGS...   (MODE: ptq | qat; see qat_runner.py)
add_calib_cell() {
  local mode=$1 row=$2 col=$3 name=$4 calib=$5; shift 5
  printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$col" "$name" "$*" "$mode $calib" >> "$CELLS_FILE"
}
# activation calibrator column label -> qbert-calibrate flags / run-name fragment
calib_flags() {
  case "$1" in
    max|mse|entropy) echo "--calibrator $1" ;;
    pct*) echo "--calibrator percentile --percentile ${1#pct}" ;;
  esac
}
for cal in $CALIBRATORS; do
  case "$cal" in max|mse|entropy|pct[0-9]*) ;;
    *) echo "error: CALIBRATORS: unknown calibrator '$cal'; use max, pctP (e.g. pct99.99), mse, entropy" >&2; exit 2 ;;
  esac
done
for cal in $W_CALIBRATORS; do
  case "$cal" in max|mse) ;; *) echo "error: W_CALIBRATORS: unknown weight calibrator '$cal'; use max, mse" >&2; exit 2 ;; esac
done
col_label() { case "$1" in pct*) echo "percentile ${1#pct}" ;; *) echo "$1" ;; esac; }
wa_flags() { echo "$(lsq_flags "$1" "$spec") --act-bits $ACT_BITS"; }

meta=("groups=$spec" "quantizer=LSQ (weights and activations)" "calibration=$CALIB_BATCHES train batches of $CALIB_BATCH_SIZE")

if [[ " $PARTS " == *" grid "* ]]; then
  for bits in $BITS; do
    for wcal in $W_CALIBRATORS; do
      # shellcheck disable=SC2046
      add_calib_cell ptq "W${bits}" "$wcal" "ptq_w${bits}_${gname}_w${wcal}" \
        "--calibrator max --weight-calibrator $wcal $BATCHES" $(lsq_flags "$bits" "$spec")
    done
  done
  for bits in $BITS; do
    for cal in $CALIBRATORS; do
      # shellcheck disable=SC2046
      add_calib_cell ptq "W${bits}A${ACT_BITS}" "$(col_label "$cal")" "ptq_w${bits}a${ACT_BITS}_${gname}_${cal}_w${WA_WEIGHT_CALIBRATOR}" \
        "$(calib_flags "$cal") --weight-calibrator $WA_WEIGHT_CALIBRATOR $BATCHES" $(wa_flags "$bits")
    done
  done
  FP_CONTROL=0 run_family ptq "grid_${gname}" "PTQ: calibrator x bits" "${meta[@]}" \
    "W rows=weights only; the column is the weight calibrator" \
    "WA rows=the column is the activation calibrator; weights $WA_WEIGHT_CALIBRATOR" || status=1
  : > "$CELLS_FILE"
fi

if [[ " $PARTS " == *" sequence "* ]]; then
  for bits in $SEQ_BITS; do
    row="W${bits}A${ACT_BITS}"
    flags=$(wa_flags "$bits")
    wcal="--weight-calibrator $WA_WEIGHT_CALIBRATOR $BATCHES"
    base="w${bits}a${ACT_BITS}_${gname}"
    # shellcheck disable=SC2086
    add_calib_cell ptq "$row" "PTQ" "ptq_${base}_pct${PTQ_PERCENTILE}_w${WA_WEIGHT_CALIBRATOR}" \
      "$(calib_flags "pct$PTQ_PERCENTILE") $wcal" $flags
    # shellcheck disable=SC2086
    add_calib_cell qat "$row" "QAT (from PTQ)" "qat_from_ptq_${base}_pct${QAT_PERCENTILE}" \
      "$(calib_flags "pct$QAT_PERCENTILE") $wcal" $flags
    # shellcheck disable=SC2046,SC2086
    add_calib_cell qat "$row" "QAT+KD (from PTQ)" "qat_from_ptq_${base}_pct${QAT_PERCENTILE}_$(kd_name "$KD_PARTS")" \
      "$(calib_flags "pct$QAT_PERCENTILE") $wcal" $flags $(kd_flags "$KD_PARTS")
    # shellcheck disable=SC2086
    add_cell "$row" "QAT (default init)" "lsq_${base}" $flags
  done
  run_family ptq "sequence_${gname}" "PTQ, then QAT and QAT+KD from the calibrated model (NVIDIA's BERT sequence)" \
    "${meta[@]}" "PTQ=percentile $PTQ_PERCENTILE" "QAT init=percentile $QAT_PERCENTILE" \
    "weights=$WA_WEIGHT_CALIBRATOR" "kd_parts=$KD_PARTS" || status=1
fi
exit "${status:-0}"
