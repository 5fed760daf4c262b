"""Length-adaptive RoBERTa (QuaLA): the fairseq-free math.

* :mod:`.config`: length configurations (parse/check) and the LengthDrop/LayerDrop samplers;
* :mod:`.selection`: PoWER-BERT significance and the token selection (``<s>`` always kept);
* :mod:`.macs`: the analytic MACs of an encoder under a configuration;
* :mod:`.distill`: the in-place distillation loss of the sandwich rule;
* :mod:`.search`: the evolutionary search, Pareto front, store files;
* :mod:`.plot`: the Pareto plot.

Everything is importable from here (``from qbert.lat import ...``).
"""
from .config import (
    MIN_LENGTH,
    approx_ratio,
    check_length_config,
    format_length_config,
    inverse_approx_ratio,
    parse_length_config,
    sample_layer_config,
    sample_length_config,
)
from .distill import inplace_distillation_loss
from .macs import encoder_macs, layer_macs, mean_encoder_macs
from .plot import plot_search
from .search import (
    Record,
    SearchResult,
    SearchSettings,
    Store,
    best_under,
    crossover,
    evolutionary_search,
    front_area,
    initial_genes,
    mutate,
    pareto_front,
    records_tsv,
    save_search,
    write_atomic,
)
from .selection import select_tokens, significance

__all__ = [
    "MIN_LENGTH", "approx_ratio", "check_length_config", "format_length_config",
    "inverse_approx_ratio", "parse_length_config", "sample_layer_config", "sample_length_config",
    "inplace_distillation_loss", "encoder_macs", "layer_macs", "mean_encoder_macs",
    "plot_search", "Record", "SearchResult", "SearchSettings", "Store", "best_under",
    "crossover", "evolutionary_search", "front_area", "initial_genes", "mutate", "pareto_front",
    "records_tsv", "save_search", "write_atomic", "select_tokens", "significance",
]
