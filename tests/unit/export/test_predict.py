"""qbert-predict: tokenization as training, one-line errors, and no fairseq (nor torch) at run time."""
import json
import subprocess
import sys

import pytest
from conftest import REPO_DIR
from export_fixtures import write_tiny_export

from qbert.export import predict as P


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return write_tiny_export(tmp_path_factory.mktemp("predict") / "ex", weight_bits=8, act_bits=8)


def run(*argv):
    return subprocess.run([sys.executable, "-m", "qbert.export.predict", *map(str, argv)], cwd=REPO_DIR,
                          capture_output=True, text=True)


def test_predicts_raw_text_without_fairseq_or_torch(export_dir, tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text("w1 w2 w3\nw4  w5 unknownword\nw7\n")
    argv = ["qbert-predict", export_dir, "--input", str(data), "--output", str(tmp_path / "out.tsv")]
    watched = {"fairseq", "fairseq_cli", "fairseq_qbert", "torch"}
    probe = ("import runpy, sys\n"
             f"sys.argv = {argv!r}\n"
             "try:\n    runpy.run_module('qbert.export.predict', run_name='__main__')\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             f"print('leaked:' + ','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {watched!r})))\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "leaked:"  # imported none of them
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text().splitlines()]
    assert rows[0] == ["label", "prob_pos", "prob_neg"]
    assert len(rows) == 4 and all(r[0] in ("pos", "neg") and abs(float(r[1]) + float(r[2]) - 1) < 1e-5
                                  for r in rows[1:])


def test_batching_does_not_change_predictions(export_dir, tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text("".join(f"w{i} w{(i * 7) % 20} w3\n" for i in range(9)))
    one = run(export_dir, "--input", data, "--batch-size", 1)
    many = run(export_dir, "--input", data, "--batch-size", 4)
    assert one.returncode == 0 and one.stdout.splitlines()[1:] == many.stdout.splitlines()[1:]


def test_encoding_is_fairseqs_sentence_prediction(tmp_path):
    d = tmp_path / "dict.txt"
    d.write_text("hello 5\nworld 3\n")
    tok = P.Tokenizer.__new__(P.Tokenizer)
    tok.dictionary, tok.bpe, tok.max_positions = P.Dictionary(str(d)), None, 8
    tok.init_token, tok.separator_token = 0, 2  # RoBERTa: --init-token 0 --separator-token 2
    assert tok.encode(["hello  world"]) == [0, 4, 5, 2]
    assert tok.encode(["hello", "nope world"]) == [0, 4, 2, 2, 3, 5, 2]
    assert len(tok.encode(["hello " * 20])) == 8
    assert tok.dictionary.symbols[-1] == "<mask>"
    tok.separator_token = None  # BERT: [CLS] A [SEP] B [SEP] (--init-token 0, no separator)
    assert tok.encode(["hello", "nope world"]) == [0, 4, 2, 3, 5, 2]
    tok.init_token = None  # no --init-token: A </s> B </s>
    assert tok.encode(["hello", "world"]) == [4, 2, 5, 2]


@pytest.mark.parametrize("content,message", [
    ("", "the file is empty"),
    ("w1\tw2\nw3\n", "line 2 has 1 column(s) but the model takes 2"),
])
def test_input_errors_are_one_line(tmp_path, content, message):
    pairs = write_tiny_export(tmp_path / "pairs", num_inputs=2)
    data = tmp_path / "in.tsv"
    data.write_text(content)
    proc = run(pairs, "--input", data)
    assert proc.returncode == 1 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_dir_that_is_not_an_export(tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text("w1\n")
    proc = run(tmp_path, "--input", data)
    assert proc.returncode == 1 and "no config.json; is it a qbert-export output folder?" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    proc = run(tmp_path / "nope", "--input", data)
    assert proc.returncode == 1 and "no such folder" in proc.stderr


def test_missing_input_file(export_dir, tmp_path):
    proc = run(export_dir, "--input", tmp_path / "nope.tsv")
    assert proc.returncode == 1 and "no such file" in proc.stderr


def test_gpt2_bpe_equals_fairseqs(tmp_path):
    """The small byte-level BPE here gives fairseq's gpt2_bpe_utils ids on the same files."""
    pytest.importorskip("regex")
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    byte_chars = P._bytes_to_unicode()
    symbols = sorted(set(byte_chars.values()))
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("hell", "o"),
              ("Ġwor", "l"), ("Ġworl", "d"), ("1", "2")]
    vocab = symbols + ["".join(m) for m in merges]
    (tmp_path / "encoder.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    ours = P.GPT2BPE(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
    theirs = get_encoder(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
    for text in ["hello world", "Hello, world! 123 it's  héllo\tworld", "  spaces   ", "日本語 text"]:
        assert ours.encode(text) == [str(i) for i in theirs.encode(text)], text
