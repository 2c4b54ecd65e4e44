"""``sparsify-tui profile perf|loss|quant`` and ``compare``: dispatch by kind."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    if args.kind == "perf":
        from sparsify_tui.commands import profile_perf

        return profile_perf.run(args)
    if args.kind == "loss":
        from sparsify_tui.commands import profile_loss

        return profile_loss.run_loss(args)
    from sparsify_tui.commands import profile_loss

    return profile_loss.run_quant(args)


def run_compare(args: argparse.Namespace) -> int:
    from sparsify_tui.commands import compare

    return compare.run(args)
