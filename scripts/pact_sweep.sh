#!/usr/bin/env bash
# PACT weight quantization of the FFN at 4 bits over the clip's initial value, learning-rate
# scale and weight decay (the seed's PACT table).
#
#   scripts/pact_sweep.sh TASK DATA_BIN TEACHER OUT_DIR [DEVICE]
#
# Environment:
#   PACT_GRID  rows "INIT_CLIP:LR_SCALE:WEIGHT_DECAY ..." (default: the seed's rows
#              "1:1000:0.5 1:100:0.5 1:10:0.4")
#   BITS (default 4)   QUANT_GROUPS (--quant-groups, default FFN)
# Tables: python scripts/make_tables.py OUT_DIR   -> results/pact_sweep_TASK.md
source "$(dirname "${BASH_SOURCE[0]}")/lib/family_common.sh"
family_init "$@"

PACT_GRID=${PACT_GRID:-"1:1000:0.5 1:100:0.5 1:10:0.4"}
BITS=${BITS:-4}
QUANT_GROUPS=${QUANT_GROUPS:-FFN}
spec=$(groups_spec "${QUANT_GROUPS//,/+}")

for row in $PACT_GRID; do
  IFS=: read -r clip scale wd <<< "$row"
  if [[ -z "$clip" || -z "$scale" || -z "$wd" ]]; then
    echo "error: PACT_GRID row '$row'; expected INIT_CLIP:LR_SCALE:WEIGHT_DECAY" >&2; exit 2
  fi
  add_cell "$clip:$scale:$wd" "metric" "pact_w${BITS}_$(groups_name "$spec")_c${clip}_s${scale}_wd${wd}" \
    --quant-groups "$spec" --weight-bits "$BITS" --weight-quantizer pact \
    --pact-init-clip "$clip" --pact-lr-scale "$scale" --pact-weight-decay "$wd"
done

variant=""
[[ "$BITS" != 4 || "$spec" != FFN ]] && variant="w${BITS}_$(groups_name "$spec")"
run_family pact_sweep "$variant" "${BITS}bit PACT weight quantization on $spec" "bits=$BITS" "groups=$spec" \
  "quantizer=PACT"
