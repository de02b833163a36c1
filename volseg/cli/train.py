"""``volseg train``: parse options, call :func:`volseg.engine.run_training`."""

from __future__ import annotations

import argparse
from pathlib import Path

from volseg.cli.common import add_command


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "train",
        "Train a segmentation or grading model from a config.",
        "CONFIG is a YAML file (see configs/); key=value overrides follow it. The run goes to\n"
        "OUTPUT_DIR/NAME (NAME-1, NAME-2, ... if taken) with config.yaml, splits.json,\n"
        "checkpoints/{best,last}.pt, metrics.csv/.jsonl, TensorBoard events, progress.png and,\n"
        "with a frozen encoder, cache/ (slice features computed once, reused every epoch).\n"
        "Ctrl-C stops at the next optimiser step, saves last.pt and exits with status 130;\n"
        "--resume continues it exactly. Several GPUs (or CPU processes): the same command\n"
        "under torchrun. Overrides may also follow the flags.\n\n"
        "examples:\n"
        "  volseg train configs/synthetic_organs.yaml\n"
        "  volseg train configs/synthetic_organs.yaml --dry-run\n"
        "  volseg train configs/msd_spleen_vits_frozen.yaml train.epochs=100 data.fold=1\n"
        "  volseg train --resume runs/synthetic_organs\n"
        "  volseg train configs/msd_spleen_vits_lora.yaml --init-from runs/spleen/best.pt\n"
        "  torchrun --nproc_per_node=4 -m volseg train configs/btcv_vitb_frozen.yaml",
    )
    p.add_argument("config", type=Path, nargs="?", help="YAML config (not with --resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check config, manifest, splits and label values, print the plan, write nothing",
    )
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    p.add_argument(
        "--init-from", type=Path, metavar="CKPT", help="start a new run from these weights"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from volseg.config import Config, load_config, to_dict
    from volseg.errors import VolsegError

    if args.resume is not None:
        if args.config is not None or args.overrides or args.init_from is not None:
            raise VolsegError(
                "--resume RUN_DIR continues a run with its own config; drop CONFIG, the "
                "overrides and --init-from"
            )
        config = None
    else:
        if args.config is None:
            raise VolsegError("volseg train needs a CONFIG file (or --resume RUN_DIR)")
        config = load_config(Config, args.config, args.overrides)
    if args.print_config:
        import yaml

        if config is None:
            from volseg.engine.state import resume_config

            config, _ = resume_config(args.resume)
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    from volseg.engine import run_training

    run_training(
        config,
        resume=args.resume,
        init_from=args.init_from,
        dry_run=args.dry_run,
        progress=not args.no_progress,
        stop_raises=True,  # Ctrl-C: last.pt saved, then exit status 130, not 0
    )
    return 0
