#!/usr/bin/env bash
# Effect of knowledge distillation on low-bit QAT (the seed's "KD Effects" table):
# LSQ at BITS on QUANT_GROUPS, once with the plain loss (-KD) and once with KD on KD_PARTS.
#
#   scripts/kd_effect.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Environment:  BITS (default 2)   QUANT_GROUPS (--quant-groups, default EMB,QKV,FFN)
#               KD_PARTS (--kd-parts of the KD run, default trm,logits)
#               AUG (auto: the "KD + aug" column -- KD on train plus its TinyBERT-augmented rows --
#                    when a pretrained masked LM is known; 0: without it; 1: always)
#               AUG_N AUG_TOP_K AUG_P AUG_SEED AUG_PRETRAINED: the augmentation (qat_runner.py)
# Tables: python scripts/make_tables.py OUT_DIR   -> results/kd_effect_w2_EMB-QKV-FFN.md (one row per task)
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

BITS=${BITS:-2}
QUANT_GROUPS=${QUANT_GROUPS:-EMB,QKV,FFN}
KD_PARTS=${KD_PARTS:-trm,logits}
spec=$(groups_spec "${QUANT_GROUPS//,/+}")
base="lsq_w${BITS}_$(groups_name "$spec")"

# shellcheck disable=SC2046
add_cell "$TASK" "-KD" "$base" $(lsq_flags "$BITS" "$spec")
# shellcheck disable=SC2046
add_cell "$TASK" "KD" "${base}_$(kd_name "$KD_PARTS")" $(lsq_flags "$BITS" "$spec") $(kd_flags "$KD_PARTS")
if aug_column; then
  # shellcheck disable=SC2046
  add_cell "$TASK" "KD + aug" "${base}_$(kd_name "$KD_PARTS")_aug" $(lsq_flags "$BITS" "$spec") \
    $(kd_flags "$KD_PARTS") $(aug_flags)
fi

variant="w${BITS}_$(groups_name "$spec")"
[[ "$KD_PARTS" != trm,logits ]] && variant+="_$(kd_name "$KD_PARTS")"
run_family kd_effect "$variant" "${BITS}bit weight quantization KD effects" "bits=$BITS" "groups=$spec" \
  "quantizer=LSQ" "kd_parts=$KD_PARTS"
