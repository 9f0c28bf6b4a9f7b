"""The ``sslbench`` command line: a thin dispatcher over the modules that do the work.

Commands are listed in two plain dicts, :data:`COMMANDS` (``sslbench <cmd>``) and :data:`GROUPS`
(``sslbench <group> <cmd>``). Each entry names a module that provides::

    add_arguments(parser: argparse.ArgumentParser) -> None
    run_cli(args: argparse.Namespace) -> int

or ``"module:name"`` for a module holding several commands as ``add_<name>_arguments`` and ``run_<name>``.

Modules are imported only when their command is selected, so ``sslbench --help`` is instant and the heavy stacks
(torch, mm*) load only for the commands that need them. A :class:`~sslcore.errors.SSLBenchError` raised anywhere
becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from sslcore.errors import SSLBenchError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": (
        "pretrain.cli",
        "pretrain a ViT (BAM, ADCLR, SERE, DINO, iBOT) from a YAML recipe; resumable, torchrun-ready",
    ),
    "tables": ("evaluate.reporting.tables", "regenerate the papers' tables and the full-protocol table from records"),
    "demo": ("evaluate.demo.pipeline", "the end-to-end demo on ShapesWorld (data -> pretrain -> eval full -> reports)"),
}

# group -> (group help, {name -> (module, one-line help)})
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "data": (
        "generate or prepare datasets",
        {
            "shapes": ("evaluate.shapesworld.cli", "generate ShapesWorld in the official dataset formats"),
            "list": ("evaluate.datasets.cli:list", "the datasets --data NAME:ROOT reads in their official layouts"),
            "check": ("evaluate.datasets.cli:check", "read every split of NAME:ROOT and check the official counts"),
        },
    ),
    "eval": (
        "evaluate a checkpoint on a protocol",
        {
            "full": (
                "evaluate.orchestration.full",
                "every protocol of a suite on one or more checkpoints: resumable job graph, report",
            ),
            "knn": ("evaluate.protocols.knn", "weighted k-NN classification (DINO protocol)"),
            "linear": ("evaluate.protocols.linear", "linear probing: DINO v1 protocol or a DINOv2-style grid of heads"),
            "logreg": (
                "evaluate.protocols.logreg",
                "L-BFGS logistic regression with a regularisation sweep (Kornblith)",
            ),
            "finetune": (
                "evaluate.protocols.finetune.run",
                "end-to-end fine-tuning: DeiT, MAE/BEiT, semi-supervised, transfer",
            ),
            "cluster": ("evaluate.protocols.cluster", "k-means on random class subsets: NMI, ARI, Hungarian accuracy"),
            "sere-relation": (
                "evaluate.protocols.sere_relation",
                "SERE's difference of pixel/channel self-relations across views",
            ),
            "davis": ("evaluate.protocols.davis.cli", "DAVIS-2017 video segmentation by label propagation (J&F)"),
            "davis-score": ("evaluate.protocols.davis.score_cli", "J&F of a folder of DAVIS masks (official metric)"),
            "coco": (
                "evaluate.protocols.dense.cli",
                "COCO detection + instance segmentation with mmdet (Cascade Mask R-CNN 1x)",
            ),
            "ade20k": ("evaluate.protocols.dense.cli", "ADE20K semantic segmentation with mmseg (UperNet 160k)"),
            "voc": ("evaluate.protocols.dense.cli", "PASCAL VOC semantic segmentation with mmseg (UperNet 20k)"),
            "imagenet-s": (
                "evaluate.protocols.dense.cli",
                "ImageNet-S919 semi-supervised segmentation with mmseg (FCN)",
            ),
        },
    ),
    "ckpt": (
        "inspect, convert or create ViT checkpoints",
        {
            "inspect": ("evaluate.checkpoints.cli:inspect", "format, architecture and key report of a checkpoint"),
            "convert": ("evaluate.checkpoints.cli:convert", "write a tensor-only timm/mmdet/mmseg backbone file"),
            "init": ("evaluate.checkpoints.cli:init", "write a randomly initialised sslbench backbone export"),
        },
    ),
    "results": (
        "query the results store",
        {
            "ls": ("evaluate.reporting.results:ls", "one line per run of the results store"),
            "show": ("evaluate.reporting.results:show", "the full records of one run"),
            "export": ("evaluate.reporting.results:export", "export the (de-duplicated) records as CSV or JSONL"),
        },
    ),
    "plot": (
        "figures from pretraining logs and checkpoints",
        {
            "entropy": (
                "evaluate.reporting.figures:entropy",
                "source vs target entropy over training steps (BAM Fig. 3)",
            ),
            "attention": (
                "evaluate.reporting.figures:attention",
                "last-block CLS attention maps and mass-thresholded masks",
            ),
            "curves": ("evaluate.reporting.figures:curves", "loss, lr and k-NN accuracy over epochs"),
            "collapse": (
                "evaluate.reporting.figures:collapse",
                "collapse diagnostics: view cosines, effective rank, teacher entropy",
            ),
            "queries": (
                "evaluate.reporting.figures:queries",
                "last-block attention of CLS and of ADCLR query crops over the patches (ADCLR Fig. 1 right)",
            ),
        },
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``sslbench <cmd>: error: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _leaf_parser(
    subparsers: argparse._SubParsersAction, name: str, module: str, help_text: str
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    _add_common(parser)
    module, _, name = module.partition(":")
    mod = importlib.import_module(module)
    getattr(mod, f"add_{name}_arguments" if name else "add_arguments")(parser)
    parser.set_defaults(_run=getattr(mod, f"run_{name}" if name else "run_cli"))
    return parser


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with only the selected command's module imported."""
    parser = _Parser(
        prog="sslbench",
        description="Pretrain ViTs (BAM, ADCLR, SERE, DINO, iBOT) and evaluate any ViT checkpoint.",
    )
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    first = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == first:
            _leaf_parser(sub, name, module, help_text)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    for group, (group_help, members) in GROUPS.items():
        gparser = sub.add_parser(group, help=group_help, description=group_help)
        gsub = gparser.add_subparsers(dest="subcommand", metavar="<subcommand>")
        rest = [a for a in argv if not a.startswith("-")]
        second = rest[1] if len(rest) > 1 and rest[0] == group else None
        for name, (module, help_text) in members.items():
            if group == first and name == second:
                _leaf_parser(gsub, name, module, help_text)
            else:
                gsub.add_parser(name, help=help_text, add_help=False)
        gparser.set_defaults(_group_parser=gparser)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (so repeated ``main()`` calls in one process, e.g. under
    pytest's capture, never write to a closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logger = logging.getLogger("sslbench")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.propagate = False


def _close_progress_bars() -> None:
    """Close open tqdm bars so that an error message starts on a line of its own, never after a bar's text."""
    tqdm_module = sys.modules.get("tqdm")
    bars = list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or [])
    for bar in bars:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # mmengine (0.10.7) imports pkg_resources, whose deprecation warning would be two stray stderr lines per command
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    try:
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if not hasattr(args, "_run"):
            (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
            return 2
        _setup_logging(args)
        return int(args._run(args) or 0)
    except SSLBenchError as exc:
        _close_progress_bars()
        print(f"sslbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sslbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
