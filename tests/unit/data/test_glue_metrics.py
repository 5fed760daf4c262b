"""The task table's flags make fairseq's stock sentence_prediction criterion log the GLUE
metrics, with the right values on hand-computed examples, through our label dictionaries."""
import math
import subprocess
import sys

import pytest
import torch
from conftest import ALL_TASKS, REPO_DIR


def _setup(data, task):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from qbert.data.glue_tasks import task_train_args

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--arch", "roberta",
        "--cpu", "--max-positions", "128", *task_train_args(task)])
    cfg = convert_namespace_to_omegaconf(args)
    t = tasks.setup_task(cfg.task)
    return cfg, t, t.build_criterion(cfg.criterion)


class _FixedOutputModel(torch.nn.Module):
    """Stands in for RoBERTa: returns the given logits for the classification head."""

    def __init__(self, logits, head):
        super().__init__()
        self.classification_heads = {head: None}
        self._logits = logits

    def forward(self, src_tokens=None, src_lengths=None, features_only=True, classification_head_name=None):
        return self._logits, None

    def get_targets(self, sample, net_output):
        return sample["target"]


def _logged(cfg, criterion, logits, target):
    """Validation-mode forward + reduce_metrics, as fairseq-train's validate() does."""
    from fairseq.logging import metrics

    model = _FixedOutputModel(logits, cfg.criterion.classification_head_name).eval()
    n = target.shape[0]
    sample = {"net_input": {"src_tokens": torch.zeros(n, 3, dtype=torch.long),
                            "src_lengths": torch.full((n,), 3)},
              "target": target, "ntokens": 3 * n}
    with torch.no_grad():
        _, _, log = criterion(model, sample)
    with metrics.aggregate(new_root=True) as agg:
        type(criterion).reduce_metrics([log])
        return agg.get_smoothed_values()


def _class_logits(label_dict, label_strings):
    """Logits whose argmax is the class of each label string (class = dict index - nspecial)."""
    idx = [label_dict.index(s) - label_dict.nspecial for s in label_strings]
    logits = torch.full((len(idx), 2), -1.0)
    logits[torch.arange(len(idx)), torch.tensor(idx)] = 1.0
    return logits


def _targets(label_dict, label_strings):
    return torch.tensor([label_dict.index(s) - label_dict.nspecial for s in label_strings])


# labels as strings, so the test is about label *strings*, whatever class index fairseq's
# frequency-sorted label dictionary gives them (MRPC: "1" is the majority, so class 0)
GOLD = ["1", "1", "1", "1", "0", "0", "0", "0"]
PRED = ["1", "1", "1", "0", "1", "1", "0", "0"]
# hand-computed with label "1" positive: TP=3 FN=1 FP=2 TN=2
ACC = 5 / 8
F1 = 2 * 3 / (2 * 3 + 2 + 1)
MCC = (3 * 2 - 2 * 1) / math.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1))


@pytest.mark.parametrize("task", ["CoLA", "MRPC", "QQP"])
def test_binary_metrics(small_glue_bin, task):
    cfg, t, crit = _setup(small_glue_bin[task], task)
    ld = t.label_dictionary
    values = _logged(cfg, crit, _class_logits(ld, PRED), _targets(ld, GOLD))
    assert values["accuracy"] == pytest.approx(100 * ACC, abs=0.05)
    if task == "CoLA":
        assert values["mcc"] == pytest.approx(round(100 * MCC, 1))  # 25.8
        assert "f1" not in values
    else:
        assert values["f1"] == pytest.approx(round(100 * F1, 1))  # 66.7
        assert values["acc_and_f1"] == pytest.approx(round(100 * (ACC + F1) / 2, 1))  # 64.6
        assert "mcc" not in values


def test_mrpc_label_dict_puts_label_1_first(small_glue_bin):
    """Guard of the test above: class index != label string somewhere, else a mix-up
    of the two would go unnoticed."""
    _, t, _ = _setup(small_glue_bin["MRPC"], "MRPC")
    ld = t.label_dictionary
    assert ld.index("1") - ld.nspecial == 0


def test_stsb_pearson_spearman(small_glue_bin):
    cfg, t, crit = _setup(small_glue_bin["STS-B"], "STS-B")
    assert cfg.criterion.regression_target and cfg.task.num_classes == 1
    y = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    p = [0.1, 0.0, 0.5, 0.4, 0.9, 0.7]
    # hand: Pearson from deviations; Spearman = Pearson of ranks
    my, mp = sum(y) / 6, sum(p) / 6
    cov = sum((a - my) * (b - mp) for a, b in zip(y, p))
    pearson = cov / math.sqrt(sum((a - my) ** 2 for a in y) * sum((b - mp) ** 2 for b in p))
    ry, rp = [1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]
    d2 = sum((a - b) ** 2 for a, b in zip(ry, rp))
    spearman = 1 - 6 * d2 / (6 * (36 - 1))
    values = _logged(cfg, crit, torch.tensor(p).view(-1, 1), torch.tensor(y).view(-1, 1))
    assert values["pearson"] == pytest.approx(round(100 * pearson, 1))
    assert values["spearman"] == pytest.approx(round(100 * spearman, 1))  # 82.9
    assert values["pearson_and_spearman"] == pytest.approx(round(100 * (pearson + spearman) / 2, 1))
    assert "accuracy" not in values


@pytest.mark.parametrize("task", ALL_TASKS)
def test_headline_metric_is_logged(small_glue_bin, task):
    """--best-checkpoint-metric must name a key fairseq really logs on valid."""
    from qbert.data.glue_tasks import headline_metric, reported_metrics, task_train_args

    cfg, t, crit = _setup(small_glue_bin[task], task)
    n = 6
    if cfg.criterion.regression_target:
        logits, target = torch.rand(n, 1), torch.rand(n, 1)
    else:
        k = cfg.task.num_classes
        logits, target = torch.randn(n, k), torch.arange(n) % k
    values = _logged(cfg, crit, logits, target)
    assert headline_metric(task) in values
    assert set(reported_metrics(task)) <= set(values)
    args = task_train_args(task)
    assert args[args.index("--best-checkpoint-metric") + 1] == headline_metric(task)
    assert "--maximize-best-checkpoint-metric" in args
    assert cfg.checkpoint.best_checkpoint_metric == headline_metric(task)
    assert cfg.checkpoint.maximize_best_checkpoint_metric
    assert cfg.task.init_token == 0 and cfg.task.separator_token == 2
    if task == "MNLI":
        assert cfg.dataset.valid_subset == "valid,valid1"


def test_task_table_flags():
    from qbert.data.glue_tasks import headline_metric, task_train_args

    assert task_train_args("SST-2") == ["--num-classes", "2", "--init-token", "0", "--separator-token", "2",
                                        "--best-checkpoint-metric", "accuracy",
                                        "--maximize-best-checkpoint-metric"]
    sts = task_train_args("STS-B")
    assert sts[:3] == ["--regression-target", "--num-classes", "1"]
    assert "--report-pearson-and-spearman" in sts
    assert "--report-mcc" in task_train_args("CoLA")
    assert "--report-acc-and-f1" in task_train_args("MRPC") and "--report-acc-and-f1" in task_train_args("QQP")
    assert task_train_args("MNLI")[:2] == ["--num-classes", "3"]
    for task in ("SST-2", "QNLI", "RTE", "MNLI"):
        assert not any(a.startswith("--report") for a in task_train_args(task))
    assert [headline_metric(t) for t in ALL_TASKS] == [
        "mcc", "accuracy", "acc_and_f1", "pearson_and_spearman", "acc_and_f1", "accuracy", "accuracy",
        "accuracy"]


def test_glue_tasks_cli():
    r = subprocess.run([sys.executable, "-m", "qbert.data.glue_tasks", "train-args", "STS-B"],
                       cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.strip() == ("--regression-target --num-classes 1 --init-token 0 --separator-token 2 "
                                "--report-pearson-and-spearman --best-checkpoint-metric pearson_and_spearman "
                                "--maximize-best-checkpoint-metric")
    r = subprocess.run([sys.executable, "-m", "qbert.data.glue_tasks", "metric", "CoLA"],
                       cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "mcc"
    r = subprocess.run([sys.executable, "-m", "qbert.data.glue_tasks", "train-args", "WNLI"],
                       cwd=REPO_DIR, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "WNLI" in lines[0] and all(t in lines[0] for t in ALL_TASKS)
