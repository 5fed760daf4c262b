"""The one place that knows each GLUE task.

File layout and column numbers follow the GLUE download
(https://gist.github.com/W4ngatang/60c2bdb54d156a41194446737ce03e2e) and fairseq's
``examples/roberta/preprocess_GLUE_tasks.sh``; training flags follow fairseq's
``sentence_prediction`` task and criterion (``fairseq/criterions/sentence_prediction.py``).

Column numbers are 1-based, as in ``cut -f`` in fairseq's script.

Usage from shell scripts::

    python -m qbert.data.glue_tasks train-args SST-2     # fairseq-train flags
    python -m qbert.data.glue_tasks metric SST-2         # headline metric name
    python -m qbert.data.glue_tasks list                 # known tasks
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from qbert.errors import ConfigError

# GLUE order (as in the GLUE paper / leaderboard).
TASK_NAMES: Tuple[str, ...] = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE")


class UnknownTaskError(ConfigError):
    """A task name that is not one of GLUE's eight."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # GLUE file stems (without .tsv), per role.
    train_split: str = "train"
    dev_splits: Tuple[str, ...] = ("dev",)
    test_splits: Tuple[str, ...] = ("test",)
    # Header rows exactly as in the GLUE download (None: the file has no header).
    train_header: Optional[Tuple[str, ...]] = None
    dev_header: Optional[Tuple[str, ...]] = None
    test_header: Optional[Tuple[str, ...]] = None
    # Literal first-line prefix of train/dev (MRPC's header carries a UTF-8 BOM).
    header_prefix: str = ""
    # 1-based columns, as in preprocess_GLUE_tasks.sh.
    input_columns: Tuple[int, ...] = ()
    test_input_columns: Tuple[int, ...] = ()
    label_column: int = 0
    dev_label_column: Optional[int] = None  # MNLI: dev files carry 5 annotator labels
    # Rows of train/dev with a different number of fields are dropped (QQP, as fairseq's awk).
    filter_num_fields: Optional[int] = None
    labels: Optional[Tuple[str, ...]] = None  # label space; None for regression
    regression: bool = False
    regression_scale: float = 1.0  # fairseq divides STS-B scores by 5
    report_flags: Tuple[str, ...] = ()
    best_metric: str = "accuracy"
    # every metric fairseq's sentence_prediction criterion logs for this task on valid
    metrics: Tuple[str, ...] = ("accuracy",)
    extra_train_args: Tuple[str, ...] = ()

    # ---- derived -------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.input_columns)

    @property
    def num_classes(self) -> int:
        return 1 if self.regression else len(self.labels or ())

    @property
    def splits(self) -> Tuple[str, ...]:
        return (self.train_split,) + self.dev_splits + self.test_splits

    def header(self, split: str) -> Optional[Tuple[str, ...]]:
        if split in self.test_splits:
            return self.test_header
        if split in self.dev_splits:
            return self.dev_header
        return self.train_header

    def has_header(self, split: str) -> bool:
        return self.header(split) is not None

    def is_test(self, split: str) -> bool:
        return split in self.test_splits

    def columns(self, split: str) -> Tuple[int, ...]:
        return self.test_input_columns if self.is_test(split) else self.input_columns

    def label_col(self, split: str) -> Optional[int]:
        if self.is_test(split):
            return None
        if split in self.dev_splits and self.dev_label_column is not None:
            return self.dev_label_column
        return self.label_column

    def fairseq_split(self, split: str) -> str:
        """GLUE split stem -> fairseq binary name (train, valid, valid1, test, test1)."""
        if split == self.train_split:
            return "train"
        for role, names in (("valid", self.dev_splits), ("test", self.test_splits)):
            if split in names:
                k = names.index(split)
                return role if k == 0 else f"{role}{k}"
        raise KeyError(split)

    def labels_are_digits(self) -> bool:
        return self.labels is not None and all(lab.isdigit() for lab in self.labels)


_MNLI_COMMON = (
    "index", "promptID", "pairID", "genre",
    "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
)

TASKS: Dict[str, TaskSpec] = {
    "CoLA": TaskSpec(
        name="CoLA",
        train_header=None, dev_header=None,  # CoLA train/dev: no header, 4 columns
        test_header=("index", "sentence"),
        input_columns=(4,), test_input_columns=(2,), label_column=2,
        labels=("0", "1"),
        report_flags=("--report-mcc",), best_metric="mcc",
        metrics=("accuracy", "mcc"),
    ),
    "SST-2": TaskSpec(
        name="SST-2",
        train_header=("sentence", "label"), dev_header=("sentence", "label"),
        test_header=("index", "sentence"),
        input_columns=(1,), test_input_columns=(2,), label_column=2,
        labels=("0", "1"),
    ),
    "MRPC": TaskSpec(
        name="MRPC",
        train_header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        dev_header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        test_header=("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        header_prefix="\ufeff",
        input_columns=(4, 5), test_input_columns=(4, 5), label_column=1,
        labels=("0", "1"),
        report_flags=("--report-acc-and-f1",), best_metric="acc_and_f1",
        metrics=("accuracy", "f1", "acc_and_f1"),
    ),
    "STS-B": TaskSpec(
        name="STS-B",
        train_header=("index", "genre", "filename", "year", "old_index", "source1", "source2",
                      "sentence1", "sentence2", "score"),
        dev_header=("index", "genre", "filename", "year", "old_index", "source1", "source2",
                    "sentence1", "sentence2", "score"),
        test_header=("index", "genre", "filename", "year", "old_index", "source1", "source2",
                     "sentence1", "sentence2"),
        input_columns=(8, 9), test_input_columns=(8, 9), label_column=10,
        labels=None, regression=True, regression_scale=5.0,
        report_flags=("--report-pearson-and-spearman",), best_metric="pearson_and_spearman",
        metrics=("pearson", "spearman", "pearson_and_spearman"),
    ),
    "QQP": TaskSpec(
        name="QQP",
        train_header=("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        dev_header=("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        test_header=("id", "question1", "question2"),
        input_columns=(4, 5), test_input_columns=(2, 3), label_column=6,
        filter_num_fields=6,
        labels=("0", "1"),
        report_flags=("--report-acc-and-f1",), best_metric="acc_and_f1",
        metrics=("accuracy", "f1", "acc_and_f1"),
    ),
    "MNLI": TaskSpec(
        name="MNLI",
        dev_splits=("dev_matched", "dev_mismatched"),
        test_splits=("test_matched", "test_mismatched"),
        train_header=_MNLI_COMMON + ("label1", "gold_label"),
        dev_header=_MNLI_COMMON + ("label1", "label2", "label3", "label4", "label5", "gold_label"),
        test_header=_MNLI_COMMON,
        input_columns=(9, 10), test_input_columns=(9, 10), label_column=12, dev_label_column=16,
        labels=("contradiction", "entailment", "neutral"),
        # dev_matched -> valid (selects the best checkpoint), dev_mismatched -> valid1
        extra_train_args=("--valid-subset", "valid,valid1"),
    ),
    "QNLI": TaskSpec(
        name="QNLI",
        train_header=("index", "question", "sentence", "label"),
        dev_header=("index", "question", "sentence", "label"),
        test_header=("index", "question", "sentence"),
        input_columns=(2, 3), test_input_columns=(2, 3), label_column=4,
        labels=("entailment", "not_entailment"),
    ),
    "RTE": TaskSpec(
        name="RTE",
        train_header=("index", "sentence1", "sentence2", "label"),
        dev_header=("index", "sentence1", "sentence2", "label"),
        test_header=("index", "sentence1", "sentence2"),
        input_columns=(2, 3), test_input_columns=(2, 3), label_column=4,
        labels=("entailment", "not_entailment"),
    ),
}

assert tuple(TASKS) == TASK_NAMES


def _canonical(task: str) -> str:
    for name in TASK_NAMES:
        if task == name or task.lower() == name.lower() or task.lower().replace("_", "-") == name.lower():
            return name
    raise UnknownTaskError(
        f"unknown GLUE task {task!r}; expected one of: {', '.join(TASK_NAMES)}"
    )


def get_task(task: str) -> TaskSpec:
    """Spec of ``task`` (case-insensitive; 'sts_b' works too). Unknown -> UnknownTaskError."""
    return TASKS[_canonical(task)]


def parse_tasks(tasks: str | Sequence[str]) -> List[str]:
    """'SST-2,RTE' or 'all' -> canonical task names (GLUE order for 'all')."""
    if isinstance(tasks, str):
        items = [t.strip() for t in tasks.replace(" ", ",").split(",") if t.strip()]
    else:
        items = list(tasks)
    if any(t.lower() == "all" for t in items):
        return list(TASK_NAMES)
    return [_canonical(t) for t in items]


def num_classes(task: str) -> int:
    return get_task(task).num_classes


def is_regression(task: str) -> bool:
    return get_task(task).regression


def headline_metric(task: str) -> str:
    """The metric fairseq logs on valid that GLUE reports for this task
    (accuracy; mcc for CoLA; mean of acc and F1 for MRPC/QQP; mean of Pearson and
    Spearman for STS-B). It is also the --best-checkpoint-metric."""
    return get_task(task).best_metric


def reported_metrics(task: str) -> Tuple[str, ...]:
    return get_task(task).metrics


def task_train_args(task: str) -> List[str]:
    """fairseq-train flags that depend on the task (data, arch, optimizer not included)."""
    spec = get_task(task)
    args: List[str] = []
    if spec.regression:
        args += ["--regression-target", "--num-classes", "1"]
    else:
        args += ["--num-classes", str(spec.num_classes)]
    args += ["--init-token", "0", "--separator-token", "2"]
    args += list(spec.report_flags)
    args += ["--best-checkpoint-metric", spec.best_metric, "--maximize-best-checkpoint-metric"]
    args += list(spec.extra_train_args)
    return args


def check_label_symbols(task: str, symbols: Sequence[str]) -> None:
    """fairseq's sentence_prediction criterion int()s label strings when any --report-*
    flag is on; fail early if the label dictionary of such a task has non-digit labels."""
    spec = get_task(task)
    if spec.regression or not spec.report_flags:
        return
    bad = [s for s in symbols if not s.isdigit()]
    if bad:
        raise ValueError(
            f"{spec.name}: labels {bad} are not digits, but {' '.join(spec.report_flags)} makes "
            f"fairseq's sentence_prediction criterion int() them; expected labels {list(spec.labels)}"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qbert.data.glue_tasks",
        description="Print per-task facts for shell scripts.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in (
        ("train-args", "fairseq-train flags for TASK, space separated"),
        ("metric", "headline metric (also --best-checkpoint-metric) of TASK"),
        ("num-classes", "number of classes (1 for regression)"),
        ("splits", "GLUE split files of TASK"),
        ("name", "canonical spelling of TASK (sts-b -> STS-B)"),
    ):
        p = sub.add_parser(cmd, help=help_)
        p.add_argument("task")
    sub.add_parser("list", help="known tasks")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            print(" ".join(TASK_NAMES))
        elif args.cmd == "train-args":
            print(" ".join(task_train_args(args.task)))
        elif args.cmd == "metric":
            print(headline_metric(args.task))
        elif args.cmd == "num-classes":
            print(num_classes(args.task))
        elif args.cmd == "splits":
            print(" ".join(get_task(args.task).splits))
        elif args.cmd == "name":
            print(get_task(args.task).name)
    except UnknownTaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
