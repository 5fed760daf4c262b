"""Length-adaptive quant_roberta end to end: the encoder's selection on real fairseq models,
the flags' one-line errors, a tiny ``fairseq-train`` run with LengthDrop (W8A8 QKV/FFN) that
learns its task, and ``qbert-length-search`` on it (run through ``python -m``), resumed."""
import json
import random
import subprocess
import sys

import pytest
import torch
from kd_fixtures import (
    REPO,
    ROBERTA_TINY,
    SP,
    TINY,
    USER_DIR,
    _preprocess,
    batch,
    build,
    data_dir,
    make_teacher,
    subprocess_env,
    task_flags,
    workdir,
)

HEAD = "sentence_classification_head"
QUANT_TINY = ["--arch", "quant_roberta", *TINY]


# ---------------------------------------------------------------------------- in-process model
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg, task, model, _ = build(data_dir("cls"), [*task_flags("cls"), *QUANT_TINY,
                                                  "--criterion", "sentence_prediction"], criterion=False)
    model.register_classification_head(HEAD, num_classes=2)
    return task, model.eval()


def _forward(model, tokens, **kw):
    with torch.no_grad():
        logits, extra = model(tokens, features_only=True, classification_head_name=HEAD, **kw)
    return logits, extra


def test_full_length_config_is_the_plain_model_bit_for_bit(tiny):
    from fairseq_qbert.models.length_adaptive import set_length_config

    task, model = tiny
    tokens = batch(task, "valid", 8)["net_input"]["src_tokens"]
    assert tokens.eq(task.source_dictionary.pad()).any()  # padded batch
    plain, plain_extra = _forward(model, tokens, return_all_hiddens=True)
    try:
        set_length_config(model, (128, 128))  # = --max-positions: every token kept
        full, full_extra = _forward(model, tokens, return_all_hiddens=True)
    finally:
        set_length_config(model, None)
    assert torch.equal(plain, full)
    assert all(torch.equal(a, b) for a, b in zip(plain_extra["inner_states"], full_extra["inner_states"]))


def test_selection_keeps_s_drops_padding_first_and_changes_the_output(tiny, monkeypatch):
    from fairseq_qbert.models import length_adaptive
    from qbert.lat import selection

    task, model = tiny
    pad = task.source_dictionary.pad()
    tokens = batch(task, "valid", 8)["net_input"]["src_tokens"]
    real = tokens.ne(pad).sum(1)
    seen = []
    original = selection.select_tokens

    def spy(scores, keep, padding_mask=None):
        kept = original(scores, keep, padding_mask)
        seen.append((kept, padding_mask))
        return kept

    monkeypatch.setattr(length_adaptive, "select_tokens", spy)
    plain, _ = _forward(model, tokens)
    keep = int(real.min())
    try:
        length_adaptive.set_length_config(model, (keep, 2))
        short, extra = _forward(model, tokens, return_all_hiddens=True)
    finally:
        length_adaptive.set_length_config(model, None)
    assert len(seen) == 2
    first, mask = seen[0]
    assert first.shape == (tokens.size(0), keep) and first[:, 0].eq(0).all()  # <s> kept
    assert not mask.gather(1, first).any()  # every row has >= keep real tokens: no padding kept
    assert seen[1][0].shape == (tokens.size(0), 2) and seen[1][0][:, 0].eq(0).all()
    assert extra["inner_states"][-1].shape == extra["inner_states"][0].shape  # restored length
    assert not torch.allclose(plain, short)


def test_length_flags_are_one_line_errors():
    from qbert.errors import UsageError

    common = [*task_flags("cls"), *QUANT_TINY]
    cases = [(["--length-config", "(10,9,8)"], "3 values for a model with 2 layers"),
             (["--length-config", "(200,9)"], "maximum of 128 positions"),
             (["--layer-dropout-prob", "1.5"], "--layer-dropout-prob")]  # the rest: unit tests
    for extra, message in cases:
        with pytest.raises(UsageError) as e:
            build(data_dir("cls"), [*common, *extra, "--criterion", "sentence_prediction"],
                  criterion=False)
        assert message in e.value.message and "\n" not in e.value.message
    with pytest.raises(UsageError, match="--num-sandwich must be >= 0"):
        build(data_dir("cls"), [*common, "--criterion", "length_drop_sentence_prediction",
                                "--num-sandwich", "-1"])


# ---------------------------------------------------------------------------- training + search
def _easy_data():
    """Sentences of filler words with one marker word deciding the label (learnable fast)."""
    raw, out = workdir() / "raw_lat", workdir() / "bin_lat"
    if (out / "label" / "dict.txt").is_file():
        return str(out)
    raw.mkdir(exist_ok=True)
    rng = random.Random(3)
    for split, n in (("train", 320), ("valid", 64)):
        lines, labels = [], []
        for _ in range(n):
            words = [f"w{rng.randint(1, 30)}" for _ in range(rng.randint(3, 18))]
            label = rng.randint(0, 1)
            words.insert(rng.randint(0, len(words)), ("bad", "good")[label])
            lines.append(" ".join(words))
            labels.append(str(label))
        (raw / f"{split}.input0").write_text("\n".join(lines) + "\n")
        (raw / f"{split}.label").write_text("\n".join(labels) + "\n")
    for sub in ("input0", "label"):
        _preprocess(["--only-source", "--workers", "1", "--trainpref", str(raw / f"train.{sub}"),
                     "--validpref", str(raw / f"valid.{sub}"), "--destdir", str(out / sub)])
    return str(out)


@pytest.fixture(scope="module")
def length_drop_run():
    """fairseq-train, LengthDrop with the sandwich rule, LayerDrop, W8A8 on QKV and FFN."""
    data = _easy_data()
    save = workdir() / "lat_run"
    cmd = [str(REPO / ".venv/bin/fairseq-train") if (REPO / ".venv/bin/fairseq-train").exists()
           else "fairseq-train", data, "--user-dir", USER_DIR, *SP, "--num-classes", "2",
           *QUANT_TINY, "--quant-groups", "QKV,FFN", "--weight-bits", "8", "--act-bits", "8",
           "--criterion", "length_drop_sentence_prediction", "--num-sandwich", "1",
           "--length-drop-ratio-bound", "0.3", "--layer-dropout-prob", "0.1",
           "--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32", "--max-update", "30",
           "--cpu", "--save-dir", str(save), "--no-epoch-checkpoints", "--no-last-checkpoints",
           "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
           "--log-format", "simple", "--log-interval", "10", "--seed", "1", "--num-workers", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data, save / "checkpoint_best.pt", proc.stdout + proc.stderr


def _valid_accuracies(log):
    import re

    return [float(a) for a in re.findall(r"valid on 'valid' subset .*?\| accuracy ([\d.]+)", log)]


def test_length_drop_training_learns(length_drop_run):
    _data, ckpt, log = length_drop_run
    assert ckpt.is_file()
    assert "ld_smallest" in log and "ld_sub" in log and "qw_scale_QKV" in log  # W8 QAT on
    assert max(_valid_accuracies(log)) >= 85, _valid_accuracies(log)


SEARCH = ["--population-size", "4", "--mutation-size", "4", "--crossover-size", "3",
          "--seed", "2", "--cpu", "--batch-size", "64"]


def _records(out):
    return json.loads((out / "store.json").read_text())["records"]


def test_search_cli_front_and_resume(length_drop_run):
    from fairseq_qbert.lat import search_cli

    data, ckpt, _ = length_drop_run
    out = workdir() / "search"
    argv = [data, "--path", str(ckpt), "--out", str(out), "--evo-iter", "1",
            "--max-metric-drop", "5", *SEARCH]
    proc = subprocess.run([sys.executable, "-m", "fairseq_qbert.lat.search_cli", *argv],
                          capture_output=True, text=True, cwd=str(REPO), env=subprocess_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning" not in proc.stderr  # trained with LengthDrop
    for name in ("store.tsv", "store.json", "pareto.tsv", "pareto.json", "pareto.png", "summary.json"):
        assert (out / name).is_file(), name
    assert "best under --max-metric-drop 5" in proc.stdout and "--length-config" in proc.stdout
    first = _records(out)
    summary = json.loads((out / "summary.json").read_text())
    full = max(first, key=lambda r: r["cost"])
    assert summary["full"]["gene"] == full["gene"] and len(set(full["gene"])) == 1
    assert summary["front"] and all(r["cost"] <= full["cost"] for r in summary["front"])
    assert summary["best"]["score"] >= full["score"] - 5
    smallest = min(first, key=lambda r: r["cost"])
    assert smallest["score"] >= 70, (smallest, full)  # the LengthDrop-trained sub-model works

    # resume: the same search again replays from the store and evaluates nothing
    again = search_cli.main(argv)
    assert again["evaluated"] == 0 and again["store_size"] == len(first)
    assert _records(out) == first and again["front"] == summary["front"]
    # (resuming into *more* iterations = the longer search: tests/unit/lat/test_search.py)


def _plain_checkpoint():
    """A plain fairseq ``roberta`` checkpoint (random weights) whose criterion reports MCC."""
    return make_teacher("lat_plain", [*ROBERTA_TINY, "--report-mcc"])


def test_search_warns_on_a_checkpoint_trained_without_length_drop(capsys):
    from fairseq_qbert.lat import search_cli

    out = workdir() / "search_plain"
    plain = _plain_checkpoint()
    summary = search_cli.main([data_dir("cls"), "--path", plain, "--out", str(out),
                               "--evo-iter", "0", "--population-size", "2", "--cpu"])
    err = capsys.readouterr().err
    assert "warning" in err and "not trained with LengthDrop" in err
    assert summary["store_size"] >= 2
    # its criterion reports MCC (fairseq then also logs pred/targ lists): scored by MCC
    assert json.loads((out / "store.json").read_text())["meta"]["metric"] == "mcc"


def test_no_attention_weights_without_a_config_and_layerdrop_only_in_training(tiny, monkeypatch):
    from fairseq_qbert.models.length_adaptive import the_encoder
    from fairseq_qbert.models.quant_attention import QuantMultiheadAttention

    task, model = tiny
    calls = []
    original = QuantMultiheadAttention.forward

    def spy(self, *args, need_weights=True, **kwargs):
        calls.append(need_weights)
        return original(self, *args, need_weights=need_weights, **kwargs)

    monkeypatch.setattr(QuantMultiheadAttention, "forward", spy)
    monkeypatch.setattr(the_encoder(model), "layer_dropout_prob", 0.5)  # --layer-dropout-prob 0.5
    tokens = batch(task, "valid", 4)["net_input"]["src_tokens"]
    _forward(model, tokens)
    assert calls == [False, False]  # eval: fairseq's own layer forward, no probabilities asked for
    counts = []
    try:
        model.train()
        for _ in range(30):
            calls.clear()
            _forward(model, tokens)
            counts.append(len(calls))
    finally:
        model.eval()
    assert set(counts) <= {0, 1, 2} and 0.5 < sum(counts) / len(counts) < 1.5  # about 1 of 2 layers
    assert not any(calls)  # LayerDrop alone selects nothing


def test_search_cli_errors_are_one_line(tmp_path):
    from fairseq_qbert.lat import search_cli
    from qbert.errors import UsageError

    with pytest.raises(UsageError, match="--path .*no such checkpoint file"):
        search_cli.cli_main([data_dir("cls"), "--path", str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="--mutation-prob must be in"):
        search_cli.cli_main([data_dir("cls"), "--path", _plain_checkpoint(),
                             "--out", str(tmp_path), "--mutation-prob", "2"])


def test_length_drop_with_an_external_teacher():
    """kd_sentence_prediction teaches the full model; the sub-models learn from the full one."""
    teacher = _plain_checkpoint()
    torch.manual_seed(0)
    _cfg, task, model, crit = build(data_dir("cls"), [
        *task_flags("cls"), *QUANT_TINY, "--criterion", "length_drop_sentence_prediction",
        "--teacher-path", teacher, "--kd-parts", "logits", "--num-sandwich", "1"])
    model.register_classification_head(HEAD, num_classes=2)
    model.train()
    loss, size, log = crit(model, batch(task, "train", 8))
    assert size == 8 and "kd_logits" in log and {"ld_full", "ld_smallest", "ld_sub"} <= set(log)
    assert log["ld_full"] > 0 and log["ld_smallest"] >= 0
    expected = (log["ld_full"] + log["ld_smallest"] + log["ld_sub"]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.classification_heads[HEAD].out_proj.weight.grad.abs().sum() > 0


def test_search_measures_the_latency_of_the_onnx_export(monkeypatch, capsys):
    """--measure-latency times the export with each configuration baked in (full = the plain
    graph), records latency_ms, and a resumed search with the same settings measures nothing."""
    from fairseq_qbert.lat import search_cli
    from qbert.export import length

    calls = []
    original = length.measure_latency

    def spy(export, config, batches, threads=1, repeats=3, mode="exact"):
        calls.append((config, threads, repeats, sum(len(b) for b in batches)))
        return original(export, config, batches, threads, repeats, mode)

    monkeypatch.setattr(length, "measure_latency", spy)
    out = workdir() / "search_latency"
    argv = [data_dir("cls"), "--path", _plain_checkpoint(), "--out", str(out), "--evo-iter", "0",
            "--population-size", "2", "--cpu", "--measure-latency", "--latency-repeats", "1"]
    summary = search_cli.main(argv)
    records = _records(out)
    init = [r for r in records if r["method"] == "init"]
    assert len(calls) == len({tuple(r["gene"]) for r in init} | {tuple(r["gene"]) for r in summary["front"]})
    full = tuple(summary["full"]["gene"])
    assert (None, 1, 1, 32) in calls and all(c[0] != full for c in calls)  # full: the plain graph
    assert all(r["extra"]["latency_ms"] > 0 for r in init)
    assert summary["latency"]["onnx_mb"] > 0 and summary["latency"]["threads"] == 1
    assert "latency_ms" in (out / "store.tsv").read_text().splitlines()[0]
    assert "ms/sentence" in capsys.readouterr().out
    calls.clear()
    search_cli.main(argv)
    assert calls == [] and _records(out) == records
