"""README: per layer group, every logged training forward reports the mean weight /
activation step size or clip (``qw_scale_G``, ``qa_scale_G``) and the mean fraction of
clipped values (``qw_clipped_G``, ``qa_clipped_G``). Here both are recomputed from each
quantizer's own parameters and from the tensors it actually received in that forward."""
import pytest
import torch
from fairseq.logging import metrics
from model_utils import HEAD, build
from train_probe import group_means, group_of, quantizer_stats, role_of

from qbert.quant.base import Quantizer

GROUPS = "EMB:2,QKV:4,FFN:3,HEAD:4"


@pytest.mark.parametrize("flags", [
    ["--weight-quantizer", "lsq", "--lsq-per-channel", "--act-quantizer", "lsq"],
    ["--weight-quantizer", "pact", "--act-quantizer", "pact", "--pact-init-clip", "0.03"],
    ["--weight-quantizer", "minmax", "--act-quantizer", "ema"],
], ids=["lsq", "pact", "minmax-ema"])
def test_logged_group_statistics_are_the_quantizers_values(flags):
    torch.manual_seed(0)
    model = build(extra=["--quant-groups", GROUPS, "--act-bits", "4", "--optimizer", "adam", *flags])
    model.train()
    batches = []
    for seed, length in ((1, 12), (2, 16)):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(4, 100, (4, length), generator=g)
        x[:, 0] = 0
        x[1, 7:] = 1
        batches.append(x)
    model(batches[0], classification_head_name=HEAD)  # initialises; EMA sees a second batch next
    seen = {}
    handles = [q.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (m, i[0])))
               for name, q in model.named_modules() if isinstance(q, Quantizer)]
    with metrics.aggregate(new_root=True) as agg:
        model(batches[1], classification_head_name=HEAD)
    for h in handles:
        h.remove()
    logged = {k: v for k, v in agg.get_smoothed_values().items() if k.startswith("q")}

    records = {}
    for name, (q, inp) in seen.items():
        scale, clipped = quantizer_stats(q, inp)
        records[name] = dict(group=group_of(name), role=role_of(name), scale=scale, clipped=clipped)
    # 2 layers: EMB 2 tables; QKV 4 + 4 inputs, FFN 2 + 2 inputs per layer; HEAD 2 + 2
    counts = {}
    for r in records.values():
        key = f"q{r['role']}_{r['group']}"
        counts[key] = counts.get(key, 0) + 1
    assert counts == {"qw_EMB": 2, "qw_QKV": 8, "qa_QKV": 8, "qw_FFN": 4, "qa_FFN": 4,
                      "qw_HEAD": 2, "qa_HEAD": 2}
    expected = group_means(records)
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=5.1e-5), key  # logged rounded to 4 places
    assert any(logged[k] > 1e-3 for k in logged if "_clipped_" in k), logged  # not all trivially 0
