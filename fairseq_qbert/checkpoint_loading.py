"""fairseq's checkpoint loading through :func:`qbert.safe_load.safe_load` (no full pickle).

:func:`install` (called once when the plugin is imported) replaces, in fairseq's modules:

* ``fairseq.checkpoint_utils.load_checkpoint_to_cpu``: every checkpoint read of fairseq --
  ``Trainer.load_checkpoint`` (resume from ``checkpoint_last.pt``, ``--restore-file``,
  ``--finetune-from-model``), ``load_model_ensemble_and_task`` (``fairseq-validate --path``,
  ``from_pretrained``), ``load_pretrained_component_from_model`` -- looks it up as a module
  attribute (``checkpoint_utils.load_checkpoint_to_cpu`` or a global of that module), so the
  replacement covers them all. A refused checkpoint ends the command with one line
  ``fairseq-qbert: error: ...`` (a :class:`~qbert.errors.UsageError`, which fairseq's own
  ``except Exception`` wrappers let through).
* ``fairseq.distributed.utils._broadcast_object_slow``: the receiving ranks of
  ``broadcast_object`` (rank 0 sends the loaded checkpoint to the others in data-parallel
  training) ``torch.load`` what rank 0 pickled; they use the same allow-list plus fairseq's
  ``_TensorPlaceholder``. When the user trusts some checkpoint (``QBERT_TRUST_CHECKPOINT``
  non-empty) rank 0 may have loaded extra types from it, and the other ranks accept them.
* ``fairseq.options.add_dataset_args``: also adds ``--trust-checkpoint PATH`` to the parsers
  of fairseq-train, fairseq-validate, fairseq-generate, fairseq-eval-lm and
  fairseq-interactive (``fairseq-hydra-train`` has no argparse: use
  ``QBERT_TRUST_CHECKPOINT``). The flag adds PATH to ``QBERT_TRUST_CHECKPOINT`` of this
  process (and so of its workers).

Nothing else changes: ``torch.load`` calls of other code keep torch's defaults.
"""
import argparse
import io
import os

import torch
from omegaconf import OmegaConf

from qbert.errors import cli_errors
from qbert.safe_load import TRUST_ENV, TRUST_FLAG, is_trusted, safe_load, trust, trusted_paths

_PATCHED = "_qbert_safe_loading"


def load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (0.12), reading the file with
    :func:`~qbert.safe_load.safe_load` instead of a plain ``torch.load``.

    Library form: raises :class:`~qbert.safe_load.UnsafeCheckpointError` for a refused file.
    """
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name
    from fairseq.file_io import PathManager

    local_path = PathManager.get_local_path(path)
    # as fairseq: a locally cached copy of a remote file may be stale -- fetch it again
    if local_path != path and PathManager.path_requires_pathmanager(path):
        try:
            os.remove(local_path)
        except FileNotFoundError:
            pass
        if load_on_all_ranks:
            torch.distributed.barrier()
        local_path = PathManager.get_local_path(path)

    state = safe_load(local_path, map_location=torch.device("cpu"), source=str(path),
                      trusted=is_trusted(local_path) or is_trusted(path))

    if "args" in state and state["args"] is not None and arg_overrides is not None:
        args = state["args"]
        for arg_name, arg_val in arg_overrides.items():
            setattr(args, arg_name, arg_val)

    if "cfg" in state and state["cfg"] is not None:
        from omegaconf import __version__ as oc_version
        from omegaconf import _utils

        if oc_version < "2.2":
            old_primitive = _utils.is_primitive_type
            _utils.is_primitive_type = lambda _: True
            state["cfg"] = OmegaConf.create(state["cfg"])
            _utils.is_primitive_type = old_primitive
            OmegaConf.set_struct(state["cfg"], True)
        else:
            state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})

        if arg_overrides is not None:
            overwrite_args_by_name(state["cfg"], arg_overrides)

    return checkpoint_utils._upgrade_state_dict(state)


def _fairseq_load_checkpoint_to_cpu(path, arg_overrides=None, load_on_all_ranks=False):
    """What fairseq calls: :func:`load_checkpoint_to_cpu`, a refusal as a one-line UsageError."""
    with cli_errors():
        return load_checkpoint_to_cpu(path, arg_overrides, load_on_all_ranks)


def _broadcast_object_slow(obj, src_rank, group, dist_device):
    """fairseq's ``distributed.utils._broadcast_object_slow`` with a restricted ``torch.load``."""
    from fairseq.distributed import utils as dist_utils

    if dist_utils.get_rank(group) == src_rank:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        buffer = torch.ByteTensor(buffer.getbuffer()).to(dist_device)
        length = torch.LongTensor([len(buffer)]).to(dist_device)
        dist_utils.broadcast(length, src=src_rank, group=group)
        dist_utils.broadcast(buffer, src=src_rank, group=group)
        return obj
    length = torch.LongTensor([0]).to(dist_device)
    dist_utils.broadcast(length, src=src_rank, group=group)
    buffer = torch.ByteTensor(int(length.item())).to(dist_device)
    dist_utils.broadcast(buffer, src=src_rank, group=group)
    buffer = io.BytesIO(buffer.cpu().numpy())
    with cli_errors():
        return safe_load(buffer, map_location="cpu", trusted=bool(trusted_paths()),
                         extra_globals=(dist_utils._TensorPlaceholder,),
                         source=f"the object broadcast by rank {src_rank}")


class TrustCheckpointAction(argparse.Action):
    """``--trust-checkpoint PATH`` (repeatable): load PATH with full pickle."""

    def __call__(self, parser, namespace, values, option_string=None):
        trust(values)
        items = list(getattr(namespace, self.dest, None) or [])
        if values not in items:
            items.append(values)
        setattr(namespace, self.dest, items)


def add_trust_checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-checkpoint PATH`` to ``parser`` (once)."""
    if any(TRUST_FLAG in action.option_strings for action in parser._actions):
        return
    group = parser.add_argument_group("fairseq-qbert checkpoint trust")
    group.add_argument(TRUST_FLAG, metavar="PATH", action=TrustCheckpointAction, default=None,
                       help="load this checkpoint file with full pickle although it needs types "
                            "outside fairseq's allow-list (it may run code: only for files you "
                            f"trust; repeatable; same as {TRUST_ENV}=PATH[:PATH...])")


def _with_trust_flag(add_dataset_args):
    def wrapper(parser, *args, **kwargs):
        out = add_dataset_args(parser, *args, **kwargs)
        add_trust_checkpoint_arg(parser)
        return out

    wrapper.__wrapped__ = add_dataset_args
    wrapper.__doc__ = add_dataset_args.__doc__
    setattr(wrapper, _PATCHED, True)
    return wrapper


def install() -> None:
    """Route fairseq's checkpoint loading through the safe loader (idempotent)."""
    from fairseq import checkpoint_utils, options
    from fairseq.distributed import utils as dist_utils

    setattr(_fairseq_load_checkpoint_to_cpu, _PATCHED, True)
    setattr(_broadcast_object_slow, _PATCHED, True)
    checkpoint_utils.load_checkpoint_to_cpu = _fairseq_load_checkpoint_to_cpu
    dist_utils._broadcast_object_slow = _broadcast_object_slow
    if not getattr(options.add_dataset_args, _PATCHED, False):
        options.add_dataset_args = _with_trust_flag(options.add_dataset_args)


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    from fairseq import checkpoint_utils
    from fairseq.distributed import utils as dist_utils

    return all(getattr(f, _PATCHED, False) for f in (checkpoint_utils.load_checkpoint_to_cpu,
                                                      dist_utils._broadcast_object_slow))
