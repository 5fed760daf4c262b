"""Length-adaptive tools on fairseq checkpoints (``qbert-length-search``)."""
