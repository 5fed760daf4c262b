#!/usr/bin/env python3
"""Measure properties 1-2 of issue #13's benchmark on mini-GLUE and write them to results/.

    python scripts/benchmark_properties.py [--work work/mini-glue] [--tasks SST-2,RTE,CoLA,MRPC]
        [--qat-train-size 300] [--seeds 1,2,3] [--out results/benchmark_properties.md]

Uses WORK/data/TASK-bin and WORK/teachers/TASK/checkpoint_best.pt (what
``scripts/run_all_mini_glue.sh WORK`` makes) and, per task and seed, runs through
``qbert.experiments.runner`` (same recipe as every family, same skip/resume; runs under
WORK/properties/):

* **FP**: the teacher's dev metric (fairseq-validate);
* **scratch**: a model of the teacher's shape trained from random initialisation with the
  QAT recipe on the split the quantized student trains on (``train<N>`` with
  ``--qat-train-size N`` / ``QAT_TRAIN_SIZE``, else all of ``train``);
* **PTQ W4, W2**: ``qbert-calibrate`` of the teacher, LSQ weights of EMB,QKV,FFN at 4 / 2 bits,
  weight calibrator ``--ptq-weight-calibrator`` (mse), activations FP, then fairseq-validate
  (the calibration batches are drawn with the seed);
* **QAT W2 -KD**: the runner's QAT run, 2-bit EMB,QKV,FFN, no KD, on the same split as scratch.

and checks (gaps = FP minus the run, per seed; mean and sample std over the seeds):

1. the teacher knows more than the QAT data teaches: FP - scratch >= 10 on every task;
2. quantization hurts: FP - PTQ W2 >= 5 and > FP - PTQ W4 on every task; FP - QAT W2 >= 2
   on at least two tasks; every quantization gap (PTQ W4, PTQ W2, QAT W2: the gaps property 2
   reports) has std <= 1 over the seeds. The from-scratch gap's std is printed, not checked.

Property 3 (wall time of run_all_mini_glue.sh and of the test suite) is not measured here;
the script prints its own wall time. It says nothing about which remedy (KD, KD + aug)
wins: that is what the families measure. Writes OUT (markdown) and OUT with .json.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from qbert.experiments import runner  # noqa: E402

W_FLAGS = {bits: ["--quant-groups", "EMB,QKV,FFN", "--weight-bits", str(bits)] for bits in (2, 4)}
QUANT_GAPS = ("ptq_w4", "ptq_w2", "qat_w2")  # the gaps of property 2 (its std bound)
THRESHOLDS = {"scratch_gap": 10.0, "ptq_w2_gap": 5.0, "qat_w2_gap": 2.0, "qat_tasks": 2, "max_std": 1.0}


def run_scratch(spec: Dict, run_dir: str) -> Dict:
    """The QAT recipe of ``spec`` (no quantizer) from random initialisation, not the teacher."""
    run_dir = os.path.abspath(run_dir)
    result_path = os.path.join(run_dir, runner.RESULT)
    if runner.is_done(run_dir):
        return runner.read_json(result_path)
    shutil.rmtree(run_dir, ignore_errors=True)  # no resume for these short runs: start clean
    os.makedirs(run_dir)
    cmd = runner.train_command(spec, run_dir)
    i = cmd.index("--finetune-from-model")
    del cmd[i:i + 2]
    runner._ensure_train_subset(spec)
    log_path = os.path.join(run_dir, "train.log")
    print(f"[start] {spec['task']} scratch {' '.join(spec['flags'])} -> {run_dir}", flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=runner._child_env(None))
    if proc.returncode != 0:
        raise runner.RunnerError(f"fairseq-train exited with {proc.returncode}; see {log_path}")
    best = runner.best_from_log(log_path, spec["metric"])
    result = {"kind": "scratch", "task": spec["task"], "metric": spec["metric"], "best": best["value"],
              "log": best, "command": cmd, "spec": spec}
    runner._write_json(result_path, result)
    with open(os.path.join(run_dir, runner.DONE), "w") as f:
        f.write(runner._now() + "\n")
    print(f"[done] {run_dir}: {spec['metric']} {best['value']}", flush=True)
    return result


def measure_task(task: str, data_bin: str, teacher: str, work: str, seeds: Sequence[int],
                 qat_train_size: Optional[int], device: str = "cpu",
                 weight_calibrator: str = "mse") -> Dict:
    """Every run of one task; returns {"metric", "fp", "scratch": [...], "ptq_w4": [...], ...}."""
    env = dict(os.environ)
    env.pop("QAT_TRAIN_SIZE", None)
    if qat_train_size:
        env["QAT_TRAIN_SIZE"] = str(qat_train_size)
    root = os.path.join(work, "properties", task + (f"-qat{qat_train_size}" if qat_train_size else ""))
    spec = runner.build_spec("fp", task, data_bin, teacher, device, [], env=env)
    out = {"metric": spec["metric"], "fp": runner.execute(spec, os.path.join(root, "fp"))["best"]}
    calib = ["--weight-calibrator", weight_calibrator, "--num-calib-batches", "16", "--batch-size", "16"]
    if qat_train_size:
        calib += ["--calib-subset", f"train{qat_train_size}"]
    for key in ("scratch", "ptq_w4", "ptq_w2", "qat_w2"):
        out[key] = []
    for seed in seeds:
        senv = dict(env, SEED=str(seed))
        spec = runner.build_spec("qat", task, data_bin, teacher, device, [], env=senv)
        out["scratch"].append(run_scratch(spec, os.path.join(root, f"scratch-s{seed}"))["best"])
        for bits in (4, 2):
            spec = runner.build_spec("ptq", task, data_bin, teacher, device, W_FLAGS[bits], env=senv,
                                     calib=calib)
            if qat_train_size:
                runner._ensure_train_subset({"flags": ["--train-subset", f"train{qat_train_size}"],
                                             "data_bin": spec["data_bin"]})
            out[f"ptq_w{bits}"].append(runner.execute(spec, os.path.join(root, f"ptq-w{bits}-s{seed}"))["best"])
        spec = runner.build_spec("qat", task, data_bin, teacher, device, W_FLAGS[2], env=senv)
        out["qat_w2"].append(runner.execute(spec, os.path.join(root, f"qat-w2-s{seed}"))["best"])
    return out


def _stats(values: Sequence[float]) -> Dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "std": round(std, 2)}


def evaluate(measured: Dict[str, Dict], thresholds: Dict = THRESHOLDS) -> Dict:
    """Gaps (FP minus run, per seed), their mean/std, and each property's verdict."""
    tasks = {}
    for task, m in measured.items():
        gaps = {key: [m["fp"] - v for v in m[key]] for key in ("scratch", "ptq_w4", "ptq_w2", "qat_w2")}
        tasks[task] = {"metric": m["metric"], "fp": m["fp"],
                       "values": {k: _stats(m[k]) for k in gaps},
                       "gaps": {k: _stats(v) for k, v in gaps.items()}}
    t = thresholds
    p1 = {task: r["gaps"]["scratch"]["mean"] >= t["scratch_gap"] for task, r in tasks.items()}
    ptq = {task: r["gaps"]["ptq_w2"]["mean"] >= t["ptq_w2_gap"]
           and r["gaps"]["ptq_w2"]["mean"] > r["gaps"]["ptq_w4"]["mean"] for task, r in tasks.items()}
    qat = {task: r["gaps"]["qat_w2"]["mean"] >= t["qat_w2_gap"] for task, r in tasks.items()}
    std = {task: all(r["gaps"][k]["std"] <= t["max_std"] for k in QUANT_GAPS) for task, r in tasks.items()}
    verdicts = {
        "1_teacher_knows_more": all(p1.values()) and bool(p1),
        "2a_ptq_w2_hurts": all(ptq.values()) and bool(ptq),
        "2b_qat_w2_gap_on_two_tasks": sum(qat.values()) >= t["qat_tasks"],
        "2c_gap_std_at_most_1": all(std.values()) and bool(std),
    }
    return {"tasks": tasks, "per_task": {"1": p1, "2a": ptq, "2b": qat, "2c": std},
            "verdicts": verdicts, "thresholds": dict(t)}


def _fmt(s: Dict[str, float]) -> str:
    return f"{s['mean']:.1f} ± {s['std']:.1f}"


def markdown(ev: Dict, seeds: Sequence[int], qat_train_size: Optional[int], seconds: float,
             setting: str = "") -> str:
    split = f"train{qat_train_size} (first {qat_train_size} train rows)" if qat_train_size else "all of train"
    yes = {True: "met", False: "**not met**"}
    lines = [
        "# Benchmark properties (issue #13)",
        "",
        f"Made by `scripts/benchmark_properties.py`: seeds {', '.join(map(str, seeds))}; the student and "
        f"the from-scratch model train on {split}; the teacher was fine-tuned on all of train. "
        "Gap = FP minus the run, mean ± sample std over the seeds.",
        "",
    ] + ([f"Setting: {setting}", ""] if setting else []) + [
        "| task | metric | FP | scratch | PTQ W4 | PTQ W2 | QAT W2 -KD "
        "| gap scratch | gap PTQ W4 | gap PTQ W2 | gap QAT W2 |",
        "| -- | -- | -- | -- | -- | -- | -- | -- | -- | -- | -- |",
    ]
    for task, r in ev["tasks"].items():
        v, g = r["values"], r["gaps"]
        lines.append(f"| {task} | {r['metric']} | {r['fp']:.1f} | {_fmt(v['scratch'])} | {_fmt(v['ptq_w4'])} | "
                     f"{_fmt(v['ptq_w2'])} | {_fmt(v['qat_w2'])} | {_fmt(g['scratch'])} | {_fmt(g['ptq_w4'])} | "
                     f"{_fmt(g['ptq_w2'])} | {_fmt(g['qat_w2'])} |")
    t, verdict, per = ev["thresholds"], ev["verdicts"], ev["per_task"]

    def which(key):
        return ", ".join(f"{task} {'yes' if ok else 'no'}" for task, ok in per[key].items())

    lines += [
        "",
        f"1. FP - scratch >= {t['scratch_gap']:g} on every task: {yes[verdict['1_teacher_knows_more']]} ({which('1')})",
        f"2. FP - PTQ W2 >= {t['ptq_w2_gap']:g} and > FP - PTQ W4 on every task: "
        f"{yes[verdict['2a_ptq_w2_hurts']]} ({which('2a')})",
        f"   FP - QAT W2 (no KD) >= {t['qat_w2_gap']:g} on at least {t['qat_tasks']} tasks: "
        f"{yes[verdict['2b_qat_w2_gap_on_two_tasks']]} ({which('2b')})",
        f"   std of every quantization gap (PTQ W4, PTQ W2, QAT W2) <= {t['max_std']:g}: "
        f"{yes[verdict['2c_gap_std_at_most_1']]} ({which('2c')})",
        "3. run_all_mini_glue.sh <= 90 min and the test suite <= 15 min: not measured by this script "
        f"(it took {seconds / 60:.1f} min).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--work", default=os.path.join(REPO, "work", "mini-glue"))
    p.add_argument("--tasks", default="SST-2,RTE,CoLA,MRPC")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--qat-train-size", type=int, default=int(os.environ.get("QAT_TRAIN_SIZE") or 0) or None)
    p.add_argument("--ptq-weight-calibrator", default="mse", choices=("max", "mse"))
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--out", default=os.path.join(REPO, "results", "benchmark_properties.md"))
    p.add_argument("--setting", default=None,
                   help="how WORK's data and teachers were made, printed in the output (default: "
                        "WORK/lexicon, the latent lexicon run_all_mini_glue.sh records, if present)")
    p.add_argument("--rerender", metavar="JSON",
                   help="run nothing: evaluate the measured values of an earlier output JSON again "
                        "(current thresholds and checks) and rewrite it and its markdown")
    args = p.parse_args(argv)
    if args.rerender:
        with open(args.rerender, encoding="utf-8") as f:
            old = json.load(f)
        args.out = os.path.splitext(args.rerender)[0] + ".md"
        args.qat_train_size, args.setting = old["qat_train_size"], old.get("setting", "")
        measured = {t: old["measured"][t] for t in old["task_order"]}
        _write(args, measured, old["seeds"], old["seconds"])
        return 0
    if args.setting is None:
        lexicon = os.path.join(args.work, "lexicon")
        args.setting = open(lexicon).read().strip() if os.path.exists(lexicon) else ""
    seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
    start = time.time()
    measured = {}
    try:
        for task in [t for t in args.tasks.split(",") if t]:
            data_bin = os.path.join(args.work, "data", f"{task}-bin")
            teacher = os.path.join(args.work, "teachers", task, "checkpoint_best.pt")
            measured[task] = measure_task(task, data_bin, teacher, args.work, seeds, args.qat_train_size,
                                          args.device, args.ptq_weight_calibrator)
    except runner.RunnerError as e:
        print(f"benchmark_properties: error: {e}", file=sys.stderr)
        return 1
    ev = _write(args, measured, seeds, time.time() - start)
    return 0 if all(ev["verdicts"].values()) else 2


def _write(args, measured: Dict, seeds: Sequence[int], seconds: float) -> Dict:
    ev = evaluate(measured)
    text = markdown(ev, seeds, args.qat_train_size, seconds, args.setting)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    data = json.dumps({"measured": measured, **ev, "seeds": seeds, "qat_train_size": args.qat_train_size,
                       "setting": args.setting, "task_order": list(measured), "seconds": round(seconds, 1)},
                      indent=1, sort_keys=True)
    for path, content in ((os.path.splitext(args.out)[0] + ".json", data), (args.out, text)):
        with open(path + ".tmp", "w", encoding="utf-8") as f:  # nothing half-written
            f.write(content)
        os.replace(path + ".tmp", path)
    print(text)
    return ev


if __name__ == "__main__":
    sys.exit(main())
