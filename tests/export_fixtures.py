"""Tiny exports for the export tests: fairseq-free random exports (unit tests), and tiny
quant_roberta models with initialised quantizers (integration tests; fairseq imported there)."""
import os

import torch

from qbert.export import ExportedModel, QuantInput, QuantWeight, write_export

ENC = "encoder.sentence_encoder."
HEAD = "classification_heads.sentence_classification_head."
WORDS = [f"w{i}" for i in range(20)]
LABELS = ["pos", "neg"]


def _linear_names(layers: int):
    for i in range(layers):
        for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"):
            yield f"{ENC}layers.{i}.{p}"
    yield HEAD + "dense"
    yield HEAD + "out_proj"


def random_export(weight_bits: int = 0, act_bits: int = 0, dim: int = 16, layers: int = 2,
                  classes: int = 2, seed: int = 0) -> ExportedModel:
    """A 2 x 16 RoBERTa-shaped export: every Linear quantized at ``weight_bits`` (0 = FP),
    inputs at ``act_bits`` (0 = FP)."""
    g = torch.Generator().manual_seed(seed)
    vocab, positions = 4 + len(WORDS) + 1, 34
    arch = {"family": "roberta", "layers": layers, "embed_dim": dim, "ffn_dim": 2 * dim, "heads": 2,
            "vocab_size": vocab, "positions": positions, "max_positions": positions - 2, "padding_idx": 1,
            "layer_norm_eps": 1e-5, "activation_fn": "gelu", "pooler_activation_fn": "tanh",
            "normalize_before": False, "layernorm_embedding": True, "final_layer_norm": False,
            "embed_scale": 1.0, "head_name": "sentence_classification_head", "num_classes": classes,
            "inner_dim": dim, "regression": False}
    ex = ExportedModel(arch=arch)
    ex.fp[ENC + "embed_tokens.weight"] = torch.randn(vocab, dim, generator=g) * 0.5
    ex.fp[ENC + "embed_positions.weight"] = torch.randn(positions, dim, generator=g) * 0.1
    norms = [ENC + "layernorm_embedding"] + [f"{ENC}layers.{i}.{n}" for i in range(layers)
                                             for n in ("self_attn_layer_norm", "final_layer_norm")]
    for n in norms:
        ex.fp[n + ".weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
        ex.fp[n + ".bias"] = 0.1 * torch.randn(dim, generator=g)
    for name in _linear_names(layers):
        out_dim = 2 * dim if name.endswith("fc1") else dim
        if name == HEAD + "out_proj":
            out_dim = classes
        in_dim = 2 * dim if name.endswith("fc2") else dim
        w = torch.randn(out_dim, in_dim, generator=g) / in_dim ** 0.5
        ex.fp[name + ".bias"] = 0.1 * torch.randn(out_dim, generator=g)
        if weight_bits:
            qmax = 2 ** (weight_bits - 1) - 1
            scale = w.abs().max() / qmax
            codes = (w / scale).round().clamp(-qmax - 1, qmax).to(torch.int8)
            ex.weights[name + ".weight"] = QuantWeight(codes, scale.reshape(1), weight_bits, -qmax - 1, qmax, "lsq")
            if act_bits:
                aq = 2 ** (act_bits - 1) - 1
                ex.inputs[name] = QuantInput(torch.tensor([3.0 / aq]), act_bits, True, -aq - 1, aq, "lsq")
        else:
            ex.fp[name + ".weight"] = w
    ex.files = {"bpe": "whitespace", "num_inputs": 1}
    return ex


def write_tiny_export(out_dir, export=None, num_inputs: int = 1, **kwargs) -> str:
    """Write ``export`` (default: random_export(**kwargs)) with a dictionary and labels."""
    export = export or random_export(**kwargs)
    src = os.path.join(os.path.dirname(str(out_dir)), f".{os.path.basename(str(out_dir))}-files")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "dict.txt"), "w") as f:
        f.writelines(f"{w} {100 - i}\n" for i, w in enumerate(WORDS))
    with open(os.path.join(src, "labels.txt"), "w") as f:
        f.writelines(f"{w} 10\n" for w in LABELS + ["madeupword0000"])
    export.files.update(dictionary="dict.txt", labels="labels.txt", num_inputs=num_inputs)
    write_export(export, str(out_dir), extra_files={"dict.txt": os.path.join(src, "dict.txt"),
                                                    "labels.txt": os.path.join(src, "labels.txt")})
    return str(out_dir)


def padded_tokens(seed=0, lengths=(17, 12, 17, 6, 17)):
    """Random token ids (4..99) of one row per length, ``<s>`` (0) first, padded (1) after each
    row's length to the longest."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(4, 100, (len(lengths), max(lengths)), generator=g)
    t[:, 0] = 0
    for row, n in enumerate(lengths):
        t[row, n:] = 1
    return t


def ready_model(flags, seed=0, tokens=padded_tokens):
    """A quant_roberta_tiny (vocabulary 100) whose quantizers are initialised by one training
    forward of ``tokens(seed + 1)``, in eval mode."""
    from fairseq_qbert.models.standalone import HEAD as HEAD_NAME
    from fairseq_qbert.models.standalone import build_model

    torch.manual_seed(seed)
    model = build_model("quant_roberta_tiny", flags, vocab_size=100)
    model.train()
    with torch.no_grad():
        model(tokens(seed + 1), features_only=True, classification_head_name=HEAD_NAME)
    return model.eval()
