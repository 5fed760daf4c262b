"""The "KD + aug" column of the kd_effect and kd_parts tables (make_tables) from fake run
directories (no training here): next to KD, the seed's columns and their order otherwise kept,
values and per-seed means from result.json, the augmentation's parameters named under the
table, the plot, and plans without the column (older runs) still giving the seed's table."""
import json

import pytest

from qbert.experiments import runner, tables

AUG = {"n_aug": 4, "top_k": 15, "replace_prob": 0.4, "seed": 1, "source": "train",
       "split": "train_aug_n4_k15_p0.4_s1", "pretrained": "/w/pretrain/model.pt"}
BASE = ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", "2", "--weight-quantizer", "lsq"]
KD = ["--criterion", "kd_sentence_prediction", "--teacher-path", "/t.pt", "--kd-parts", "trm,logits"]
AUG_FLAGS = ["--task", "sentence_prediction_aug", "--train-subset", AUG["split"]]


def _run(out, rel, best, flags, kind="qat", metric="accuracy", seed="1"):
    d = out / rel
    d.mkdir(parents=True)
    result = {"version": 1, "kind": kind, "task": rel.split("/")[1], "flags": flags, "metric": metric,
              "best": best, "arch": "quant_roberta_tiny" if kind == "qat" else "roberta",
              "model_config": {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
                               "encoder_attention_heads": 4},
              "teacher_init": "/w/pretrain/model.pt" if kind == "fp" else None, "data_kind": "mini",
              "device": "cpu",
              "hparams": {"LR": "5e-04", "TOTAL_NUM_UPDATES": "250", "WARMUP_UPDATES": "15", "MAX_EPOCH": "0",
                          "MAX_SENTENCES": "32", "SEED": seed} if kind == "qat" else {},
              "git_commit": "0123456789abcdef", "git_dirty": False}
    (d / "result.json").write_text(json.dumps(result))
    (d / "DONE").write_text("x\n")
    return rel


def _plan(out, family, variant, task, metric, fp, ctl, cols, seeds=("1",)):
    """A plan like run_family writes, with fake finished runs: cols = [(col, flags, [best per seed])]."""
    cells = []
    for n, (col, flags, bests) in enumerate(cols):
        runs = [_run(out, f"runs/{task}/{family}-{n}-s{seed}", best, flags, metric=metric, seed=seed)
                for seed, best in zip(seeds, bests)]
        cell = {"row": task, "col": col, "run": runs[0], "runs": runs, "flags": flags}
        if "--train-subset" in flags:
            cell["augment"] = AUG
        cells.append(cell)
    ctl_runs = [_run(out, f"runs/{task}/{family}-ctl-s{seed}", ctl, [], metric=metric, seed=seed) for seed in seeds]
    plan = {"family": family, "variant": variant, "task": task, "title": f"{family} title",
            "meta": {"bits": "2"}, "device": "cpu", "data_kind": "mini", "metric": metric,
            "baseline": _run(out, f"fp/{task}/teacher-{family}", fp, [], kind="fp", metric=metric),
            "seeds": list(seeds), "control": ctl_runs[0], "control_runs": ctl_runs,
            "rows": [task], "cols": [c for c, _, _ in cols], "cells": cells}
    (out / "plans").mkdir(exist_ok=True)
    (out / "plans" / f"{family}_{variant}__{task}.json").write_text(json.dumps(plan))


def _table(path):
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("--"))
    rows = [line.split(" | ") for line in lines[start + 1:] if " | " in line]
    return lines[start - 1].split(" | "), rows


def _kd_effect(out, aug=True):
    for task, metric, fp, ctl, nokd, kd, kd_aug in (("SST-2", "accuracy", 95.6, 95.4, [94.0, 94.2, 94.4],
                                                     [95.0, 95.0, 95.3], [95.5, 95.4, 95.3]),
                                                    ("CoLA", "mcc", 75.5, 75.1, [70.0, 71.0, 72.0],
                                                     [73.0, 73.0, 73.0], [74.1, 74.2, 74.3])):
        cols = [("-KD", BASE, nokd), ("KD", BASE + KD, kd)] + ([("KD + aug", BASE + KD + AUG_FLAGS, kd_aug)]
                                                             if aug else [])
        _plan(out, "kd_effect", "w2_EMB-QKV-FFN", task, metric, fp, ctl, cols, seeds=("1", "2", "3"))


def test_kd_effect_table_has_kd_plus_aug_next_to_kd_and_keeps_the_seed_shape(tmp_path):
    out, results = tmp_path / "exp", tmp_path / "results"
    _kd_effect(out)
    written = tables.make([str(out)], str(results), plots=True)
    md = results / "kd_effect_w2_EMB-QKV-FFN.md"
    header, rows = _table(md)
    assert header == ["Task", "FP", "FP ctl", "-KD", "KD", "KD + aug", "KD Effect", "Diff with FP"]
    assert [r[0] for r in rows] == ["SST-2", "CoLA"]  # the seed's task order
    # means over the seeds; KD Effect and Diff with FP stay defined on the KD column (the seed's)
    assert rows[0][1:] == ["95.6", "95.4(-0.2)", "94.2", "95.1", "95.4", "+0.9", "0.5"]
    assert rows[1][1:] == ["75.5", "75.1(-0.4)", "71.0", "73.0", "74.2", "+2.0", "2.5"]
    text = md.read_text()
    assert "KD + aug = the KD column's run trained on `train` plus its TinyBERT-style augmented rows" in text
    assert "N 4, K 15, P 0.4, seed 1" in text and "`pretrain/model.pt`" in text
    cells = json.loads((results / "kd_effect_w2_EMB-QKV-FFN.json").read_text())["cells"]
    aug = next(c for c in cells if c["task"] == "CoLA" and c["col"] == "KD + aug")
    assert aug["values"] == [74.1, 74.2, 74.3] and aug["value"] == pytest.approx(74.2)
    assert aug["flags"][-2:] == ["--train-subset", AUG["split"]] and len(aug["runs"]) == 3
    assert [c["col"] for c in cells if c["task"] == "SST-2"] == ["FP", "FP ctl", "-KD", "KD", "KD + aug"]
    png = results / "kd_effect_w2_EMB-QKV-FFN.png"
    assert str(png) in written and png.read_bytes()[:4] == b"\x89PNG"


def test_kd_effect_without_the_column_is_the_seed_table(tmp_path):
    out, results = tmp_path / "exp", tmp_path / "results"
    _kd_effect(out, aug=False)
    tables.make([str(out)], str(results), plots=False)
    header, rows = _table(results / "kd_effect_w2_EMB-QKV-FFN.md")
    assert header == ["Task", "FP", "FP ctl", "-KD", "KD", "KD Effect", "Diff with FP"]
    assert rows[0][1:] == ["95.6", "95.4(-0.2)", "94.2", "95.1", "+0.9", "0.5"]
    assert "KD + aug" not in (results / "kd_effect_w2_EMB-QKV-FFN.md").read_text()


def test_kd_parts_table_has_kd_plus_aug_after_kd_trm_logits(tmp_path):
    out, results = tmp_path / "exp", tmp_path / "results"
    for task, fp, base in (("CoLA", 75.5, 70.0), ("RTE", 67.7, 66.0)):
        cols = [("-KD", BASE, [base]), ("KD(Trm+Logits)", BASE + KD, [base + 1]),
                ("KD + aug", BASE + KD + AUG_FLAGS, [base + 1.5]),
                ("Logits", BASE + KD[:-1] + ["logits"], [base + 0.5])]
        _plan(out, "kd_parts", "w2_EMB-QKV-FFN", task, "mcc" if task == "CoLA" else "accuracy", fp, fp - 0.3, cols)
    tables.make([str(out)], str(results), plots=True)
    header, rows = _table(results / "kd_parts_w2_EMB-QKV-FFN.md")
    assert header == ["", "FP", "FP ctl", "-KD", "KD(Trm+Logits)", "KD + aug", "Logits"]
    assert rows[0] == ["CoLA", "75.5", "75.2(-0.3)", "70.0", "71.0(+1.0)", "71.5(+1.5)", "70.5(+0.5)"]
    assert rows[1][0] == "RTE" and rows[1][5] == "67.5(+1.5)"
    assert "KD + aug = the KD column's run" in (results / "kd_parts_w2_EMB-QKV-FFN.md").read_text()
    assert (results / "kd_parts_w2_EMB-QKV-FFN.png").read_bytes()[:4] == b"\x89PNG"


def test_an_aug_cell_gets_its_split_name_and_augment_spec_from_the_env(tmp_path):
    """build_spec's part of a KD + aug cell (no run): AUG_* in the split name and the hash."""
    pre = tmp_path / "model.pt"
    pre.write_bytes(b"x")
    env = {"AUG_PRETRAINED": str(pre)}
    flags, aug = runner.augment_flags(BASE + ["--train-subset", "train_aug"], "/t.pt", "", env)
    assert flags[-1] == "train_aug_n4_k15_p0.4_s1" and aug["source"] == "train"
    assert aug == dict(AUG, pretrained=str(pre))
    flags, aug = runner.augment_flags(["--train-subset", "train_aug"], "/t.pt", "300",
                                      dict(env, AUG_N="20", AUG_P="0.25", AUG_SEED="7"))
    assert flags == ["--train-subset", "train300_aug_n20_k15_p0.25_s7"] and aug["source"] == "train300"
    with pytest.raises(runner.RunnerError, match="AUG_N=0"):
        runner.augment_flags(["--train-subset", "train_aug"], "/t.pt", "", dict(env, AUG_N="0"))
    with pytest.raises(runner.RunnerError, match="expected integers"):
        runner.aug_params({"AUG_TOP_K": "x"})
    with pytest.raises(runner.RunnerError, match="not found"):
        runner.augment_flags(["--train-subset", "train_aug"], "/t.pt", "", {"AUG_PRETRAINED": "/no/such.pt"})
    spec = {"kind": "qat", "task": "SST-2", "data_bin": "/d", "teacher": "/t.pt", "device": "cpu",
            "flags": flags, "hparams": {"SEED": "1"}}
    other = dict(spec, augment=dict(aug, n_aug=21))
    assert runner.spec_hash(dict(spec, augment=aug)) != runner.spec_hash(other) != runner.spec_hash(spec)
