"""GLUE -> fairseq binaries: whitespace (mini-GLUE) and GPT-2 BPE (real GLUE) paths."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ALL_TASKS, SMALL_SIZES, read_tsv

PAIR_TASKS = {"MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE"}
# fairseq binary split -> (GLUE file, 0-based text columns, 0-based label column or None)
SPLITS = {
    "CoLA": {"train": ("train", (3,), 1), "valid": ("dev", (3,), 1), "test": ("test", (1,), None)},
    "SST-2": {"train": ("train", (0,), 1), "valid": ("dev", (0,), 1), "test": ("test", (1,), None)},
    "MRPC": {"train": ("train", (3, 4), 0), "valid": ("dev", (3, 4), 0), "test": ("test", (3, 4), None)},
    "STS-B": {"train": ("train", (7, 8), 9), "valid": ("dev", (7, 8), 9), "test": ("test", (7, 8), None)},
    "QQP": {"train": ("train", (3, 4), 5), "valid": ("dev", (3, 4), 5), "test": ("test", (1, 2), None)},
    "MNLI": {"train": ("train", (8, 9), 11), "valid": ("dev_matched", (8, 9), 15),
             "valid1": ("dev_mismatched", (8, 9), 15), "test": ("test_matched", (8, 9), None),
             "test1": ("test_mismatched", (8, 9), None)},
    "QNLI": {"train": ("train", (1, 2), 3), "valid": ("dev", (1, 2), 3), "test": ("test", (1, 2), None)},
    "RTE": {"train": ("train", (1, 2), 3), "valid": ("dev", (1, 2), 3), "test": ("test", (1, 2), None)},
}


def _rows(glue_dir, task, stem):
    rows = read_tsv(os.path.join(glue_dir, task, f"{stem}.tsv"))
    headerless = task == "CoLA" and stem != "test"
    return rows if headerless else rows[1:]


def _load(path, dictionary):
    from fairseq.data import data_utils

    ds = data_utils.load_indexed_dataset(path, dictionary)
    assert ds is not None, f"fairseq cannot read {path}"
    return ds


@pytest.mark.parametrize("task", ALL_TASKS)
def test_whitespace_binaries(small_glue, small_glue_bin, task):
    from fairseq.data import Dictionary

    dest = small_glue_bin[task]
    expected_dirs = {"input0", "label"} | ({"input1"} if task in PAIR_TASKS else set())
    assert expected_dirs <= set(os.listdir(dest))
    if task not in PAIR_TASKS:
        assert not os.path.exists(os.path.join(dest, "input1"))
    src_dict = Dictionary.load(os.path.join(dest, "input0", "dict.txt"))
    assert src_dict.bos() == 0 and src_dict.pad() == 1 and src_dict.eos() == 2 and src_dict.unk() == 3
    if task in PAIR_TASKS:  # one dictionary for both inputs (the task only reads input0/dict.txt)
        with open(os.path.join(dest, "input0", "dict.txt")) as a, open(os.path.join(dest, "input1", "dict.txt")) as b:
            assert a.read() == b.read()

    for split, (stem, cols, label_col) in SPLITS[task].items():
        rows = _rows(small_glue, task, stem)
        for k, col in enumerate(cols):
            ds = _load(os.path.join(dest, f"input{k}", split), src_dict)
            assert len(ds) == len(rows), (split, k)
            if split == "train":  # the dictionary comes from train: exact round trip
                for i in (0, len(rows) - 1):
                    assert src_dict.string(ds[i]) == " ".join(rows[i][col].split())
                    assert ds[i][-1].item() == src_dict.eos()
        if label_col is None or task == "STS-B":
            continue
        label_dict = Dictionary.load(os.path.join(dest, "label", "dict.txt"))
        labels = _load(os.path.join(dest, "label", split), label_dict)
        assert len(labels) == len(rows)
        assert [label_dict.string(labels[i][:-1]) for i in range(len(rows))] == [r[label_col] for r in rows]
    assert not os.path.exists(os.path.join(dest, "label", "test.bin")), "test has no labels"


def test_stsb_regression_labels(small_glue, small_glue_bin):
    dest = small_glue_bin["STS-B"]
    assert sorted(f for f in os.listdir(os.path.join(dest, "label")) if not f.endswith(".log")) == \
        ["train.label", "valid.label"]
    for split, stem in (("train", "train"), ("valid", "dev")):
        scores = [float(r[9]) for r in _rows(small_glue, "STS-B", stem)]
        with open(os.path.join(dest, "label", f"{split}.label")) as f:
            lines = f.read().splitlines()
        assert len(lines) == len(scores)
        for line, s in zip(lines, scores):
            assert abs(float(line) - s / 5.0) < 1e-6
            assert 0.0 <= float(line) <= 1.0


def test_awk_number_format():
    """fairseq writes STS-B labels with awk '{print $1 / 5.0}' (OFMT %.6g)."""
    from fairseq_qbert.data.preprocess_glue import _awk_div5

    assert [_awk_div5(x, 5.0) for x in ("5.000", "0.000", "2.300", "3.800", "1.667")] == \
        ["1", "0", "0.46", "0.76", "0.3334"]


def _train_cfg(data, task):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from qbert.data.glue_tasks import task_train_args

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--arch", "roberta",
        "--cpu", "--max-positions", "128", *task_train_args(task)])
    return convert_namespace_to_omegaconf(args)


@pytest.mark.parametrize("task", ["SST-2", "RTE", "STS-B", "MNLI"])
def test_stock_sentence_prediction_task_reads_it(small_glue_bin, task):
    from fairseq import tasks

    cfg = _train_cfg(small_glue_bin[task], task)
    t = tasks.setup_task(cfg.task)
    subsets = ["train", "valid"] + (["valid1"] if task == "MNLI" else [])
    for split in subsets:
        t.load_dataset(split)
        ds = t.dataset(split)
        n = SMALL_SIZES["train_size"] if split == "train" else SMALL_SIZES["dev_size"]
        assert len(ds) == n
        batch = ds.collater([ds[i] for i in range(4)])
        toks = batch["net_input"]["src_tokens"]
        assert (toks[:, 0] == 0).all(), "--init-token 0"
        if task in PAIR_TASKS:
            # <s> a </s> </s> b </s>: eos of input0 then the --separator-token 2
            row = toks[0].tolist()
            assert any(row[j] == 2 and row[j + 1] == 2 for j in range(len(row) - 1))
        if cfg.criterion.regression_target:
            assert batch["target"].dtype.is_floating_point and batch["target"].shape == (4, 1)
            assert ((batch["target"] >= 0) & (batch["target"] <= 1)).all()
        else:
            assert batch["target"].max() < cfg.task.num_classes


# ----------------------------------------------------------------------------------------
# GPT-2 BPE path with tiny encoder.json / vocab.bpe / dict.txt
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A byte-level GPT-2 BPE with every byte plus a few merges, and a RoBERTa-style
    dict.txt ("<gpt2 id> <count>" lines) in an order unrelated to the ids."""
    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    d = tmp_path_factory.mktemp("gpt2")
    byte_chars = [bytes_to_unicode()[b] for b in range(256)]
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "n"), ("o", "t"), ("Ġn", "ot"),
              ("Ġ", "a"), ("i", "s"), ("Ġ", "is"), ("e", "n"), ("a", "n"), ("Ġ", "an")]
    encoder = {c: i for i, c in enumerate(byte_chars)}
    for a, b in merges:
        encoder.setdefault(a + b, len(encoder))
    with open(d / "encoder.json", "w") as f:
        json.dump(encoder, f)
    with open(d / "vocab.bpe", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    ids = sorted(encoder.values(), key=lambda i: (i * 7919) % 1009)  # scrambled order
    with open(d / "dict.txt", "w") as f:
        f.write("".join(f"{i} {1000 - k}\n" for k, i in enumerate(ids)))
    return {"encoder_json": str(d / "encoder.json"), "vocab_bpe": str(d / "vocab.bpe"),
            "dict_path": str(d / "dict.txt")}


@pytest.mark.parametrize("task", ["SST-2", "RTE"])
def test_gpt2_bpe_path(small_glue, tmp_path, tiny_gpt2, task):
    from fairseq.data import Dictionary
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    from fairseq_qbert.data.preprocess_glue import preprocess_task

    dest = str(tmp_path / f"{task}-bin")
    preprocess_task(small_glue, task, dest, bpe="gpt2", **tiny_gpt2)
    proc = os.path.join(dest, "processed")

    # byte-identical to fairseq's own examples/roberta/multiprocessing_bpe_encoder.py --keep-empty
    import fairseq

    script = os.path.join(os.path.dirname(fairseq.__file__), "examples", "roberta",
                          "multiprocessing_bpe_encoder.py")
    ref = tmp_path / "ref.input0"
    subprocess.run([sys.executable, script, "--encoder-json", tiny_gpt2["encoder_json"],
                    "--vocab-bpe", tiny_gpt2["vocab_bpe"], "--inputs", os.path.join(proc, "train.raw.input0"),
                    "--outputs", str(ref), "--keep-empty", "--workers", "1"], check=True, capture_output=True)
    with open(ref) as a, open(os.path.join(proc, "train.input0")) as b:
        assert a.read() == b.read()

    bpe = get_encoder(tiny_gpt2["encoder_json"], tiny_gpt2["vocab_bpe"])
    d = Dictionary.load(os.path.join(dest, "input0", "dict.txt"))
    with open(tiny_gpt2["dict_path"]) as f:
        assert d.symbols[4:4 + 5] == [line.split()[0] for line in f][:5], "RoBERTa dict.txt reused as is"
    stems = dict(train="train", valid="dev", test="test")
    cols = SPLITS[task]
    for split, stem in stems.items():
        rows = _rows(small_glue, task, stem)
        for k, col in enumerate(cols[split][1]):
            ds = _load(os.path.join(dest, f"input{k}", split), d)
            assert len(ds) == len(rows)
            ids = [int(x) for x in d.string(ds[0]).split()]
            assert ids == bpe.encode(rows[0][col].strip())
            assert bpe.decode(ids) == rows[0][col].strip()
            assert d.unk() not in ds[0].tolist()


# ----------------------------------------------------------------------------------------
# fidelity details of fairseq's script
# ----------------------------------------------------------------------------------------


def test_qqp_drops_malformed_rows_and_cola_keeps_first_row(small_glue, tmp_path):
    from fairseq.data import Dictionary

    from fairseq_qbert.data.preprocess_glue import preprocess_task

    glue = tmp_path / "glue"
    shutil.copytree(os.path.join(small_glue, "QQP"), glue / "QQP")
    shutil.copytree(os.path.join(small_glue, "CoLA"), glue / "CoLA")
    with open(glue / "QQP" / "train.tsv", "a", encoding="utf-8") as f:
        f.write("1\t2\t3\ta question with no pair ?\t0\n")  # 5 fields: awk NF==6 drops it
    dest = preprocess_task(str(glue), "QQP", str(tmp_path / "QQP-bin"))
    d = Dictionary.load(os.path.join(dest, "input0", "dict.txt"))
    assert len(_load(os.path.join(dest, "input0", "train"), d)) == SMALL_SIZES["train_size"]
    dest = preprocess_task(str(glue), "CoLA", str(tmp_path / "CoLA-bin"))
    d = Dictionary.load(os.path.join(dest, "input0", "dict.txt"))
    assert len(_load(os.path.join(dest, "input0", "train"), d)) == SMALL_SIZES["train_size"]
    assert len(_load(os.path.join(dest, "input0", "test"), d)) == SMALL_SIZES["test_size"]


def test_non_digit_labels_rejected_for_report_tasks(small_glue, tmp_path, capsys):
    """--report-mcc/--report-acc-and-f1 make fairseq int() the label strings."""
    from fairseq_qbert.data.preprocess_glue import cli_main
    from qbert.data.glue_tasks import check_label_symbols

    check_label_symbols("MRPC", ["1", "0"])
    check_label_symbols("MNLI", ["entailment", "neutral", "contradiction"])  # no --report-*
    with pytest.raises(ValueError, match="not digits"):
        check_label_symbols("CoLA", ["acceptable", "0"])
    glue = tmp_path / "glue"
    shutil.copytree(os.path.join(small_glue, "CoLA"), glue / "CoLA")
    for stem in ("train", "dev"):
        rows = read_tsv(glue / "CoLA" / f"{stem}.tsv")
        with open(glue / "CoLA" / f"{stem}.tsv", "w") as f:
            f.write("".join("\t".join([r[0], "yes" if r[1] == "1" else "no"] + r[2:]) + "\n" for r in rows))
    rc = cli_main(["--glue-dir", str(glue), "--task", "CoLA", "--dest-dir", str(tmp_path / "bin")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not digits" in err[0] and "--report-mcc" in err[0]


# ----------------------------------------------------------------------------------------
# errors: one line each, before any work
# ----------------------------------------------------------------------------------------


def _error_case(tmp_path, small_glue, name):
    glue = tmp_path / "glue"
    shutil.copytree(os.path.join(small_glue, "RTE"), glue / "RTE")
    dest = tmp_path / "dest"
    base = ["--glue-dir", str(glue), "--task", "RTE", "--dest-dir", str(dest)]
    if name == "no_glue_dir":
        return ["--glue-dir", str(tmp_path / "nope"), "--task", "RTE", "--dest-dir", str(dest)], \
            ["not found", "nope", "train.tsv"]
    if name == "no_task_dir":
        return ["--glue-dir", str(glue), "--task", "MRPC", "--dest-dir", str(dest)], ["MRPC", "not found"]
    if name == "no_train":
        os.remove(glue / "RTE" / "train.tsv")
        return base, ["train.tsv", "not found"]
    if name == "no_dev":
        os.remove(glue / "RTE" / "dev.tsv")
        return base, ["dev.tsv", "not found"]
    if name == "unknown_task":
        return ["--glue-dir", str(glue), "--task", "WNLI", "--dest-dir", str(dest)], \
            ["WNLI"] + list(ALL_TASKS)
    if name == "gpt2_missing_files":
        return base + ["--bpe", "gpt2", "--vocab-bpe", str(glue / "RTE" / "train.tsv")], \
            ["--encoder-json", "--dict", "gpt2"]
    if name == "gpt2_file_not_found":
        f = str(glue / "RTE" / "train.tsv")
        return base + ["--bpe", "gpt2", "--encoder-json", str(tmp_path / "enc.json"), "--vocab-bpe", f,
                       "--dict", f], ["--encoder-json", "enc.json", "not found"]
    if name == "dict_not_found":
        return base + ["--dict", str(tmp_path / "dict.txt")], ["--dict", "dict.txt", "not found"]
    if name == "bad_bpe":
        return base + ["--bpe", "sentencepiece"], ["sentencepiece", "whitespace", "gpt2"]
    raise KeyError(name)


@pytest.mark.parametrize("name", ["no_glue_dir", "no_task_dir", "no_train", "no_dev", "unknown_task",
                                  "gpt2_missing_files", "gpt2_file_not_found", "dict_not_found", "bad_bpe"])
def test_errors_one_line_before_work(small_glue, tmp_path, capsys, name):
    from fairseq_qbert.data.preprocess_glue import cli_main

    argv, needles = _error_case(tmp_path, small_glue, name)
    rc = cli_main(argv)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not (tmp_path / "dest").exists(), "no work before the error"


def test_cli_subprocess_unknown_task(tmp_path):
    from conftest import REPO_DIR

    r = subprocess.run([sys.executable, "-m", "fairseq_qbert.data.preprocess_glue", "--glue-dir",
                        str(tmp_path), "--task", "XYZ"], cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "XYZ" in r.stderr and "SST-2" in r.stderr
