"""Reading an HF ``save_pretrained`` folder's config and weights; writing an output folder atomically."""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterator

import torch

from qbert.errors import CheckpointError, ConfigError, DataError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def read_config(hf_dir: str) -> Dict:
    if not os.path.isdir(hf_dir):
        raise DataError(f"{hf_dir}: no such folder (a transformers save_pretrained folder is needed)")
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise DataError(f"{hf_dir}: no config.json; is it a transformers save_pretrained folder?")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})") from None


def _load_file(path: str) -> Dict[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt/truncated/refused file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: cannot read the weights ({type(e).__name__}: {first})") from None


def read_weights(hf_dir: str) -> Dict[str, torch.Tensor]:
    """The state dict of the folder (safetensors preferred; sharded index files followed)."""
    for name in WEIGHT_FILES:
        path = os.path.join(hf_dir, name)
        if not os.path.isfile(path):
            continue
        if not name.endswith(".index.json"):
            return _load_file(path)
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f).get("weight_map", {}).values()))
        out: Dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_path = os.path.join(hf_dir, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{path} names the shard {shard}, which is missing")
            out.update(_load_file(shard_path))
        return out
    raise CheckpointError(f"{hf_dir}: no weights file (expected one of: {', '.join(WEIGHT_FILES)})")


def check_new_dir(out_dir: str) -> None:
    if os.path.lexists(out_dir):
        raise ConfigError(f"--out {out_dir} exists; give a new folder (nothing was written)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {out_dir}: parent folder {parent} does not exist")


@contextlib.contextmanager
def staged_dir(out_dir: str) -> Iterator[str]:
    """A temporary folder next to ``out_dir``, renamed to ``out_dir`` when the block succeeds
    and removed when it fails: ``out_dir`` is either complete or absent."""
    check_new_dir(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(out_dir)) + ".partial-", dir=parent)
    try:
        yield tmp
        check_new_dir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
