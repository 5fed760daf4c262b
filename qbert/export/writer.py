"""Writing a whole export folder: model.safetensors, config.json, model.onnx, dictionaries."""
import os
import shutil
from typing import Dict, Optional

from .format import ONNX, ExportedModel, staged_dir
from .onnx_graph import build_onnx, save_onnx


def write_export(export: ExportedModel, out_dir: str, force: bool = False, mode: str = "exact",
                 nbits: bool = False, extra_files: Optional[Dict[str, str]] = None) -> str:
    """Write ``export`` to ``out_dir`` with ``extra_files`` ({name in the folder: source
    path}); all or nothing (a temporary folder renamed at the end)."""
    export.validate()
    onnx_model = build_onnx(export, mode, nbits)
    export.files["onnx"] = {"file": ONNX, "mode": mode, "nbits": nbits}
    with staged_dir(out_dir, force) as tmp:
        export.save(tmp)
        save_onnx(onnx_model, os.path.join(tmp, ONNX))
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, os.path.join(tmp, name))
    return out_dir
