"""Mini-GLUE generator, its unlabeled corpus, and the GLUE task table (no fairseq)."""
