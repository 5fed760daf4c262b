#!/usr/bin/env python
"""Training-step time and peak memory of QAT configurations, as ratios to full precision.

Each configuration runs in its own subprocess (so peak RSS is its own), builds
``quant_roberta`` with the given flags, and times forward + backward + Adam steps on
random tokens of shape (batch, seq_len). Each configuration is measured against its
baseline interleaved step by step: the two processes (baseline and configuration) are both
alive and take turns (FP, Q, FP, Q, ...), so each ratio compares steps taken a few seconds
apart under the same machine load; a row reports the median over rounds of its step time
divided by the baseline's step in the same round (the baseline is re-measured for every row).

The KD rows (``kd: true``) time TernaryBERT-style distillation as ``kd_sentence_prediction
--kd-parts trm,logits`` computes it (student forward with hidden states and pre-softmax
scores captured, frozen FP teacher forward under no_grad, logits + hidden + attention MSE
losses, backward, Adam); their baseline is the same step with an FP student ("FP32 + KD").

    python scripts/benchmark_qat.py                      # roberta-base shape, CPU; writes
                                                         # results/benchmark_cpu_roberta_base.md
    python scripts/benchmark_qat.py --profile            # + top operators by self time per config
    python scripts/benchmark_qat.py --device cuda --batch-size 32 --out results/benchmark_cuda.md
    python scripts/benchmark_qat.py --arch quant_roberta_tiny --rounds 2 --out /tmp/tiny.md

Memory: peak RSS of the process during the steps on CPU (includes the model, Adam's
state and the allocator's caching); ``torch.cuda.max_memory_allocated`` on GPU.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

#: the environment that switches the fast paths off (qbert.quant.fused, qbert.quant.kernels)
REFERENCE_ENV = {"QBERT_FUSED_LAYERS": "0", "QBERT_QUANT_KERNELS": "eager"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "results", "benchmark_cpu_roberta_base.md")

# (name, flags, kd, baseline name)
DEFAULT_CONFIGS = [
    ("FP32", "", False, None),
    ("W4 LSQ (EMB,QKV,FFN)", "--quant-groups EMB,QKV,FFN --weight-bits 4", False, "FP32"),
    ("W4A8 LSQ (EMB,QKV,FFN)", "--quant-groups EMB,QKV,FFN --weight-bits 4 --act-bits 8", False, "FP32"),
    ("W2A8 LSQ (EMB,QKV,FFN)", "--quant-groups EMB,QKV,FFN --weight-bits 2 --act-bits 8", False, "FP32"),
    ("W4A8 LSQ, shared q/k/v input quantizer",
     "--quant-groups EMB,QKV,FFN --weight-bits 4 --act-bits 8 --shared-qkv-input-quantizer", False, "FP32"),
    ("FP32 + KD", "", True, None),
    ("W2 LSQ + KD (trm,logits)", "--quant-groups EMB,QKV,FFN --weight-bits 2", True, "FP32 + KD"),
]

#: issue #12's targets on CPU: (configuration, step time <= x FP32, peak memory <= x FP32)
TARGETS = [("W4 LSQ (EMB,QKV,FFN)", 1.05, 1.10), ("W4A8 LSQ (EMB,QKV,FFN)", 1.10, 1.10),
           ("W2A8 LSQ (EMB,QKV,FFN)", 1.10, 1.10)]


# ------------------------------------------------------------------------- child
def _kd_losses():
    from fairseq_qbert.criterions import kd_losses
    return kd_losses


def build_step(opts, flags: str, kd: bool):
    """(step function, model): one fwd+bwd+Adam step as fairseq's train_step runs it."""
    import torch

    import fairseq_qbert  # noqa: F401  (registers quant_roberta)
    from fairseq_qbert.models.standalone import HEAD, build_model

    torch.manual_seed(0)
    model = build_model(opts.arch, flags.split() + ["--dropout", "0.1"], vocab_size=opts.vocab).to(opts.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    tokens = torch.randint(4, opts.vocab, (opts.batch_size, opts.seq_len), device=opts.device)
    tokens[:, 0] = 0
    labels = torch.randint(0, 2, (opts.batch_size,), device=opts.device)
    model.train()
    updates = iter(range(10**9))
    sync = torch.cuda.synchronize if opts.device == "cuda" else (lambda: None)

    teacher = None
    if kd:
        from fairseq_qbert.models.quant_attention import capture_attention_scores

        torch.manual_seed(1)
        teacher = build_model(opts.arch, ["--dropout", "0.1"], vocab_size=opts.vocab).to(opts.device).eval()
        kd_losses = _kd_losses()
        padding_mask = tokens.eq(1)

    def step():
        model.set_num_updates(next(updates))  # as fairseq's task.train_step does
        optimizer.zero_grad(set_to_none=True)
        if not kd:
            out = model(tokens, classification_head_name=HEAD)[0]
            loss = torch.nn.functional.cross_entropy(out, labels)
        else:  # kd_sentence_prediction --kd-parts trm,logits (identity layer map)
            with capture_attention_scores(model) as s_scores:
                logits, extra = model(tokens, features_only=True, classification_head_name=HEAD,
                                      return_all_hiddens=True)
            with torch.no_grad(), capture_attention_scores(teacher) as t_scores:
                t_logits, t_extra = teacher(tokens, features_only=True, classification_head_name=HEAD,
                                            return_all_hiddens=True)
            loss = kd_losses.logits_kd_loss(logits, t_logits)
            loss = loss + sum(kd_losses.hidden_kd_loss(s, t, padding_mask)
                              for s, t in zip(extra["inner_states"], t_extra["inner_states"]))
            loss = loss + sum(kd_losses.attention_kd_loss(s, t, padding_mask)
                              for s, t in zip(s_scores, t_scores))
        loss.backward()
        optimizer.step()
        sync()

    return step, model


def serve(opts, flags: str, kd: bool) -> None:
    """Runs in the child process: build and warm up, then one timed step per "step" line
    on stdin (answering with its time), and on "done" the peak memory (and a profile)."""
    import torch

    t0 = time.perf_counter()
    step, model = build_step(opts, flags, kd)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()  # warm-up; also initialises quantizer step sizes from data (and compiles kernels)
    warmup_s = time.perf_counter() - t0
    if opts.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    print(json.dumps({"ready": True, "build_s": build_s, "warmup_s": warmup_s}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        step()
        print(json.dumps({"step_s": time.perf_counter() - t0}), flush=True)
    if opts.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    result = {"peak_mib": peak}
    if opts.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if opts.device == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        key = "self_cuda_time_total" if opts.device == "cuda" else "self_cpu_time_total"
        rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in prof.key_averages())
        result["profile"] = [(e.key, getattr(e, key) / 1e3, e.count) for e in rows
                             if getattr(e, key) > 0]
        result["profile_total_ms"] = total / 1e3
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------ parent
class Child:
    """One configuration's process, taking one timed step per :meth:`step` call."""

    def __init__(self, opts, flags: str, kd: bool, profile: bool, env=None):
        cmd = [sys.executable, os.path.abspath(__file__), "--arch", opts.arch, "--vocab", str(opts.vocab),
               "--batch-size", str(opts.batch_size), "--seq-len", str(opts.seq_len),
               "--device", opts.device, "--child-flags", flags]
        if kd:
            cmd.append("--child-kd")
        if profile:
            cmd.append("--profile")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                                     env={**os.environ, **(env or {})})
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark child failed (exit {self.proc.wait()}): {self.proc.args}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()["step_s"]

    def finish(self) -> dict:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        result = self._read()
        self.proc.wait()
        return {**self.info, **result}


def measure_pair(opts, base_cfg, cfg) -> tuple:
    """(base result, config result): both processes alive, steps interleaved."""
    base = Child(opts, base_cfg[1], base_cfg[2], opts.profile)
    other = Child(opts, cfg[1], cfg[2], opts.profile, env=cfg[4] if len(cfg) > 4 else None)
    tb, tq = [], []
    for r in range(opts.rounds):
        tb.append(min(base.step() for _ in range(opts.steps)))
        tq.append(min(other.step() for _ in range(opts.steps)))
        print(f"  round {r + 1}/{opts.rounds} {base_cfg[0]}: {tb[-1]:.3f} s, {cfg[0]}: {tq[-1]:.3f} s "
              f"({tq[-1] / tb[-1]:.3f}x)", file=sys.stderr)
    rb, rq = base.finish(), other.finish()
    rb["steps"], rq["steps"] = tb, tq
    return rb, rq


def git_commit(output: str = "") -> str:
    """HEAD, marked when tracked files other than ``output`` (this run's table) differ."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        mine = os.path.relpath(os.path.abspath(output), REPO) if output else None
        dirty = [line for line in status if line[3:].strip() != mine]
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16")
                    return ", ".join(w for w in wanted if w in have) or "none of avx2/avx512/amx"
    except OSError:
        pass
    return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="quant_roberta_base")
    p.add_argument("--vocab", type=int, default=50265)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="timed steps per process and round "
                   "(the fastest counts; default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only these default configurations (with their baselines)")
    p.add_argument("--config", action="append", metavar="NAME=FLAGS",
                   help="extra configuration against FP32, e.g. 'W8A8=--quant-groups EMB,QKV,FFN --act-bits 8'")
    p.add_argument("--reference", action="store_true",
                   help="also measure every quantized configuration on the reference module paths "
                        "(QBERT_FUSED_LAYERS=0 QBERT_QUANT_KERNELS=eager: what was computed before the fast paths)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one more step of each process (torch.profiler, top operators by self time)")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--out", default=None, help=f"markdown output (default for the roberta-base CPU "
                   f"run: {os.path.relpath(DEFAULT_OUT, REPO)}; '-' = stdout only)")
    p.add_argument("--child-flags", help=argparse.SUPPRESS)
    p.add_argument("--child-kd", action="store_true", help=argparse.SUPPRESS)
    opts = p.parse_args()

    if opts.child_flags is not None:
        serve(opts, opts.child_flags, opts.child_kd)
        return

    configs = list(DEFAULT_CONFIGS)
    if opts.only:
        keep = set(opts.only)
        keep |= {c[3] for c in configs if c[0] in keep and c[3]}
        configs = [c for c in configs if c[0] in keep]
    configs += [(c.split("=", 1)[0], c.split("=", 1)[1], False, "FP32") for c in opts.config or []]
    if opts.reference:  # the same configurations on the reference module paths (before #12)
        configs += [(name + " [reference paths]", flags, kd, base, REFERENCE_ENV)
                    for name, flags, kd, base in list(configs) if base and "shared" not in flags]
    if any(c[3] == "FP32" for c in configs) and not any(c[0] == "FP32" for c in configs):
        configs.insert(0, DEFAULT_CONFIGS[0])

    by_name = {c[0]: c for c in configs}
    results, base_runs = {}, {}
    for cfg in configs:
        if not cfg[3]:
            continue
        print(f"{cfg[0]} against {cfg[3]}", file=sys.stderr)
        rb, rq = measure_pair(opts, by_name[cfg[3]], cfg)
        results[cfg[0]] = rq
        base_runs[cfg[0]] = rb
        results.setdefault(cfg[3], rb)  # the first pair's baseline process stands for the base row
    profiles = {name: r for name, r in results.items() if "profile" in r}

    out = opts.out
    if out is None and opts.arch == "quant_roberta_base" and opts.device == "cpu":
        out = DEFAULT_OUT
    tokens = opts.batch_size * opts.seq_len
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python scripts/benchmark_qat.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"# QAT training-step benchmark ({opts.arch}, batch {opts.batch_size} x {opts.seq_len} tokens, {opts.device})",
        "",
        f"Generated by `{command.strip()}` (regenerate with the same command).",
        "",
        f"* commit: {git_commit(out if out and out != '-' else '')}",
        f"* CPU: {cpu_name()}, {os.cpu_count()} cores, flags: {cpu_flags()}; torch threads "
        f"{_torch_threads()}; load average at the end: {load:.2f}",
        f"* method: every configuration runs in its own process next to a fresh process of its "
        f"baseline; after one warm-up step each, they take turns for {opts.rounds} rounds (round = "
        f"the fastest of {opts.steps} fwd+bwd+Adam steps of the baseline, then of the configuration); "
        "'time vs base' is the median over rounds of the configuration's step time divided by the "
        "baseline's of the same round; s/step and tokens/s are medians over rounds; memory = "
        + ("peak CUDA allocation." if opts.device == "cuda" else "peak RSS of the process, vs its baseline process's.")
        + " Warm-up includes compiling the fused kernels.",
        "* the KD rows distil as `--criterion kd_sentence_prediction --kd-parts trm,logits` does "
        "(teacher forward under no_grad, hidden + attention-score + logits losses); their base is FP32 + KD.",
        "",
        "Config | flags | base | s/step | tokens/s | time vs base | (rounds: min - max) | peak MiB | "
        "memory vs base | warm-up s",
        "-- | -- | -- | -- | -- | -- | -- | -- | -- | --",
    ]
    ratios = {}
    for name, flags, _kd, base, *_ in configs:
        r = results[name]
        step = statistics.median(r["steps"])
        if base:
            b = base_runs[name]
            per_round = [q / p for q, p in zip(r["steps"], b["steps"], strict=True)]
            ratios[name] = (statistics.median(per_round), r["peak_mib"] / b["peak_mib"])
            ratio_s, spread_s = f"{ratios[name][0]:.2f}x", f"{min(per_round):.2f} - {max(per_round):.2f}"
            mem_s = f"{ratios[name][1]:.2f}x"
        else:
            ratio_s, spread_s, mem_s = "1.00x", "", "1.00x"
        lines.append(f"{name} | `{flags or '(none)'}` | {base or '-'} | {step:.3f} | {tokens / step:.0f} | "
                     f"{ratio_s} | {spread_s} | {r['peak_mib']:.0f} | {mem_s} | {r['warmup_s']:.1f}")
    targets = [(name, limit, mem) for name, limit, mem in TARGETS if name in ratios]
    if targets and opts.arch == "quant_roberta_base" and opts.device == "cpu":
        lines += ["", "## Targets (issue #12: ratios to FP32 in the same run, this CPU)", "",
                  "config | step time target | measured | reached | peak memory target | measured | reached",
                  "-- | -- | -- | -- | -- | -- | --"]
        for name, limit, mem in targets:
            t, m = ratios[name]
            lines.append(f"{name} | <= {limit:.2f}x | {t:.2f}x | {'yes' if t <= limit else '**no**'} | "
                         f"<= {mem:.2f}x | {m:.2f}x | {'yes' if m <= mem else '**no**'}")
    if profiles:
        lines += ["", "## Profile: where the time goes (torch.profiler, one step each, last round)", "",
                  "Operators by self CPU time; for the quantized rows the table is sorted by the time "
                  "*added* over the baseline's same operator (`## Call CompiledFxGraph ...` are the "
                  "fused fake-quantization kernels of `qbert.quant.kernels`; `_QuantLinearFn*` the "
                  "fused Linear's Python; `TorchDynamo Cache Lookup` / `Torch-Compiled Region` the "
                  "per-call overhead of the compiled kernels).", ""]
        for name, _, _, base, *_ in configs:
            prof = profiles.get(name)
            if prof is None:
                continue
            ops = {op: (ms, n) for op, ms, n in prof["profile"]}
            base_ops = {op: ms for op, ms, _ in profiles[base]["profile"]} if base in profiles else {}
            title = f"### {name}" + (f" (vs {base})" if base_ops else "")
            lines += [title, "", f"total self time {prof['profile_total_ms']:.0f} ms"
                      + (f" (base {profiles[base]['profile_total_ms']:.0f} ms)" if base_ops else ""), ""]
            if base_ops:
                rows = sorted(ops.items(), key=lambda kv: -(kv[1][0] - base_ops.get(kv[0], 0.0)))
                lines += ["operator | self ms | base self ms | added ms | calls", "-- | -- | -- | -- | --"]
                lines += [f"`{op}` | {ms:.1f} | {base_ops.get(op, 0.0):.1f} | {ms - base_ops.get(op, 0.0):+.1f} | {n}"
                          for op, (ms, n) in rows[:opts.profile_top]]
            else:
                rows = sorted(ops.items(), key=lambda kv: -kv[1][0])
                lines += ["operator | self ms | calls", "-- | -- | --"]
                lines += [f"`{op}` | {ms:.1f} | {n}" for op, (ms, n) in rows[:opts.profile_top]]
            lines.append("")
    table = "\n".join(lines) + "\n"
    print(table)
    if out and out != "-":
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(table)
        os.replace(tmp, out)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
