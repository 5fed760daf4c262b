"""``qbert-export --verify DATA-bin``: the dev set through the fake-quant fairseq model and
through the exported ONNX model; metrics of both, prediction agreement, largest logit gap."""
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from qbert.errors import ConfigError, DataError, QBertError

MIN_AGREEMENT = 99.9  # percent
REGRESSION_TOL = 1e-3  # scores closer than this (relative to max(1, |score|)) agree


class VerifyError(QBertError):
    """The exported model's predictions differ from the fake-quant model's too often."""


@dataclass
class VerifyResult:
    examples: int
    metric: str
    fake_quant_metric: float
    onnx_metric: float
    agreement: float          # percent of identical predictions
    max_logit_diff: float
    fake_quant_seconds: float
    onnx_seconds: float

    def lines(self):
        return [f"verify: {self.examples} examples",
                f"  {self.metric}: fake-quant fairseq {self.fake_quant_metric:.4f}, ONNX {self.onnx_metric:.4f}",
                f"  prediction agreement {self.agreement:.2f}%, largest |logit difference| {self.max_logit_diff:.3g}",
                f"  time: fake-quant fairseq {self.fake_quant_seconds:.2f} s, ONNX {self.onnx_seconds:.2f} s "
                f"({self.fake_quant_seconds / max(self.onnx_seconds, 1e-9):.2f}x)"]


def _task(state, data_dir: str):
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf, open_dict

    cfg = state.get("cfg")
    if cfg is None or cfg.get("task") is None:
        cfg = convert_namespace_to_omegaconf(state["args"])
    task_cfg = cfg["task"]
    name = task_cfg.get("_name")
    if name != "sentence_prediction":
        raise ConfigError(f"--verify needs a sentence_prediction checkpoint; its task is {name!r}")
    task_cfg = OmegaConf.create(OmegaConf.to_container(task_cfg, resolve=False))
    with open_dict(task_cfg):
        task_cfg.data = data_dir
    return tasks.setup_task(task_cfg)


def _metric(logits: np.ndarray, target: np.ndarray, regression: bool):
    if regression:
        pred = logits[:, 0]
        if pred.std() == 0 or target.std() == 0:
            return "pearson", 0.0
        return "pearson", float(np.corrcoef(pred, target)[0, 1])
    return "accuracy", float((logits.argmax(-1) == target).mean())


def verify(model, state, export_dir: str, data_dir: str, head_name: str, subset: str = "valid",
           batch_size: int = 32, threads: Optional[int] = None,
           min_agreement: float = MIN_AGREEMENT) -> VerifyResult:
    """Run ``subset`` of ``data_dir`` through both models; VerifyError below ``min_agreement``."""
    from qbert.export.runtime import OnnxClassifier

    task = _task(state, data_dir)
    try:
        task.load_dataset(subset)
    except Exception as e:  # noqa: BLE001 - missing split files, ...
        raise DataError(f"--verify {data_dir}: cannot load the '{subset}' subset ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    dataset = task.dataset(subset)
    onnx_model = OnnxClassifier(export_dir, threads)
    regression = bool(onnx_model.config["arch"].get("regression"))
    ref, out, targets = [], [], []
    t_ref = t_onnx = 0.0
    model.eval()
    for start in range(0, len(dataset), batch_size):
        sample = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        tokens = sample["net_input"]["src_tokens"]
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = model(tokens, features_only=True, classification_head_name=head_name)[0]
        t1 = time.perf_counter()
        out.append(onnx_model.logits(tokens.numpy()))
        t_onnx += time.perf_counter() - t1
        t_ref += t1 - t0
        ref.append(logits.float().numpy())
        targets.append(sample["target"].float().numpy() if regression else sample["target"].numpy())
    if not ref:
        raise DataError(f"--verify {data_dir}: the '{subset}' subset is empty")
    ref, out, target = np.concatenate(ref), np.concatenate(out), np.concatenate(targets).reshape(-1)
    metric, ref_metric = _metric(ref, target, regression)
    _, out_metric = _metric(out, target, regression)
    if regression:
        same = np.abs(ref[:, 0] - out[:, 0]) <= REGRESSION_TOL * np.maximum(1.0, np.abs(ref[:, 0]))
    else:
        same = ref.argmax(-1) == out.argmax(-1)
    result = VerifyResult(len(ref), metric, ref_metric, out_metric, 100.0 * float(same.mean()),
                          float(np.abs(ref - out).max()), t_ref, t_onnx)
    for line in result.lines():
        print(line)
    if result.agreement < min_agreement:
        raise VerifyError(f"--verify: the ONNX model agrees with the fake-quant model on only "
                          f"{result.agreement:.2f}% of '{subset}' (needs >= {min_agreement}%)")
    return result
