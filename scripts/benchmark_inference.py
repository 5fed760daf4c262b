"""CPU inference benchmark of qbert-export's models: writes results/benchmark_inference_cpu.md.

One process, a roberta-base-shaped model (12 x 768, 12 heads, vocab 50265, random weights;
quantizer states from a short max calibration on random tokens, ``qbert.calib.calibrate``),
batches 1x128, 8x128, 32x128, median of REPEATS runs after one warm-up, all with THREADS
threads: fairseq FP32 eager; fairseq fake-quant W8A8; ORT FP32 (this exporter, unquantized);
ORT dynamic int8 of that FP export (``onnxruntime.quantization.quantize_dynamic``); our exports
W8A8, W4A8, W4 exact (weight-only, fp32 MatMul with the grid values), W4 ``--fast``; and file
sizes against the FP32 state dict. The ORT profile of our W8A8 model at 8x128 (time per
operator type) is appended, so a missed target shows where the time goes.

    python scripts/benchmark_inference.py [--repeats 5] [--threads 2] [--out results/benchmark_inference_cpu.md]
"""
import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import fairseq_qbert  # noqa: E402,F401
from fairseq_qbert.export.convert import to_export  # noqa: E402
from fairseq_qbert.models.standalone import HEAD, build_model  # noqa: E402
from qbert.export import create_session, write_export  # noqa: E402

VOCAB = 50265
SHAPES = ((1, 128), (8, 128), (32, 128))
GROUPS = "EMB,QKV,FFN"
CONFIGS = {  # name: (quant_roberta flags, export mode)
    "W8A8": (["--quant-groups", GROUPS, "--weight-bits", "8", "--act-bits", "8"], "exact"),
    "W4A8": (["--quant-groups", GROUPS, "--weight-bits", "4", "--act-bits", "8"], "exact"),
    "W4 exact": (["--quant-groups", GROUPS, "--weight-bits", "4"], "exact"),
    "W4 --fast": (["--quant-groups", GROUPS, "--weight-bits", "4"], "fast"),
    "W2 (size only)": (["--quant-groups", GROUPS, "--weight-bits", "2"], None),
}


def tokens(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, VOCAB, (batch, length), generator=g)
    t[:, 0], t[:, -1] = 0, 2
    return t


def model_for(flags, seed=1):
    torch.manual_seed(seed)  # same random weights for every configuration
    model = build_model("quant_roberta_base", flags, vocab_size=VOCAB)
    if flags:
        from qbert.calib import calibrate

        def loop(m):
            with torch.no_grad():
                for i in range(2):
                    m(tokens(4, 128, seed=100 + i), features_only=True, classification_head_name=HEAD)
            return 2

        calibrate(model, loop)
    return model.eval()


def median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_torch(model, repeats):
    out = {}
    for b, n in SHAPES:
        t = tokens(b, n)
        with torch.no_grad():
            out[(b, n)] = median_time(lambda t=t: model(t, features_only=True, classification_head_name=HEAD),
                                      repeats if b < 32 else max(2, repeats // 2))
    return out


def time_session(session, repeats):
    out = {}
    for b, n in SHAPES:
        feed = {"src_tokens": tokens(b, n).numpy()}
        out[(b, n)] = median_time(lambda feed=feed: session.run(["logits"], feed), repeats)
    return out


def profile(onnx_path, threads, batch=(8, 128), runs=3):
    import onnxruntime as ort

    from qbert.export.runtime import DISABLED_OPTIMIZERS

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(onnx_path), "profile")
    s = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=DISABLED_OPTIMIZERS)
    feed = {"src_tokens": tokens(*batch).numpy()}
    for _ in range(runs + 1):
        s.run(["logits"], feed)
    with open(s.end_profiling()) as f:
        events = json.load(f)
    per_op, total = defaultdict(float), 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
            total += e["dur"]
    return sorted(((op, 100 * d / total) for op, d in per_op.items()), key=lambda x: -x[1])


def cpu_header():
    name, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = re.search(r"model name\s*:\s*(.*)", info).group(1)
        have = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16") if f in have)
    except (OSError, AttributeError):
        pass
    return name, flags


def main(argv=None):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(REPO, "results", "benchmark_inference_cpu.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="qbert_bench_")
    load_before = os.getloadavg()[0]
    rows, sizes = {}, {}

    fp_model = model_for([])
    state_path = os.path.join(work, "fp32_state_dict.pt")
    torch.save(fp_model.state_dict(), state_path)
    sizes["FP32 state dict (torch.save)"] = os.path.getsize(state_path)
    rows["fairseq FP32 eager"] = time_torch(fp_model, args.repeats)
    fp_dir = write_export(to_export(fp_model, HEAD), os.path.join(work, "fp32"))
    sizes["FP32 export (model.safetensors)"] = os.path.getsize(os.path.join(fp_dir, "model.safetensors"))
    del fp_model
    gc.collect()
    fp_onnx = os.path.join(fp_dir, "model.onnx")
    rows["ORT FP32 (this exporter)"] = time_session(create_session(fp_onnx, args.threads), args.repeats)
    dyn = os.path.join(work, "dynamic_int8.onnx")
    import onnx

    # the contrib MultiHeadAttention's outputs have no type for the quantizer's shape inference
    quantize_dynamic(fp_onnx, dyn, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    rows["ORT quantize_dynamic int8 of the FP export"] = time_session(create_session(dyn, args.threads), args.repeats)

    paths = {}
    for name, (flags, mode) in CONFIGS.items():
        model = model_for(flags)
        if name == "W8A8":
            rows["fairseq fake-quant W8A8"] = time_torch(model, args.repeats)
        out = write_export(to_export(model, HEAD), os.path.join(work, re.sub(r"\W+", "_", name)),
                           mode=mode or "exact")
        del model
        gc.collect()
        sizes[f"{name} model.safetensors"] = os.path.getsize(os.path.join(out, "model.safetensors"))
        if mode is not None:
            paths[name] = os.path.join(out, "model.onnx")
            rows[f"ORT ours {name}"] = time_session(create_session(paths[name], args.threads), args.repeats)
        print(f"done {name}", flush=True)
    ops = profile(paths["W8A8"], args.threads)
    write_report(args, rows, sizes, ops, load_before)
    subprocess.run(["rm", "-rf", work])


def write_report(args, rows, sizes, ops, load_before):
    import onnxruntime as ort

    base = rows["fairseq FP32 eager"]
    dyn = rows["ORT quantize_dynamic int8 of the FP export"]
    ours = rows["ORT ours W8A8"]
    cpu, flags = cpu_header()
    ref = sizes["FP32 state dict (torch.save)"]
    lines = [
        "# Inference benchmark (CPU)",
        "",
        f"Generated by `scripts/benchmark_inference.py --repeats {args.repeats} --threads {args.threads}` "
        f"on {time.strftime('%Y-%m-%d')}; do not edit by hand.",
        "",
        f"* CPU: {cpu} ({os.cpu_count()} cores visible; flags: {flags}); {args.threads} threads for torch and ORT",
        f"* torch {torch.__version__}, onnxruntime {ort.__version__}; load average at start {load_before:.1f} "
        "(the machine is shared: ratios within one run are what counts)",
        "* model: roberta-base shape (12 x 768, 12 heads, FFN 3072, vocab 50265), random weights, "
        f"groups {GROUPS} quantized, head FP; quantizer states from a 2-batch max calibration "
        "(`qbert.calib.calibrate`); activations LSQ A8 where A8",
        f"* time: median of {args.repeats} runs after one warm-up ({max(2, args.repeats // 2)} for fairseq at 32x128)",
        "",
        "| model | " + " | ".join(f"{b}x{n} ms" for b, n in SHAPES) + " | "
        + " | ".join(f"speedup {b}x{n}" for b, n in SHAPES) + " |",
        "| -- |" + " --: |" * (2 * len(SHAPES)),
    ]
    for name, t in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{1000 * t[s]:.1f}" for s in SHAPES) + " | "
                     + " | ".join(f"{base[s] / t[s]:.2f}x" for s in SHAPES) + " |")
    lines += ["", "Speedup = fairseq FP32 eager time / the row's time (same process, same inputs).", "",
              "| file | MB | vs FP32 state dict |", "| -- | --: | --: |"]
    for name, size in sizes.items():
        lines.append(f"| {name} | {size / 1e6:.1f} | {size / ref:.3f}x |")
    targets = [
        ("W8A8 >= 4.5x fairseq FP32 at 8x128", base[(8, 128)] / ours[(8, 128)], 4.5),
        ("W8A8 >= 5x fairseq FP32 at 1x128", base[(1, 128)] / ours[(1, 128)], 5.0),
        ("W8A8 >= 1.15x ORT dynamic int8 at 8x128", dyn[(8, 128)] / ours[(8, 128)], 1.15),
        ("W8A8 >= 1.15x ORT dynamic int8 at 1x128", dyn[(1, 128)] / ours[(1, 128)], 1.15),
    ]
    size_targets = [("W8", "W8A8", 0.27), ("W4", "W4A8", 0.15), ("W2", "W2 (size only)", 0.09)]
    lines += ["", "## Targets", "", "| target | measured | reached |", "| -- | --: | -- |"]
    for text, value, goal in targets:
        lines.append(f"| {text} | {value:.2f}x | {'yes' if value >= goal else '**no**'} |")
    for label, key, goal in size_targets:
        r = sizes[f"{key} model.safetensors"] / ref
        lines.append(f"| {label} model.safetensors <= {goal}x FP32 state dict | {r:.3f}x | "
                     f"{'yes' if r <= goal else '**no**'} |")
    lines += ["", "## Where the time goes: ORT profile of W8A8 at 8x128 (share of kernel time)", "",
              "| operator | share |", "| -- | --: |"]
    lines += [f"| {op} | {share:.1f}% |" for op, share in ops[:12]]
    lines.append("")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
