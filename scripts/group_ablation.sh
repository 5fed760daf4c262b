#!/usr/bin/env bash
# LSQ weight quantization of each layer group and their combinations, at 4 and 2 bits
# (the seed's "Layer/bit" tables): plain fine-tuning loss, no KD.
#
#   scripts/group_ablation.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Grid (environment):
#   BITS    weight bit widths, one table row each          (default "4 2")
#   GROUP_SETS  group sets, one column each; '+' joins groups,
#           ALL = EMB+QKV+FFN ("All Together")              (default "FFN EMB QKV FFN+EMB EMB+QKV FFN+QKV ALL")
# Tables: python scripts/make_tables.py OUT_DIR   -> results/group_ablation_TASK.md (+ .png)
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

BITS=${BITS:-"4 2"}
GROUP_SETS=${GROUP_SETS:-"FFN EMB QKV FFN+EMB EMB+QKV FFN+QKV ALL"}

for bits in $BITS; do
  for label in $GROUP_SETS; do
    spec=$(groups_spec "$label")
    col=$label; [[ "$label" == ALL || "$label" == All ]] && col="All Together"
    # shellcheck disable=SC2046
    add_cell "${bits}bit" "$col" "lsq_w${bits}_$(groups_name "$spec")" $(lsq_flags "$bits" "$spec")
  done
done

run_family group_ablation "" "LSQ weight quantization per layer group" "quantizer=LSQ" "KD=none"
