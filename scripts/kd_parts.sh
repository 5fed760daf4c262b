#!/usr/bin/env bash
# Which part of the teacher to distil (the seed's "KD Effects (Different Part Applied)"
# table): LSQ at BITS on QUANT_GROUPS, without KD and with KD on each of PARTS.
#
#   scripts/kd_parts.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Environment:
#   BITS    (default 2)    QUANT_GROUPS (--quant-groups, default EMB,QKV,FFN; FFN gives the seed's
#                                   "FFN 2bit" table)
#   PARTS   --kd-parts values, one column each; none = -KD (plain loss)
#           (default "none trm,logits logits trm output attn":
#            -KD | KD(Trm+Logits) | Logits | Trm | Output | Atts)
#   AUG     auto (default): a "KD + aug" column after KD(Trm+Logits) -- trm,logits on train plus
#           its TinyBERT-augmented rows -- when a pretrained masked LM is known; 0: none; 1: always
#   AUG_N AUG_TOP_K AUG_P AUG_SEED AUG_PRETRAINED: the augmentation (scripts/lib/qat_runner.py)
# Tables: python scripts/make_tables.py OUT_DIR   -> results/kd_parts_w2_EMB-QKV-FFN.md (one row per task)
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

BITS=${BITS:-2}
QUANT_GROUPS=${QUANT_GROUPS:-EMB,QKV,FFN}
PARTS=${PARTS:-"none trm,logits logits trm output attn"}
spec=$(groups_spec "${QUANT_GROUPS//,/+}")
base="lsq_w${BITS}_$(groups_name "$spec")"

with_aug=0; [[ " $PARTS " == *" trm,logits "* ]] && aug_column && with_aug=1
for parts in $PARTS; do
  name=$base; [[ "$parts" != none ]] && name="${base}_$(kd_name "$parts")"
  # shellcheck disable=SC2046
  add_cell "$TASK" "$(kd_label "$parts")" "$name" $(lsq_flags "$BITS" "$spec") $(kd_flags "$parts")
  if [[ "$parts" == trm,logits && "$with_aug" == 1 ]]; then  # next to KD(Trm+Logits)
    # shellcheck disable=SC2046
    add_cell "$TASK" "KD + aug" "${name}_aug" $(lsq_flags "$BITS" "$spec") $(kd_flags "$parts") $(aug_flags)
  fi
done

# one table per (bits, groups)
run_family kd_parts "w${BITS}_$(groups_name "$spec")" \
  "${BITS}bit quantization ($spec) KD effects (different part applied)" \
  "bits=$BITS" "groups=$spec" "quantizer=LSQ"
