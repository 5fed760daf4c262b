#!/usr/bin/env python3
"""Command line of the experiment runner: see :mod:`qbert.experiments.runner`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from qbert.experiments.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
