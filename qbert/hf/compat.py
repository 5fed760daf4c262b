"""Importing ``transformers`` (the optional ``hf`` extra) safely, only when needed.

``fairseq-fixed`` pulls in ``torchaudio``; a torchaudio wheel built for another torch
cannot load its C++ library and raises ``OSError`` on import (not ``ImportError``).
``transformers`` imports torchaudio whenever it is installed (``audio_utils``, reached by
every model class), so that ``OSError`` would kill any use of transformers although no
audio is involved. :func:`import_transformers` first tries torchaudio itself; when it is
installed but broken, it is marked as absent for this process (``sys.modules`` entry
``None``, which Python's import system and ``importlib.util.find_spec`` report as "not
installed"), and transformers then runs without audio support, as it does when
torchaudio is not installed. A working torchaudio is left untouched.
"""
import importlib
import logging
import sys

from qbert.errors import ConfigError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fairseq-qbert[hf]'"


def _hide_broken(module: str) -> None:
    if module in sys.modules or importlib.util.find_spec(module) is None:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 - a broken binary: OSError, RuntimeError, ...
        for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
            del sys.modules[name]
        sys.modules[module] = None  # "not installed" for this process
        # transformers may have asked already (its answer is lru_cached): ask again
        utils = sys.modules.get("transformers.utils.import_utils")
        check = getattr(utils, f"is_{module}_available", None)
        if hasattr(check, "cache_clear"):
            check.cache_clear()
        logger.debug("%s is installed but cannot be imported (%s); transformers runs without it",
                     module, type(e).__name__)


def import_transformers():
    """``transformers``, imported with a broken torchaudio hidden; ConfigError if missing."""
    _hide_broken("torchaudio")  # also after `import transformers`: it loads audio code lazily
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"Hugging Face interop needs transformers ({INSTALL_HINT}): {e}") from None
    return transformers


def import_tokenizers():
    """The ``tokenizers`` library; ConfigError if missing."""
    try:
        import tokenizers
    except ImportError as e:
        raise ConfigError(f"WordPiece tokenization needs tokenizers ({INSTALL_HINT}): {e}") from None
    return tokenizers
