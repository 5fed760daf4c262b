"""Short names for building models in-process from fairseq command lines (shared by tests)."""
import fairseq_qbert  # noqa: F401  (registers the plugin)
from fairseq_qbert.models.standalone import HEAD, build_model, parse_model_args
from fairseq_qbert.models.standalone import DictionaryOnlyTask as FakeTask

__all__ = ["HEAD", "FakeTask", "build", "parse"]


def parse(arch, extra=()):
    return parse_model_args(arch, extra)


def build(arch="quant_roberta_tiny", extra=(), vocab=100, num_classes=2):
    return build_model(arch, extra, vocab, num_classes)
