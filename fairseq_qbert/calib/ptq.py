"""Post-training quantization of a fine-tuned fairseq RoBERTa checkpoint (library side of
``qbert-calibrate``).

What fairseq-validate does to read a checkpoint and its data, with the model rebuilt as a
``quant_roberta`` from the quantization flags:

1. :func:`load_fp_checkpoint`: fairseq's ``load_checkpoint_to_cpu`` with the plugin's
   restricted unpickler (:mod:`fairseq_qbert.checkpoint_loading`); the file must be a RoBERTa-family sentence-prediction
   model (a classification head, no quantizer state);
2. :func:`setup_task`: the checkpoint's ``sentence_prediction`` task config with ``data``
   replaced, set up by fairseq (dictionaries read from ``DATA/input0/dict.txt`` and, unless
   the task is a regression such as STS-B, ``DATA/label/dict.txt``); the dictionary must
   match the checkpoint's vocabulary;
3. :func:`build_quant_model`: the checkpoint's model args with ``arch = quant_roberta`` and
   the quantization flags, built by the task, the FP weights loaded strictly (the missing
   quantizer state is added, uninitialised, by ``upgrade_state_dict_named``); with
   ``--sparse-groups`` the 2:4 masks are computed from the FP weights as they load and the
   pruned weights set to 0 (NVIDIA's order: masks first, then calibration sees the pruned
   weights); a checkpoint that already has masks keeps them (same groups required);
4. :func:`qbert.calib.calibrate` on ``N`` shuffled batches of the calibration subset;
5. :func:`save_checkpoint`: the same checkpoint layout fairseq writes (``cfg`` with the
   quant_roberta model args, ``model`` with the quantizer state, ``initialized = 1``), to a
   temporary name renamed at the end: ``fairseq-validate --user-dir ... --path OUT``
   evaluates it as is and ``fairseq-train --finetune-from-model OUT`` starts QAT from it.

Every problem is a :class:`ConfigError` / :class:`CheckpointError` / :class:`DataError`
raised before the first batch runs.
"""
import logging
import os
from argparse import Namespace
from typing import Dict, List, Optional

import torch

from qbert.calib import calibrate
from qbert.calib.api import bypassed, find_quantizers
from qbert.checkpoint_state import first_line, head_shapes, is_quantizer_key, model_args
from qbert.errors import CheckpointError, ConfigError, DataError, QBertError
from qbert.sparse import MASK_SUFFIX

from ..checkpoint_loading import load_checkpoint_to_cpu
from ..criterions.teacher import EMBED_KEY, FP_OVERRIDES

logger = logging.getLogger(__name__)

#: the quant_roberta flags (argparse dest names) that define the quantized model
QUANT_ARG_NAMES = tuple(FP_OVERRIDES)
#: quant_roberta's 2:4 sparsity flags (fairseq_qbert/models/sparsity.py) and their defaults
SPARSE_DEFAULTS = {"sparse_groups": "", "sparse_permute": False, "sparse_recompute_every": None}
ROBERTA_ARCH_PREFIXES = ("roberta", "quant_roberta", "xlm")


def load_fp_checkpoint(path: str, flag: str = "--path") -> Dict:
    """The checkpoint state of a full-precision RoBERTa sentence-prediction model."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.roberta import RobertaModel

    if not os.path.isfile(path):
        raise CheckpointError(f"{flag} {path}: no such file")
    try:
        state = load_checkpoint_to_cpu(path)  # the library form: refusals raise, never exit
    except QBertError as e:
        raise CheckpointError(f"{flag} {path}: {e.message}") from None
    except Exception as e:  # not a pickle, truncated, ...
        raise CheckpointError(f"{flag} {path}: cannot read it as a fairseq checkpoint ({first_line(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or state.get("cfg") is None:
        raise CheckpointError(f"{flag} {path}: not a fairseq checkpoint (no 'model' state dict and 'cfg')")
    args = model_args(state, f"{flag} {path}")
    arch = getattr(args, "arch", None) or getattr(args, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    task_name = getattr(state["cfg"].get("task"), "_name", None) if state["cfg"].get("task") is not None else None
    sd = state["model"]
    if model_cls is None or not issubclass(model_cls, RobertaModel) or EMBED_KEY not in sd \
            or task_name != "sentence_prediction" or not head_shapes(sd):
        raise CheckpointError(
            f"{flag} {path}: not a RoBERTa-family sentence-prediction model (arch '{arch}', task "
            f"'{task_name}', {len(head_shapes(sd))} classification heads); give a checkpoint fine-tuned "
            "with --task sentence_prediction")
    quantized = [k for k in sd if is_quantizer_key(k)]
    if quantized:
        module = quantized[0].split("_quantizer.")[0].rsplit(".", 1)[0]
        raise CheckpointError(f"{flag} {path}: the checkpoint is already quantized (quantizer state for "
                              f"'{module}'); calibrate the full-precision fine-tuned model")
    return state


def setup_task(state: Dict, data: str, path: str = "", flag: str = "--path"):
    """(cfg, task) as fairseq-validate sets them up: the saved task config, ``data`` replaced."""
    from fairseq import tasks
    from omegaconf import open_dict

    cfg = state["cfg"]
    # a regression task (STS-B) has float labels and no label dictionary, as in fairseq
    regression = bool(cfg.task.get("regression_target", False))
    for sub in ("input0",) if regression else ("input0", "label"):
        if not os.path.isfile(os.path.join(data, sub, "dict.txt")):
            raise DataError(f"{os.path.join(data, sub, 'dict.txt')} not found: DATA must be the "
                            "output of qbert-preprocess-glue (fairseq-preprocess of input0/ and label/)")
    with open_dict(cfg):
        cfg.task.data = os.path.abspath(data)
    try:
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
    except Exception as e:
        raise DataError(f"{data}: fairseq cannot set up the sentence_prediction task on it "
                        f"({first_line(e)})") from None
    vocab = state["model"][EMBED_KEY].size(0)
    if len(task.source_dictionary) != vocab:
        raise DataError(f"{os.path.join(data, 'input0', 'dict.txt')}: the dictionary has "
                        f"{len(task.source_dictionary)} entries but {path} was trained with {vocab}; "
                        "binarize the data with the checkpoint's dict.txt")
    return cfg, task


def sparse_settings(sparse: Optional[Dict]):
    """The validated 2:4 settings of ``sparse`` ({sparse_groups, sparse_permute,
    sparse_recompute_every}); a ConfigError naming the flag."""
    from fairseq_qbert.models.sparsity import SparseSettings

    return SparseSettings.from_args(Namespace(**dict(SPARSE_DEFAULTS, **(sparse or {}))))


def quant_model_args(state: Dict, quant: Dict, path: str = "", sparse: Optional[Dict] = None) -> Namespace:
    """The checkpoint's model args as a quant_roberta with the quantization flags ``quant``
    and the 2:4 sparsity flags ``sparse`` (default: dense)."""
    args = model_args(state, f"--path {path}")
    for name in QUANT_ARG_NAMES:
        setattr(args, name, quant.get(name, FP_OVERRIDES[name]))
    for name, default in SPARSE_DEFAULTS.items():
        setattr(args, name, (sparse or {}).get(name, default))
    args.arch = args._name = "quant_roberta"
    args.load_checkpoint_heads = True
    for name in ("encoder_layers_to_keep",):
        if hasattr(args, name):
            setattr(args, name, None)
    return args


def build_quant_model(state: Dict, task, quant: Dict, path: str = "", sparse: Optional[Dict] = None):
    """(model args, quant_roberta with the FP weights loaded, uninitialised quantizers; with
    ``sparse`` groups, 2:4 masks computed from the loaded weights and the pruned weights 0)."""
    from fairseq_qbert.models.quant_roberta import QuantRobertaModel, QuantSettings

    args = quant_model_args(state, quant, path, sparse)
    QuantSettings.from_args(args)  # ConfigError naming the flag, before anything is built
    heads = head_shapes(state["model"])
    model = QuantRobertaModel.build_checked_model(args, task)
    for name, (classes, inner_dim) in heads.items():
        model.register_classification_head(name, num_classes=classes, inner_dim=inner_dim)
    # sparsify() prunes (and permutes) the loaded tensors in place: give it copies, so that
    # ``state`` stays the FP checkpoint
    weights = {k: v.clone() for k, v in state["model"].items()} if sparse_settings(sparse).groups \
        else dict(state["model"])
    try:
        model.load_checked_state_dict(weights, strict=True, model_cfg=None)
    except QBertError:
        raise
    except Exception as e:
        raise CheckpointError(f"--path {path}: its weights do not fit quant_roberta ({first_line(e)})") from None
    return args, model


def head_name(state: Dict) -> str:
    crit = state["cfg"].get("criterion")
    name = getattr(crit, "classification_head_name", None) if crit is not None else None
    return name or "sentence_classification_head"


def build_criterion(state: Dict, task):
    """fairseq's sentence_prediction criterion with the checkpoint's head and --report-* flags."""
    from fairseq.criterions.sentence_prediction import SentencePredictionConfig, SentencePredictionCriterion

    saved = state["cfg"].get("criterion")
    get = lambda k, d=False: (getattr(saved, k, d) if saved is not None else d)  # noqa: E731
    regression = bool(getattr(task.cfg, "regression_target", False))
    cfg = SentencePredictionConfig(classification_head_name=head_name(state),
                                   regression_target=regression,
                                   report_mcc=bool(get("report_mcc")),
                                   report_acc_and_f1=bool(get("report_acc_and_f1")),
                                   report_pearson_and_spearman=bool(get("report_pearson_and_spearman")))
    return SentencePredictionCriterion(cfg, task)


def headline_metric(criterion) -> str:
    if criterion.report_mcc:
        return "mcc"
    if criterion.report_acc_and_f1:
        return "acc_and_f1"
    if criterion.report_pearson_and_spearman:
        return "pearson_and_spearman"
    return "loss" if criterion.regression_target else "accuracy"


def batch_iterator(task, model, split: str, batch_size: int, seed: int, shuffle: bool):
    from fairseq import utils

    if split not in task.datasets:
        try:
            task.load_dataset(split, combine=False, epoch=1)
        except Exception as e:  # missing split files, bad data
            raise DataError(f"cannot load the '{split}' subset of {task.cfg.data} ({first_line(e)})") from None
    dataset = task.dataset(split)
    return task.get_batch_iterator(
        dataset=dataset, max_sentences=batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=seed,
        num_workers=0).next_epoch_itr(shuffle=shuffle)


def calibration_batches(task, model, split: str, num_batches: int, batch_size: int, seed: int) -> List:
    """The first ``num_batches`` batches of ``split``, shuffled with ``seed`` (as fairseq-train
    shuffles epoch 1): the same batches for the same data and seed."""
    out = []
    for sample in batch_iterator(task, model, split, batch_size, seed, shuffle=True):
        out.append(sample)
        if len(out) == num_batches:
            break
    return out


def evaluate(model, task, criterion, split: str, batch_size: int, device) -> Dict[str, float]:
    """fairseq-validate's loop: valid_step on every batch, the task's reduce_metrics."""
    from fairseq import metrics, utils

    model.eval()
    logs = []
    for sample in batch_iterator(task, model, split, batch_size, seed=1, shuffle=False):
        sample = utils.move_to_cuda(sample) if device.type == "cuda" else sample
        _loss, _size, log = task.valid_step(sample, model, criterion)
        logs.append(log)
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(logs, criterion)
        values = agg.get_smoothed_values()
    out = {}
    for k, v in values.items():  # scalars only (with --report-mcc the criterion also logs lists)
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def run_forward(model, sample, head: str, device):
    from fairseq import utils

    sample = utils.move_to_cuda(sample) if device.type == "cuda" else sample
    model(**sample["net_input"], features_only=True, classification_head_name=head)


def save_checkpoint(state: Dict, args: Namespace, model, out: str, extra: Optional[Dict] = None) -> str:
    """Write ``model`` as a quant_roberta checkpoint in fairseq's layout, atomically.

    Only what fairseq itself writes (tensors, dicts, lists, the config as containers with the
    model args as an ``argparse.Namespace``): loads with ``torch.load(weights_only=True)`` once
    ``argparse.Namespace`` is allowed, and with fairseq's ``load_checkpoint_to_cpu``.
    """
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    cfg["model"] = args
    extra_state = dict(state.get("extra_state") or {})
    if extra:
        extra_state.update(extra)
    new = {
        "args": None,
        "cfg": cfg,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "criterion": None,
        "optimizer_history": list(state.get("optimizer_history") or []),
        "task_state": dict(state.get("task_state") or {}),
        "extra_state": extra_state,
    }
    out = os.path.abspath(out)
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp{os.getpid()}")
    try:
        checkpoint_utils.torch_persistent_save(new, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def fp_metrics(model, task, criterion, split, batch_size, device) -> Dict[str, float]:
    """The dev metrics of the model with every quantizer bypassed (the FP model)."""
    with bypassed([q for *_, q in find_quantizers(model)]):
        return evaluate(model, task, criterion, split, batch_size, device)


def sparsity_summary(model) -> Dict:
    """Groups, per-group sparsity and kept-magnitude fraction, skipped weights of ``model``'s
    2:4 masks (those computed at load, or a sparse checkpoint's own)."""
    settings = model.quant.sparse
    report = model.sparsity.report
    out = {"groups": list(settings.groups), "permute": settings.permute,
           "masks": len(model.sparsity.masked(model))}
    if report is not None:
        out["from"] = "computed from the FP weights"
        out["by_group"] = report.by_group()
        out["skipped"] = {m.name: m.skipped for m in report.skipped()}
    else:
        out["from"] = "the checkpoint's own masks"
    return out


def ptq(data: str, path: str, quant: Dict, *, method: str, percentile: float, weight_method: str,
        num_batches: int, batch_size: int, out: str, seed: int = 1, calib_subset: str = "train",
        valid_subset: str = "valid", cpu: bool = False, evaluate_fp: bool = True,
        sparse: Optional[Dict] = None) -> Dict:
    """The whole of ``qbert-calibrate``; returns the summary (metrics, calibration report).

    ``sparse``: quant_roberta's 2:4 flags by dest name (``sparse_groups``, ``sparse_permute``,
    ``sparse_recompute_every``): the masks are computed from the FP weights before calibration
    (NVIDIA's order), saved in the checkpoint, and ``fp`` is then the dense model's metric,
    ``sparse_fp`` the pruned model's (quantizers bypassed)."""
    from qbert.calib.calibrators import ACT_METHODS, WEIGHT_METHODS, check_method, check_percentile

    sparse_groups = sparse_settings(sparse).groups
    check_method(method, ACT_METHODS, "--calibrator")
    check_method(weight_method, WEIGHT_METHODS, "--weight-calibrator")
    percentile = check_percentile(percentile)
    if int(num_batches) < 1:
        raise ConfigError(f"--num-calib-batches must be >= 1, got {num_batches}")
    if int(batch_size) < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise ConfigError(f"--out {out}: directory {out_dir} does not exist")
    state = load_fp_checkpoint(path)
    _cfg, task = setup_task(state, data, path)
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    dense_fp = None
    if sparse_groups and evaluate_fp and not any(k.endswith(MASK_SUFFIX) for k in state["model"]):
        # the dense FP metric, before pruning (a second build: the masks are made as weights load)
        dense = build_quant_model(state, task, quant, path)[1].to(device)
        dense_fp = fp_metrics(dense, task, build_criterion(state, task), valid_subset, batch_size, device)
        del dense
    args, model = build_quant_model(state, task, quant, path, sparse)
    model.to(device)
    criterion = build_criterion(state, task)
    head = head_name(state)
    torch.manual_seed(seed)
    batches = calibration_batches(task, model, calib_subset, int(num_batches), int(batch_size), seed)
    if not batches:
        raise DataError(f"the '{calib_subset}' subset of {data} has no sentences to calibrate on")

    summary = {"data": os.path.abspath(data), "path": os.path.abspath(path),
               "quantization": model.quant.describe(), "metric": headline_metric(criterion),
               "valid_subset": valid_subset}
    if sparse_groups:
        summary["sparsity"] = sparsity_summary(model)
    if evaluate_fp:
        fp = fp_metrics(model, task, criterion, valid_subset, batch_size, device)
        if sparse_groups:
            summary["sparse_fp"] = fp
        summary["fp"] = dense_fp if dense_fp is not None else fp

    def loop(m):
        for sample in batches:
            run_forward(m, sample, head, device)
        return len(batches)

    report = calibrate(model, loop, method=method, percentile=percentile, weight_method=weight_method)
    summary["calibration"] = report.as_dict()
    summary["calibration"].update(batch_size=int(batch_size), subset=calib_subset, seed=int(seed))
    summary["ptq"] = evaluate(model, task, criterion, valid_subset, batch_size, device)
    model.cpu()
    extra = {k: summary["calibration"][k] for k in ("method", "weight_method", "percentile", "num_batches",
                                                     "batch_size", "subset", "seed")}
    extra["sparse_groups"] = ",".join(sparse_groups)
    summary["out"] = save_checkpoint(state, args, model, out, extra={"ptq": extra})
    return summary
