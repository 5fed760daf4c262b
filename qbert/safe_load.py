"""Loading fairseq checkpoints with torch's restricted unpickler (``weights_only=True``).

fairseq checkpoints are pickles. Besides tensors and plain containers (which torch's
``weights_only`` unpickler accepts by default) they hold a few Python objects; loading them
needs exactly these globals, found by loading checkpoints written here:

* ``argparse.Namespace``: the ``args`` of ``roberta.base``-style checkpoints, and
  ``cfg["model"]`` of every ``fairseq-train`` checkpoint of a model registered with
  ``add_args`` (``roberta``, ``quant_roberta``: the argparse path). Checkpoints of
  ``fairseq-hydra-train`` need nothing beyond torch's defaults.
* numpy scalars (``numpy._core.multiarray.scalar``, ``numpy.dtype`` and the scalar dtype
  classes): fairseq keeps the best validation metric in ``extra_state``, and for metrics
  computed with numpy (seen: MRPC's ``acc_and_f1``) it is a numpy float. Rebuilding a
  scalar from a dtype and its bytes runs no code (torch's own docs name these globals for
  this case); numpy arrays stay refused.
* the omegaconf globals of an untyped ``DictConfig`` stored as an object (``DictConfig``,
  ``ListConfig``, ``AnyNode``, ``ContainerMetadata``, ``Metadata``, ``typing.Any`` and the
  builtins ``dict``, ``list``, ``int``, ``collections.defaultdict`` they reference): a
  checkpoint re-saved after fairseq's ``load_checkpoint_to_cpu`` (which turns ``cfg`` into
  a ``DictConfig``), and fairseq's DDP broadcast of a loaded checkpoint between ranks.

:func:`safe_load` allows these globals only for the duration of its own ``torch.load``
(never process-wide), so every other ``torch.load`` in the process keeps torch's default.
A file that needs any other global is refused with :class:`UnsafeCheckpointError`, one line
naming the global; there is no silent fallback to full pickle. Files the user trusts are
named in ``QBERT_TRUST_CHECKPOINT`` (``PATH[:PATH...]``; ``--trust-checkpoint PATH`` on the
fairseq command lines adds to it) and only those are loaded with full pickle.

Imports torch and omegaconf only, never fairseq.
"""
import argparse
import collections
import logging
import os
import pickle
import re
import threading
import typing
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from qbert.errors import CheckpointError

logger = logging.getLogger(__name__)

#: environment variable naming the checkpoint files loaded with full pickle
TRUST_ENV = "QBERT_TRUST_CHECKPOINT"
#: the command-line flag that adds to it (fairseq-train, fairseq-validate, ...)
TRUST_FLAG = "--trust-checkpoint"

#: globals of the checkpoints fairseq-train writes (argparse path) and of roberta.base-style
#: checkpoints that carry only ``args``
NAMESPACE_GLOBALS = (argparse.Namespace,)
#: globals of an (untyped) omegaconf DictConfig pickled as an object
OMEGACONF_GLOBALS = (DictConfig, ListConfig, AnyNode, ContainerMetadata, Metadata, typing.Any,
                     dict, list, int, collections.defaultdict)
#: globals of a pickled numpy scalar (np.float64(0.5)): the scalar constructor, np.dtype and
#: the dtype classes of bool, integer and floating scalars
NUMPY_SCALAR_GLOBALS = (np._core.multiarray.scalar, np.dtype) + tuple(
    type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64))
#: everything a fairseq checkpoint may need beyond torch's weights_only defaults
FAIRSEQ_SAFE_GLOBALS = NAMESPACE_GLOBALS + OMEGACONF_GLOBALS + NUMPY_SCALAR_GLOBALS

# torch keeps its allow-list in one process-wide set: hold it while ours is added
_LOCK = threading.RLock()

_GLOBAL_PATTERNS = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
)


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs a global outside the allow-list (it may run code when unpickled)."""

    def __init__(self, source: str, refused: str, path: Optional[str] = None):
        self.source = source
        self.refused = refused
        self.path = path
        if path is not None:
            hint = f"if you trust this file: {TRUST_FLAG} {path} (or {TRUST_ENV}={path})"
        else:
            hint = f"if you trust the checkpoint it came from, name it in {TRUST_FLAG} or {TRUST_ENV}"
        super().__init__(
            f"refused to unpickle {refused} from {source}: fairseq checkpoints need only "
            "tensors, containers, argparse.Namespace, omegaconf configs and numpy scalars; anything else "
            f"may run arbitrary code when loaded. {hint}")


def trusted_paths() -> List[str]:
    """The files named in ``QBERT_TRUST_CHECKPOINT`` (real paths)."""
    value = os.environ.get(TRUST_ENV, "")
    return [os.path.realpath(p) for p in value.split(os.pathsep) if p.strip()]


def trust(path: str) -> None:
    """Add ``path`` to ``QBERT_TRUST_CHECKPOINT`` (inherited by child processes)."""
    path = os.path.realpath(path)
    have = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p.strip()]
    if path not in (os.path.realpath(p) for p in have):
        os.environ[TRUST_ENV] = os.pathsep.join(have + [path])


def is_trusted(path) -> bool:
    """Whether the file ``path`` is named in ``QBERT_TRUST_CHECKPOINT``."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    return os.path.realpath(path) in trusted_paths()


def refused_global(exc: BaseException) -> Optional[str]:
    """What torch's weights_only unpickler refused, from its error text (None: not a refusal)."""
    text = str(exc)
    for pattern in _GLOBAL_PATTERNS:
        m = pattern.search(text)
        if m:
            return f"global '{m.group(1).rstrip('.')}'"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if m:
        detail = m.group(1).strip().splitlines()[0]
        if detail.startswith(("Can only", "Trying to call reduce", "Unsupported class")):
            return f"an object ({detail})"
    return None


def safe_load(f, map_location="cpu", trusted: Optional[bool] = None,
              extra_globals: Sequence = (), source: Optional[str] = None):
    """``torch.load`` of a fairseq checkpoint with ``weights_only=True`` and
    :data:`FAIRSEQ_SAFE_GLOBALS` (+ ``extra_globals``) allowed for this call only.

    ``f``: a path or a binary file object. ``trusted``: ``True`` loads with full pickle
    (only for files the user trusts), ``None`` (default) does so only when ``f`` is a path
    named in ``QBERT_TRUST_CHECKPOINT``. ``source`` names ``f`` in messages (default: the path).
    Raises :class:`UnsafeCheckpointError` when the pickle needs any other global, and
    :class:`~qbert.errors.CheckpointError` when it cannot be unpickled at all; other
    errors of ``torch.load`` (missing file, not a torch file) pass through unchanged.
    """
    is_path = isinstance(f, (str, os.PathLike))
    path = os.fspath(f) if is_path else None
    source = source or path or getattr(f, "name", None) or "the checkpoint"
    if trusted is None:
        trusted = is_path and is_trusted(path)
    if trusted:
        logger.warning(f"loading {source} with full pickle: trusted by {TRUST_FLAG} / {TRUST_ENV}")
        return torch.load(f, map_location=map_location, weights_only=False)
    with _LOCK, allowed_globals([*FAIRSEQ_SAFE_GLOBALS, *extra_globals]):
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            refused = refused_global(e)
            if refused is not None:
                raise UnsafeCheckpointError(source, refused, path) from None
            inner = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
            raise CheckpointError(f"cannot unpickle {source}: "
                                  f"{inner[0] if inner else type(e).__name__}") from None


class allowed_globals:
    """Context manager: ``globals_`` are in torch's weights_only allow-list inside it.

    Like ``torch.serialization.safe_globals``, but it adds only the globals not already
    allowed and removes only those on exit, so globals that other code added with
    ``torch.serialization.add_safe_globals`` stay allowed afterwards.
    """

    def __init__(self, globals_: Iterable):
        self.globals = list(globals_)
        self._ctx = None

    def __enter__(self):
        have = set(torch.serialization.get_safe_globals())
        missing = [g for g in dict.fromkeys(self.globals) if g not in have]
        self._ctx = torch.serialization.safe_globals(missing)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False
