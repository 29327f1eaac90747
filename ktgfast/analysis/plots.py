"""Pictures of an analysis: pair heat maps, attention-map examples, conflicts."""
from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heat(ax, names, m, title, fmt):
    """A pair matrix with its colour bar; the diagonal (a model with itself) is
    blank and not part of the colour scale; each cell's number in black or
    white, whichever reads on its colour."""
    import matplotlib
    import numpy as np

    a = np.array(m, dtype=float)
    np.fill_diagonal(a, np.nan)
    finite = a[np.isfinite(a)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    im = ax.imshow(a, cmap=matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee"),
                   vmin=lo, vmax=hi if hi > lo else lo + 1)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j:
                r, g, b, _ = im.cmap(im.norm(a[i, j]))
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, fmt.format(m[i][j]), ha="center", va="center", color=ink, fontsize=8)
    ax.set_title(title)


def plot_pairs(names, pairs, path: Path) -> None:
    _save(pairs_figure(names, pairs), path)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120)
    _plt().close(fig)


def pairs_figure(names, pairs):
    """One heat map per metric over model pairs (symmetric), each with its
    colour bar."""
    plt = _plt()
    metrics = [k for k in ("mutual_kl", "delta_accuracy", "attention_abs_error") if k in pairs[0]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    idx = {n: i for i, n in enumerate(names)}
    for ax, key in zip(axes[0], metrics):
        m = [[0.0] * len(names) for _ in names]
        for r in pairs:
            i, j = idx[r["node_a"]], idx[r["node_b"]]
            m[i][j] = m[j][i] = r[key]
        _heat(ax, names, m, key.replace("_", " "), "{:.3g}")
    fig.tight_layout()
    return fig


def plot_attention_examples(run, split, names, q: torch.Tensor, count: int, path: Path) -> None:
    """The first ``count`` images of the split (rows) and every model's map."""
    plt = _plt()
    images = getattr(run.data, split).images[:count]
    count = len(images)
    fig, axes = plt.subplots(count, len(names) + 1, figsize=(1.6 * (len(names) + 1), 1.6 * count),
                             squeeze=False)
    for r in range(count):
        img = images[r].permute(1, 2, 0).numpy()
        axes[r][0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
        for c, n in enumerate(names):
            axes[r][c + 1].imshow(q[c, r].numpy(), cmap="jet", vmin=0, vmax=1)
            if r == 0:
                axes[r][c + 1].set_title(n, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_conflicts(blocks, path: Path) -> None:
    _save(conflicts_figure(blocks), path)


def conflicts_figure(blocks):
    """Per loss family, how often two teachers' gradients conflict (PCGrad,
    Yu et al. 2020), with a colour bar."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(blocks), figsize=(3.8 * len(blocks), 3.4), squeeze=False)
    titles = {"prob": "distribution losses", "att": "attention-map losses"}
    for ax, (kind, (teachers, m)) in zip(axes[0], blocks.items()):
        _heat(ax, teachers, m.tolist(), f"conflicts: {titles[kind]}", "{:d}")
    fig.tight_layout()
    return fig
