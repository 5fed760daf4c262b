"""Build quant_roberta models in-process from fairseq command lines (shared by tests)."""
import fairseq_qbert  # noqa: F401  (registers the plugin)
from fairseq import options
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY

HEAD = "sentence_classification_head"


class FakeTask:
    """The two things RobertaModel.build_model asks of a task."""

    def __init__(self, vocab_size):
        d = Dictionary()
        for i in range(vocab_size - len(d)):
            d.add_symbol(f"w{i}")
        self.source_dictionary = d

    def max_positions(self):
        return 512


def parse(arch, extra=()):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(
        parser, ["/tmp", "--task", "sentence_prediction", "--arch", arch, "--num-classes", "2", "--cpu", *extra])


def build(arch="quant_roberta_tiny", extra=(), vocab=100, num_classes=2):
    args = parse(arch, extra)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, FakeTask(vocab))
    model.register_classification_head(HEAD, num_classes=num_classes)
    return model
