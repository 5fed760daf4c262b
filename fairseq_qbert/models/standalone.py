"""Build a ``quant_roberta`` (or any fairseq model) from a command line, without data.

For benchmarks, notebooks and tests: the flags are parsed by fairseq's own training
parser, exactly as ``fairseq-train`` would, and a stand-in task provides a dictionary
of the requested size.
"""
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY

HEAD = "sentence_classification_head"


class DictionaryOnlyTask:
    """The two things RobertaModel.build_model asks of a task."""

    def __init__(self, vocab_size: int, max_positions: int = 512):
        d = Dictionary()
        for i in range(vocab_size - len(d)):
            d.add_symbol(f"w{i}")
        self.source_dictionary = d
        self._max_positions = max_positions

    def max_positions(self):
        return self._max_positions


def parse_model_args(arch: str, flags=()):
    """fairseq-train's parse of ``--arch ARCH FLAGS`` for a sentence_prediction run."""
    parser = options.get_training_parser()
    return options.parse_args_and_arch(
        parser, ["/dev/null", "--task", "sentence_prediction", "--arch", arch, "--num-classes", "2",
                 "--cpu", *flags])


def build_model(arch: str = "quant_roberta_tiny", flags=(), vocab_size: int = 100, num_classes: int = 2):
    """A freshly initialised model with a classification head named ``HEAD``."""
    args = parse_model_args(arch, flags)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, DictionaryOnlyTask(vocab_size))
    model.register_classification_head(HEAD, num_classes=num_classes)
    return model
