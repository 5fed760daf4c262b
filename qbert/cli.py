"""The shape every checkpoint-and-data console tool shares (``qbert-calibrate``,
``qbert-length-search``): ``TOOL DATA-bin --path CKPT --out OUT [...]``, its description
and epilog taken from the tool module's docstring (first paragraph / the rest)."""
import argparse


def data_checkpoint_parser(prog: str, doc: str, data_help: str, path_help: str,
                           out_help: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the positional ``DATA-bin`` and the required ``--path``/``--out``."""
    summary, _, rest = doc.partition("\n\n")
    p = argparse.ArgumentParser(prog=prog, description=summary, epilog=rest,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA-bin", help=data_help)
    p.add_argument("--path", required=True, help=path_help)
    p.add_argument("--out", required=True, help=out_help)
    return p
