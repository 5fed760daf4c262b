"""Low-resource QAT: the train<N> split (first N rows) and the runner's QAT_TRAIN_SIZE."""
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aug_fixtures as A  # noqa: E402

from fairseq_qbert.augment.subset import write_subset  # noqa: E402
from qbert.errors import ConfigError  # noqa: E402
from qbert.experiments import runner  # noqa: E402


def _rows(folder, field, split):
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(folder, field, "dict.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(folder, field, split), d)
    return [ds[i].tolist() for i in range(len(ds))]


@pytest.mark.parametrize("kind", ["cls", "reg_pairs"])
def test_subset_is_the_first_rows_and_idempotent(kind, tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(A.aug_data(kind), data)
    assert write_subset(str(data), 10) == "train10"
    fields = ["input0"] + (["input1"] if kind == "reg_pairs" else [])
    for f in fields:
        assert _rows(data, f, "train10") == _rows(data, f, "train")[:10]
    if kind == "cls":
        assert _rows(data, "label", "train10") == _rows(data, "label", "train")[:10]
    else:
        full = (data / "label" / "train.label").read_text().splitlines()
        assert (data / "label" / "train10.label").read_text().splitlines() == full[:10]
    stamp = os.path.getmtime(data / "input0" / "train10.bin")
    assert write_subset(str(data), 10) == "train10"
    assert os.path.getmtime(data / "input0" / "train10.bin") == stamp  # kept
    assert not [p for p in data.rglob(".*tmp*")]
    with pytest.raises(ConfigError, match="only 24 train rows"):
        write_subset(str(data), 24)


def test_runner_qat_train_size_adds_the_subset_flag(tmp_path):
    data = A.aug_data("cls")
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"x")
    env = {"DATA_KIND": "mini", "QAT_TRAIN_SIZE": "300"}
    spec = runner.build_spec("qat", "SST-2", data, str(teacher), "cpu", ["--weight-bits", "2"], env=env)
    assert spec["flags"] == ["--weight-bits", "2", "--train-subset", "train300"]
    plain = runner.build_spec("qat", "SST-2", data, str(teacher), "cpu", ["--weight-bits", "2"],
                              env={"DATA_KIND": "mini"})
    assert "--train-subset" not in plain["flags"]
    assert runner.spec_hash(spec) != runner.spec_hash(plain)
    fp = runner.build_spec("fp", "SST-2", data, str(teacher), "cpu", [], env=env)
    assert "--train-subset" not in fp["flags"]  # the teacher's dev metric: no training
    with pytest.raises(runner.RunnerError, match="QAT_TRAIN_SIZE"):
        runner.build_spec("qat", "SST-2", data, str(teacher), "cpu", [], env=dict(env, QAT_TRAIN_SIZE="x"))


def test_runner_writes_the_missing_split(tmp_path):
    data = tmp_path / "bin"
    shutil.copytree(A.aug_data("cls"), data)
    spec = {"flags": ["--train-subset", "train12"], "data_bin": str(data)}
    runner._ensure_train_subset(spec)
    assert Path(data, "input0", "train12.bin").is_file()
    with pytest.raises(runner.RunnerError, match="QAT_TRAIN_SIZE=99"):
        runner._ensure_train_subset({"flags": ["--train-subset", "train99"], "data_bin": str(data)})


def test_a_cells_own_train_subset_wins(tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"x")
    spec = runner.build_spec("qat", "SST-2", A.aug_data("cls"), str(teacher), "cpu",
                             ["--train-subset", "train300_aug"], env={"DATA_KIND": "mini", "QAT_TRAIN_SIZE": "300"})
    assert spec["flags"] == ["--train-subset", "train300_aug"]
