"""2:4 structured sparsity (NVIDIA ASP recipe), fairseq-free.

Public entry: :func:`sparsify` (masks, optional channel permutation, report) on a
state-dict-like mapping. The math under it: :func:`mask_2to4` (ASP's ``m4n2_1d``),
:func:`size_rule_violation` (ASP's out % 8 / in % 16 rule), :func:`kept_magnitude`,
:func:`search_permutation` / :func:`permute_pair`, and compact storage
:func:`pack_2to4` / :func:`unpack_2to4`.
"""
from .api import FLAG, MASK_SUFFIX, ModuleSparsity, SparsityReport, parse_sparse_groups, sparsify
from .masks import is_2to4, kept_magnitude, mask_2to4, size_rule_violation
from .packing import pack_2to4, packed_nbytes, unpack_2to4
from .permute import kept_with_and_without, permute_pair, search_permutation

__all__ = ["sparsify", "SparsityReport", "ModuleSparsity", "parse_sparse_groups",
           "mask_2to4", "is_2to4", "kept_magnitude", "size_rule_violation", "search_permutation",
           "permute_pair", "kept_with_and_without", "pack_2to4", "unpack_2to4", "packed_nbytes",
           "FLAG", "MASK_SUFFIX"]
