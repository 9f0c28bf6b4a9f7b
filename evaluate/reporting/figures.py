"""Figures (matplotlib, Agg): entropy diagnostics, training curves, DINO-style attention maps.

* :func:`plot_entropy`: BAM Fig. 3 style, mean row entropy of the source (student self-attention) and of the target
  (Sinkhorn-balanced) matrices over training steps, from one or several pretraining logs (``docs/records.md``).
  With ``diag/uniform_entropy`` logged, the entropy of a uniform row, ln(K - P), is drawn as a dotted line.
* :func:`plot_collapse`: the collapse diagnostics of :mod:`pretrain.diagnostics` over training: positive vs negative
  projector cosine (BAM), effective rank of the CLS features (every k-NN monitor pass), teacher entropy as a
  fraction of ln K (DINO family); the panels a log holds are drawn.
* :func:`plot_curves`: loss, learning rate and online k-NN (pretraining) or test top-1 (fine-tuning) against epochs.
* :func:`plot_attention`: for one image, the last block's post-softmax attention of the CLS query over the patch
  keys (``SSLViT.forward_tokens(x, attn=True)``; the CLS->CLS entry dropped and, as in DINO's ``visualize_attention.py``, the
  maps not renormalised), per head and averaged over heads, with the mass-thresholded masks of
  :func:`mass_threshold` drawn as contours over the image. Maps and masks are nearest-upsampled by the patch size.
  The image is resized to a square ``image_size`` (DINO resizes to an exact size too, ignoring the aspect ratio) and
  ImageNet-normalised. ``sklearn:china.jpg`` / ``sklearn:flower.jpg`` name scikit-learn's bundled photographs.
* :func:`plot_queries` (``sslbench plot queries``): ADCLR Fig. 1 (right), the head-mean last-block attention of CLS
  and of each query crop (drawn as in pretraining, one patch each, appended with the chosen attention rule) over
  the raw patches, with the query boxes drawn.

Every plot is written as ``<out>/<name>.png`` and ``<out>/<name>.pdf``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from sslcore.errors import SSLBenchError  # noqa: E402
from sslcore.io import atomic_open  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENTROPY_KEYS = ("diag/source_entropy", "diag/target_entropy")
UNIFORM_KEY = "diag/uniform_entropy"


# --------------------------------------------------------------------------------------------------- logs
def read_log(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """A pretraining log: (meta line, step lines, epoch lines) as dict and DataFrames.

    Raises:
        SSLBenchError: the file is missing or a line is not a JSON object (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise SSLBenchError(f"{path}: pretraining log not found")
    meta: dict[str, Any] = {}
    steps, epochs = [], []
    try:
        with open(path, encoding="utf-8") as handle:  # streamed: a long run's log is large
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SSLBenchError(f"{path}:{lineno}: malformed log line ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise SSLBenchError(f"{path}:{lineno}: a log line must be a JSON object")
                kind = obj.get("kind")
                if kind == "meta":
                    meta = obj
                elif kind == "step":
                    steps.append(obj)
                elif kind == "epoch":
                    epochs.append(obj)
    except UnicodeDecodeError:
        raise SSLBenchError(f"{path}: not a text file (a pretraining log is JSON lines)") from None
    steps_df, epochs_df = pd.DataFrame(steps), pd.DataFrame(epochs)
    # a resumed run re-logs the steps/epochs after its last checkpoint: the later lines win
    if "step" in steps_df.columns:
        steps_df = steps_df.drop_duplicates("step", keep="last").sort_values("step", kind="stable")
    if "epoch" in epochs_df.columns:
        epochs_df = epochs_df.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
    return meta, steps_df.reset_index(drop=True), epochs_df.reset_index(drop=True)


def run_label(path: str | Path) -> str:
    """A run's legend label: the log's directory name (``runs/bam/log.jsonl`` -> ``bam``)."""
    path = Path(path)
    return path.parent.name or path.stem


def _save(fig: plt.Figure, out: str | Path, name: str) -> list[Path]:
    out = Path(out)
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format=ext, dpi=120)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_entropy(
    log_paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None, name: str = "entropy"
) -> list[Path]:
    """Source (solid) and target (dashed) mean row entropy [nats] against the training step, one colour per run."""
    if not log_paths:
        raise SSLBenchError("plot entropy: no log given")
    labels = list(labels) if labels else [run_label(p) for p in log_paths]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (path, label) in enumerate(zip(log_paths, labels)):
        _meta, steps, _epochs = read_log(path)
        missing = [k for k in ENTROPY_KEYS if k not in steps.columns]
        if steps.empty or missing:
            raise SSLBenchError(f"{path}: no step lines with {missing[0] if missing else ENTROPY_KEYS[0]!r}")
        color = colors[i % len(colors)]
        data = steps.dropna(subset=list(ENTROPY_KEYS))
        ax.plot(data["step"], data[ENTROPY_KEYS[0]], color=color, ls="-", label=f"{label}: source")
        ax.plot(data["step"], data[ENTROPY_KEYS[1]], color=color, ls="--", label=f"{label}: target")
        if UNIFORM_KEY in steps.columns and steps[UNIFORM_KEY].notna().any():
            level = float(steps[UNIFORM_KEY].dropna().iloc[-1])
            ax.axhline(level, color=color, ls=":", lw=1.0, label=f"{label}: uniform ln(K-P) = {level:.2f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean row entropy [nats]")
    ax.set_title("Source vs target entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, name)


def plot_curves(
    log_paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None, name: str = "curves"
) -> list[Path]:
    """Loss, learning rate and (when logged) online k-NN top-1 or fine-tuning test top-1 against the epoch.

    Step lines are drawn thin against their fractional epoch; epoch lines as markers, the mean loss of epoch ``e``
    at ``e + 0.5`` and the k-NN accuracy measured after it at ``e + 1`` (epochs completed). Lines repeated by a
    resumed run count once (the later one).
    """
    if not log_paths:
        raise SSLBenchError("plot curves: no log given")
    labels = list(labels) if labels else [run_label(p) for p in log_paths]
    logs = [read_log(p) for p in log_paths]
    for path, (_m, steps, epochs) in zip(log_paths, logs):
        if steps.empty and epochs.empty:
            raise SSLBenchError(f"{path}: no step or epoch lines")

    def logged(key: str) -> bool:
        return any(key in e.columns and e[key].notna().any() for _m, _s, e in logs)

    # knn_top1: the pretraining monitor; top1: fine-tuning's evaluation (sslbench eval finetune logs)
    panels = ["loss", "lr"] + [key for key in ("knn_top1", "top1") if logged(key)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((_meta, steps, epochs), label) in enumerate(zip(logs, labels)):
        color = colors[i % len(colors)]
        for ax, key in zip(axes[0], panels):
            if key in steps.columns and "epoch" in steps.columns:
                data = steps.dropna(subset=[key])
                ax.plot(data["epoch"], data[key], color=color, lw=0.8, alpha=0.7, label=label)
            if key in epochs.columns:
                data = epochs.dropna(subset=[key])
                # epoch e's mean loss sits mid-epoch; the k-NN monitor and fine-tuning's evaluation run after it ends
                accuracy = key in ("knn_top1", "top1")
                x = data["epoch"] + (1.0 if accuracy else 0.5)
                style = "o-" if accuracy else "o"
                ax.plot(x, data[key], style, color=color, ms=3, label=None if key in steps else label)
    titles = {
        "loss": "training loss",
        "lr": "learning rate",
        "knn_top1": "online k-NN top-1 [%]",
        "top1": "test top-1 [%]",
    }
    for ax, key in zip(axes[0], panels):
        ax.set_xlabel("epoch")
        ax.set_title(titles[key])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, name)


def plot_collapse(
    log_paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None, name: str = "collapse"
) -> list[Path]:
    """Positive (solid) / negative (dashed) cosine, effective rank and teacher entropy / ln K, one colour per run."""
    if not log_paths:
        raise SSLBenchError("plot collapse: no log given")
    labels = list(labels) if labels else [run_label(p) for p in log_paths]
    logs = [read_log(p) for p in log_paths]

    def has(frame: pd.DataFrame, key: str) -> bool:
        return key in frame.columns and frame[key].notna().any()

    panels = [
        key
        for key, where in (("positive_cosine", 1), ("knn_eff_rank", 2), ("knn_mean_cosine", 2), ("teacher_entropy", 1))
        if any(has(log[where], key) for log in logs)
    ]
    if not panels:
        raise SSLBenchError(
            f"{log_paths[0]}: no collapse diagnostics logged (cosines, effective rank, teacher entropy)"
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((_meta, steps, epochs), label) in enumerate(zip(logs, labels)):
        color = colors[i % len(colors)]
        for ax, key in zip(axes[0], panels):
            if key == "positive_cosine" and has(steps, key):
                data = steps.dropna(subset=["positive_cosine", "negative_cosine"])
                ax.plot(data["epoch"], data["positive_cosine"], color=color, lw=1.0, label=f"{label}: positive")
                ax.plot(
                    data["epoch"], data["negative_cosine"], color=color, lw=1.0, ls="--", label=f"{label}: negative"
                )
            elif key in ("knn_eff_rank", "knn_mean_cosine") and has(epochs, key):
                data = epochs.dropna(subset=[key])
                ax.plot(data["epoch"] + 1.0, data[key], "o-", color=color, ms=3, label=label)
            elif key == "teacher_entropy" and has(steps, key):
                data = steps.dropna(subset=[key, "teacher_num_outputs"])
                ax.plot(
                    data["epoch"], data[key] / np.log(data["teacher_num_outputs"]), color=color, lw=1.0, label=label
                )
    titles = {
        "positive_cosine": "projector cosine: same image vs others",
        "knn_eff_rank": "effective rank of CLS features",
        "knn_mean_cosine": "CLS feature cosine, different images",
        "teacher_entropy": "teacher entropy / ln K",
    }
    for ax, key in zip(axes[0], panels):
        ax.set_xlabel("epoch")
        ax.set_title(titles[key], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, name)


# ---------------------------------------------------------------------------------------------- attention
def mass_threshold(attn: Tensor, fraction: float) -> Tensor:
    """The smallest set of entries holding ``fraction`` of the mass, per row.

    Args:
        attn: (..., N) non-negative weights (e.g. heads x patches); rows need not sum to one.
        fraction: mass to keep, in (0, 1].

    Returns:
        (..., N) bool mask: the largest entries, in decreasing order, up to and including the first one at which
        the kept mass reaches ``fraction`` of the row's total. Equivalent to DINO's rule (sort ascending, keep
        cumulative normalised mass > 1 - fraction); ties are broken by sort order.
    """
    if not 0.0 < fraction <= 1.0:
        raise SSLBenchError(f"threshold must be in (0, 1], got {fraction}")
    values, order = torch.sort(attn, dim=-1, descending=True)
    mass = values / values.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    before = torch.cumsum(mass, dim=-1) - mass  # mass of the strictly larger entries
    keep_sorted = before < fraction
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def load_image(image: Any) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from a path, ``sklearn:<name>``, a PIL image or an array."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = image
    elif isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, str) and image.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        try:
            arr = load_sample_image(image.split(":", 1)[1])
        except (AttributeError, ValueError):
            raise SSLBenchError(
                f"{image}: unknown sample image (valid: sklearn:china.jpg, sklearn:flower.jpg)"
            ) from None
    else:
        path = Path(image)
        if not path.is_file():
            raise SSLBenchError(f"{path}: image not found")
        try:
            arr = np.asarray(Image.open(path).convert("RGB"))
        except OSError as exc:
            raise SSLBenchError(f"{path}: cannot read image ({exc})") from None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise SSLBenchError(f"image must be (H, W, 3), got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return arr


def preprocess(image: np.ndarray, size: int, patch: int) -> tuple[Tensor, np.ndarray]:
    """Resize to ``size`` x ``size`` (cropped down to a multiple of ``patch``); return (1, 3, H, W) normalised
    input and the resized (H, W, 3) uint8 image for display."""
    from PIL import Image

    if size < patch:
        raise SSLBenchError(f"--image-size {size}: must be at least the patch size ({patch} px)")
    side = size - size % patch
    shown = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))
    x = torch.from_numpy(shown.astype(np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None], shown


@torch.no_grad()
def cls_attention(model: torch.nn.Module, x: Tensor) -> Tensor:
    """(heads, h, w) attention of the CLS query over the patch keys in the last block, for one (1, 3, H, W) input."""
    patch = model.patch_embed.patch_size[0]
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    attn = model.forward_tokens(x, attn=True).attn  # (1, heads, 1 + h*w, 1 + h*w)
    prefix = attn.shape[-1] - h * w
    return attn[0, :, 0, prefix:].reshape(-1, h, w)


def plot_attention(
    model: torch.nn.Module,
    image: Any,
    out: str | Path,
    threshold: float = 0.6,
    image_size: int = 224,
    name: str = "attention",
    title: str | None = None,
) -> list[Path]:
    """Per-head and head-mean CLS attention maps of ``model`` (an SSLViT or a ``LoadedBackbone``) on ``image``, with
    mass-thresholded masks.

    Top row: the image, then each head's map and the head mean. Bottom row: the same maps' masks (``threshold`` of
    the attention mass) as contours over the image, the maps blended in.
    """
    if not isinstance(model, torch.nn.Module):  # a LoadedBackbone from evaluate.checkpoints
        model = model.model
    model = model.eval()
    patch = model.patch_embed.patch_size[0]
    device = next(model.parameters()).device
    x, shown = preprocess(load_image(image), image_size, patch)
    maps = cls_attention(model, x.to(device)).float().cpu()  # (heads, h, w)
    maps = torch.cat([maps, maps.mean(0, keepdim=True)])
    masks = mass_threshold(maps.flatten(1), threshold).reshape(maps.shape)
    up_maps = maps.repeat_interleave(patch, 1).repeat_interleave(patch, 2).numpy()
    up_masks = masks.repeat_interleave(patch, 1).repeat_interleave(patch, 2).numpy().astype(float)
    heads = maps.shape[0] - 1
    cols = heads + 2
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.6), squeeze=False)
    names = [f"head {i}" for i in range(heads)] + ["mean"]
    axes[0][0].imshow(shown)
    axes[0][0].set_title("image", fontsize=8)
    axes[1][0].imshow(shown)
    axes[1][0].set_title(f"mask {threshold:.0%} (mean)", fontsize=8)
    axes[1][0].contour(up_masks[-1], levels=[0.5], colors="yellow", linewidths=1.0)
    for j in range(heads + 1):
        axes[0][j + 1].imshow(up_maps[j], cmap="inferno", interpolation="nearest")
        axes[0][j + 1].set_title(names[j], fontsize=8)
        axes[1][j + 1].imshow(shown)
        axes[1][j + 1].imshow(up_maps[j], cmap="inferno", alpha=0.5, interpolation="nearest")
        if 0 < up_masks[j].mean() < 1:
            axes[1][j + 1].contour(up_masks[j], levels=[0.5], colors="cyan", linewidths=1.0)
        axes[1][j + 1].set_title(f"{names[j]}: {int(masks[j].sum())} patches", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, name)


# ------------------------------------------------------------------------------------------ query attention
@torch.no_grad()
def query_attention(model: torch.nn.Module, x: Tensor, queries: Tensor, rule: str = "oneway") -> tuple[Tensor, Tensor]:
    """Last-block attention over the patch keys of the CLS token and of each appended query token (ADCLR).

    Args:
        model: an :class:`~pretrain.vit.SSLViT`.
        x: (1, 3, H, W) normalised image.
        queries: (Q, 3, P, P) normalised query crops (one patch each).
        rule: the query attention rule (:func:`pretrain.vit.extra_attention_mask`).

    Returns:
        ``(cls (heads, h, w), queries (Q, heads, h, w))``: softmax weights of the last block on the patch keys (the
        rest of each row's mass sits on CLS and, under the rule, on query keys).
    """
    patch = model.patch_embed.patch_size[0]
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    out = model.forward_tokens(x, extra=model.embed_queries(queries[None]), extra_attn=rule, attn=True)
    n_img = out.attn.shape[-1]
    prefix = n_img - h * w
    cls = out.attn[0, :, 0, prefix:].reshape(-1, h, w)
    q = out.extra_attn[0, :, :, prefix:n_img]  # (heads, Q, h*w)
    return cls, q.permute(1, 0, 2).reshape(q.shape[1], -1, h, w)


def plot_queries(
    model: torch.nn.Module,
    image: Any,
    out: str | Path,
    num_queries: int = 4,
    scale: tuple[float, float] = (0.05, 0.15),
    rule: str = "oneway",
    image_size: int = 224,
    seed: int = 0,
    name: str = "queries",
    title: str | None = None,
) -> list[Path]:
    """ADCLR paper Fig. 1 (right): the head-mean last-block attention of CLS and of each query crop over the raw
    patches of ``image``, the query boxes drawn.

    Query crops are drawn as in pretraining (:func:`pretrain.crops.query_crops`: random crops of the image, area
    fraction ``scale``, resized to one patch, no positional embedding) with a fixed ``seed``; boxes are shown on the
    resized image. First panel: the image and every box; then CLS; then one panel per query with its box.
    """
    from PIL import Image

    from pretrain.crops import query_crops

    if not isinstance(model, torch.nn.Module):  # a LoadedBackbone from evaluate.checkpoints
        model = model.model
    model = model.eval()
    if not hasattr(model, "embed_queries"):
        raise SSLBenchError("the query attention plot needs an sslbench SSLViT (load it with evaluate.checkpoints)")
    patch = model.patch_embed.patch_size[0]
    device = next(model.parameters()).device
    array = load_image(image)
    x, shown = preprocess(array, image_size, patch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        crops, boxes = query_crops(
            Image.fromarray(array), num_queries, patch, scale, (0.75, 4.0 / 3.0), IMAGENET_MEAN, IMAGENET_STD
        )
    cls_map, q_maps = query_attention(model, x.to(device), crops.to(device), rule)
    maps = torch.cat([cls_map.mean(0, keepdim=True), q_maps.mean(1)]).float().cpu()  # (1 + Q, h, w)
    up = maps.repeat_interleave(patch, 1).repeat_interleave(patch, 2).numpy()
    sy, sx = shown.shape[0] / array.shape[0], shown.shape[1] / array.shape[1]
    shown_boxes = (boxes * torch.tensor([sx, sy, sx, sy])).numpy()
    colors = plt.cm.tab10(np.arange(num_queries) % 10)
    panels = 2 + num_queries
    cols = min(panels, 6)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)

    def draw(ax, i: int) -> None:
        left, top, right, bottom = shown_boxes[i]
        ax.add_patch(
            plt.Rectangle(
                (left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor=colors[i], linewidth=1.5
            )
        )
        ax.text(left, top, str(i), color=colors[i], fontsize=7, va="bottom")

    axes[0][0].imshow(shown)
    axes[0][0].set_title("image + query crops", fontsize=8)
    for i in range(num_queries):
        draw(axes[0][0], i)
    for j in range(1 + num_queries):
        ax = axes[(j + 1) // cols][(j + 1) % cols]
        ax.imshow(shown)
        ax.imshow(up[j], cmap="inferno", alpha=0.6, interpolation="nearest")
        if j == 0:
            ax.set_title("[CLS]", fontsize=8)
        else:
            draw(ax, j - 1)
            ax.set_title(f"query {j - 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out, name)


# ---------------------------------------------------------------------------------------------------- CLI
def _add_logs(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--log", action="append", required=True, help="a pretraining log.jsonl (repeatable)")
    parser.add_argument("--label", action="append", help="legend label per --log (default: the run directory)")
    parser.add_argument("--out", default="reports/figures", help="output directory")
    parser.add_argument("--name", default=name, help="file name stem")


def _labels(args: argparse.Namespace) -> list[str] | None:
    if args.label and len(args.label) != len(args.log):
        raise SSLBenchError(f"--label given {len(args.label)} times for {len(args.log)} --log")
    return args.label


def _log_plot(name: str, plot: Any) -> tuple[Any, Any]:
    """(add_arguments, run) of a ``sslbench plot <name> --log ...`` command drawing ``plot(logs, out, labels, name)``."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_logs(parser, name)

    def run(args: argparse.Namespace) -> int:
        _check_inputs(args)
        for path in plot(args.log, args.out, _labels(args), args.name):
            print(path)
        return 0

    return add_arguments, run


def _check_inputs(args: argparse.Namespace) -> None:
    """Before any work: every --log exists and --out is writable."""
    from sslcore.io import check_writable

    for log in getattr(args, "log", None) or []:
        if not Path(log).is_file():
            raise SSLBenchError(f"--log {log}: file not found")
    size = getattr(args, "image_size", None)
    if size is not None and size < 1:  # (below the patch size: refused once the checkpoint says its patch)
        raise SSLBenchError(f"--image-size {size}: must be a positive number of pixels")
    check_writable(args.out, "--out")


add_entropy_arguments, run_entropy = _log_plot("entropy", plot_entropy)
add_curves_arguments, run_curves = _log_plot("curves", plot_curves)
add_collapse_arguments, run_collapse = _log_plot("collapse", plot_collapse)


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (any format evaluate.checkpoints reads)")
    parser.add_argument("--format", default=None, help="checkpoint format (default: detected)")
    parser.add_argument("--which", default="teacher", choices=("teacher", "student"), help="weights to load")
    parser.add_argument("--image", required=True, help="image file, or sklearn:china.jpg / sklearn:flower.jpg")
    parser.add_argument("--threshold", type=float, default=0.6, help="attention mass kept by the masks")
    parser.add_argument("--image-size", type=int, default=224, help="square input size (cropped to the patch grid)")
    parser.add_argument("--out", default="reports/figures", help="output directory")
    parser.add_argument("--name", default=None, help="file name stem (default attention_<checkpoint>_<image>)")


def run_attention(args: argparse.Namespace) -> int:
    from evaluate.checkpoints import load_backbone

    _check_inputs(args)
    model = load_backbone(args.checkpoint, format=args.format, which=args.which).model
    stem = Path(args.image.split(":", 1)[-1]).stem
    name = args.name or f"attention_{Path(args.checkpoint).stem}_{stem}"
    paths = plot_attention(
        model, args.image, args.out, args.threshold, args.image_size, name, Path(args.checkpoint).name
    )
    for path in paths:
        print(path)
    return 0


def add_queries_arguments(parser: argparse.ArgumentParser) -> None:
    from pretrain.vit import EXTRA_ATTN_RULES

    parser.add_argument("checkpoint", nargs="?", help="checkpoint file (any format evaluate.checkpoints reads)")
    parser.add_argument("--checkpoint", dest="checkpoint_opt", default=None, help="the same, as an option")
    parser.add_argument("--format", default=None, help="checkpoint format (default: detected)")
    parser.add_argument("--which", default="teacher", choices=("teacher", "student"), help="weights to load")
    parser.add_argument("--image", required=True, help="image file, or sklearn:china.jpg / sklearn:flower.jpg")
    parser.add_argument("--queries", type=int, default=4, help="number of query crops drawn (default 4)")
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.05, 0.15),
        metavar=("LOW", "HIGH"),
        help="query crop area fraction (ADCLR: 0.05 0.15)",
    )
    parser.add_argument(
        "--attention",
        default="oneway",
        choices=EXTRA_ATTN_RULES,
        help="query attention rule (ADCLR: oneway; the PQCL release: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query crops")
    parser.add_argument("--image-size", type=int, default=224, help="square input size (cropped to the patch grid)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow a legacy pickled checkpoint")
    parser.add_argument("--out", default="reports/figures", help="output directory")
    parser.add_argument("--name", default=None, help="file name stem (default queries_<checkpoint>_<image>)")


def run_queries(args: argparse.Namespace) -> int:
    from evaluate.checkpoints import load_backbone

    checkpoint = args.checkpoint or args.checkpoint_opt
    if not checkpoint or (args.checkpoint and args.checkpoint_opt):
        raise SSLBenchError("plot queries: give the checkpoint once (CKPT or --checkpoint CKPT)")
    if args.queries < 1:
        raise SSLBenchError(f"--queries must be >= 1, got {args.queries}")
    if not 0 < args.scale[0] <= args.scale[1] <= 1:
        raise SSLBenchError(f"--scale must be LOW HIGH with 0 < LOW <= HIGH <= 1, got {list(args.scale)}")
    if not Path(checkpoint).is_file():
        raise SSLBenchError(f"{checkpoint}: checkpoint not found")
    _check_inputs(args)
    model = load_backbone(checkpoint, format=args.format, which=args.which, trust_pickle=args.trust_pickle).model
    stem = Path(args.image.split(":", 1)[-1]).stem
    name = args.name or f"queries_{Path(checkpoint).stem}_{stem}"
    paths = plot_queries(
        model,
        args.image,
        args.out,
        args.queries,
        tuple(args.scale),
        args.attention,
        args.image_size,
        args.seed,
        name,
        f"{Path(checkpoint).name} ({args.attention})",
    )
    for path in paths:
        print(path)
    return 0


def image_array(path: str | Path) -> np.ndarray:
    """A saved PNG as an array (for tests and comparisons)."""
    return plt.imread(str(path))
