"""The core package ``qbert`` imports without fairseq (and without the fairseq user dir).

Deployment-side tools (prediction with ONNX Runtime, export, HF conversion) and the
experiment scripts build on ``qbert``; a fairseq import there would drag in the training
stack (3 s, sklearn, scipy). Every module under ``qbert/`` is imported in a fresh
interpreter, so a subsystem added later is checked without touching this test.
"""
import subprocess
import sys

from conftest import REPO_DIR

_PROBE = r"""
import importlib, pkgutil, sys
import qbert
names = sorted(m.name for m in pkgutil.walk_packages(qbert.__path__, "qbert."))
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("fairseq", "fairseq_cli", "fairseq_qbert"))
print(len(names))
print(",".join(leaked))
"""


def test_every_qbert_module_imports_without_fairseq():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, leaked = proc.stdout.splitlines()[-2:]
    assert int(count) >= 10  # quant (7 modules), groups, errors, data, experiments
    assert leaked == "", f"imported by qbert: {leaked}"


def test_the_probe_sees_a_fairseq_import():
    """The check above can fail: importing the user dir is reported."""
    probe = _PROBE.replace("import qbert\n", "import qbert, fairseq_qbert\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_DIR, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fairseq" in proc.stdout.splitlines()[-1].split(",")
