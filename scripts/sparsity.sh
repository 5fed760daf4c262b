#!/usr/bin/env bash
# 2:4 structured sparsity, alone and with QAT and KD (NVIDIA ASP recipe; issue 15's family):
# per task and per set of sparse groups,
#   dense FP | 2:4 FP (sparse fine-tune) | 2:4 + W8A8 QAT | 2:4 + W8A8 QAT + KD | 2:4 + W4 QAT + KD
#
#   scripts/sparsity.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Every cell starts from the dense FP teacher. 2:4 FP: --sparse-groups G (masks computed from
# the teacher's weights as they load, then fine-tuned with the masks fixed). The QAT cells
# follow NVIDIA's order: qbert-calibrate of the teacher with --sparse-groups G (masks first,
# then the calibration sees the pruned weights: activations percentile QAT_PERCENTILE, weights
# W8_WEIGHT_CALIBRATOR / W4_WEIGHT_CALIBRATOR), then QAT (and KD) from that checkpoint with the
# same --sparse-groups (masks fixed). W4 = 4-bit weights, activations not quantized.
# Table (python scripts/make_tables.py OUT_DIR): sparsity_QUANTGROUPS.md, one row per task and
# sparse group set, next to the FP teacher and the FP control.
#
# Environment (besides the recipe variables of scripts/lib/qat_runner.py):
#   SPARSE_GROUP_SETS (default "FFN QKV,FFN")   QUANT_GROUPS (EMB,QKV,FFN)   ACT_BITS (8)
#   PERMUTE (0; 1 adds --sparse-permute)   KD_PARTS (trm,logits)   QAT_PERCENTILE (99.99)
#   CALIB_BATCHES (16)   CALIB_BATCH_SIZE (16)   W8_WEIGHT_CALIBRATOR (max)   W4_WEIGHT_CALIBRATOR (mse)
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

SPARSE_GROUP_SETS=${SPARSE_GROUP_SETS:-"FFN QKV,FFN"}
QUANT_GROUPS=${QUANT_GROUPS:-EMB,QKV,FFN}
ACT_BITS=${ACT_BITS:-8}
PERMUTE=${PERMUTE:-0}
KD_PARTS=${KD_PARTS:-trm,logits}
QAT_PERCENTILE=${QAT_PERCENTILE:-99.99}
CALIB_BATCHES=${CALIB_BATCHES:-16}
CALIB_BATCH_SIZE=${CALIB_BATCH_SIZE:-16}
W8_WEIGHT_CALIBRATOR=${W8_WEIGHT_CALIBRATOR:-max}
W4_WEIGHT_CALIBRATOR=${W4_WEIGHT_CALIBRATOR:-mse}
case "$PERMUTE" in 0|1) ;; *) echo "error: PERMUTE=$PERMUTE; expected 0 or 1" >&2; exit 2 ;; esac
spec=$(groups_spec "${QUANT_GROUPS//,/+}")
gname=$(groups_name "$spec")
BATCHES="--num-calib-batches $CALIB_BATCHES --batch-size $CALIB_BATCH_SIZE"
ACT_CALIB="--calibrator percentile --percentile $QAT_PERCENTILE"

# add_calib_cell ROW COL NAME "CALIB FLAGS" FLAGS...   (QAT from a qbert-calibrate checkpoint)
add_calib_cell() {
  local row=$1 col=$2 name=$3 calib=$4; shift 4
  printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$col" "$name" "$*" "qat $calib" >> "$CELLS_FILE"
}

for sgroups in $SPARSE_GROUP_SETS; do
  sspec=$(groups_spec "${sgroups//,/+}") || exit 2
  sflags="--sparse-groups $sspec"
  sname="sp24_$(groups_name "$sspec")"
  if [[ "$PERMUTE" == 1 ]]; then sflags+=" --sparse-permute"; sname+="_perm"; fi
  row=$sspec
  # shellcheck disable=SC2086
  add_cell "$row" "2:4 FP" "${sname}_fp" $sflags
  w8="$(lsq_flags 8 "$spec") --act-bits $ACT_BITS"
  w8cal="$ACT_CALIB --weight-calibrator $W8_WEIGHT_CALIBRATOR $BATCHES"
  base8="${sname}_w8a${ACT_BITS}_${gname}_pct${QAT_PERCENTILE}_w${W8_WEIGHT_CALIBRATOR}"
  # shellcheck disable=SC2086
  add_calib_cell "$row" "2:4 + W8A${ACT_BITS} QAT" "$base8" "$w8cal" $sflags $w8
  # shellcheck disable=SC2046,SC2086
  add_calib_cell "$row" "2:4 + W8A${ACT_BITS} QAT+KD" "${base8}_$(kd_name "$KD_PARTS")" "$w8cal" \
    $sflags $w8 $(kd_flags "$KD_PARTS")
  w4=$(lsq_flags 4 "$spec")
  w4cal="--calibrator max --weight-calibrator $W4_WEIGHT_CALIBRATOR $BATCHES"
  # shellcheck disable=SC2046,SC2086
  add_calib_cell "$row" "2:4 + W4 QAT+KD" "${sname}_w4_${gname}_w${W4_WEIGHT_CALIBRATOR}_$(kd_name "$KD_PARTS")" \
    "$w4cal" $sflags $w4 $(kd_flags "$KD_PARTS")
done

variant=$gname
title="2:4 structured sparsity with QAT and KD (NVIDIA ASP recipe)"
if [[ "$PERMUTE" == 1 ]]; then variant+="_perm"; title+=", input-channel permutation"; fi
run_family sparsity "$variant" "$title" \
  "quantized groups=$spec" "quantizer=LSQ" "QAT init=qbert-calibrate of the teacher after pruning (activations percentile $QAT_PERCENTILE; weights W8 $W8_WEIGHT_CALIBRATOR, W4 $W4_WEIGHT_CALIBRATOR)" \
  "kd_parts=$KD_PARTS" "channel permutation=$([[ "$PERMUTE" == 1 ]] && echo yes || echo no)"
