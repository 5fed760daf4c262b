#!/usr/bin/env python3
"""Command line of the table maker: see :mod:`qbert.experiments.tables`.

    python scripts/make_tables.py OUT_DIR [OUT_DIR ...] [--results-dir results]
                                  [--allow-missing] [--no-plots] [--clean]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qbert.experiments.tables import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
