"""The Pareto plot of a length search: dev metric vs GMACs (matplotlib, Agg backend)."""
from typing import Optional, Sequence

from .search import Record


def plot_search(path: str, records: Sequence[Record], front: Sequence[Record],
                metric: str = "score", title: Optional[str] = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    others = [r for r in records if r.method != "init"]
    init = [r for r in records if r.method == "init"]
    if others:
        ax.scatter([r.cost / 1e9 for r in others], [r.score for r in others], s=8, c="0.7",
                   label="evaluated")
    if init:
        ax.scatter([r.cost / 1e9 for r in init], [r.score for r in init], s=18, marker="s",
                   c="tab:blue", label="constant ratio")
    ax.plot([r.cost / 1e9 for r in front], [r.score for r in front], "-o", c="tab:red", ms=4,
            label="Pareto front")
    full = max(records, key=lambda r: (r.cost, r.score)) if records else None
    if full is not None:
        ax.scatter([full.cost / 1e9], [full.score], s=80, marker="*", c="k", zorder=5,
                   label="full length")
    ax.set_xlabel("GMACs per sentence")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
