"""``toolkit submit``: the command line over :mod:`toolkit.slurm.jobs` (parsing and printing only).

Examples::

    # 2 nodes x 4 GPUs, preemptible, resumes by itself after requeue:
    toolkit submit pretrain --config recipes/french/pretrain.yaml --run-dir runs/french \\
        --nodes 2 --gpus-per-node 4 --cpus-per-task 8 --partition gpu --account myproj --time 2-00:00:00

    # one array task per checkpoint of a run, then a merged results table:
    toolkit submit evaluate --checkpoints runs/french --output results/french --gpus-per-node 1 --time 2:00:00 \\
        -- --dataset vmc2023:/data/vmc2023:1

    # both, the evaluation queued behind pretraining (add --every 120 to evaluate every 2 hours):
    toolkit submit chain --config recipes/french/pretrain.yaml --run-dir runs/french \\
        --eval-output results/french --nodes 2 --gpus-per-node 4 --time 2-00:00:00 \\
        -- --dataset vmc2023:/data/vmc2023:1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.slurm.resources import add_resource_arguments, resources_from_arguments


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python", help="interpreter the jobs run (default: this one, %(default)s)", default=sys.executable)
    parser.add_argument("--dry-run", action="store_true", help="check everything, print the sbatch commands, submit nothing")
    parser.add_argument("--no-test", action="store_true", help="skip the `sbatch --test-only` check of the request")


def _add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True, help="pretraining YAML config (repeatable)")
    parser.add_argument("--run-dir", required=True, help="run directory: checkpoints, logs, SLURM output")
    parser.add_argument(
        "--resume", default="auto",
        help="auto (the run's newest complete checkpoint, at every start), never, or a .ckpt path",
    )
    parser.add_argument("--signal-seconds", type=int, default=300, help="SIGUSR1 this long before the time limit (default 300)")
    add_resource_arguments(parser)
    _add_common(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Submit pretraining / evaluation jobs to SLURM, after checking configs, paths, checkpoints and resources.

    Example:
      toolkit submit pretrain --config recipes/french/pretrain.yaml --run-dir runs/french \\
          --nodes 2 --gpus-per-node 4 --partition gpu --account myproj --time 2-00:00:00
      toolkit submit evaluate --checkpoints runs/french --output results/french --gpus-per-node 1 \\
          -- --dataset vmc2023:/data/vmc2023:1
      toolkit submit chain --config recipes/french/pretrain.yaml --run-dir runs/french \\
          --eval-output results/french --gpus-per-node 4 -- --dataset vmc2023:/data/vmc2023:1

    Options after `--` go unchanged to `toolkit pretrain` (pretrain) or `toolkit evaluate`.
    """
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("pretrain", help="submit multi-node pretraining (preemptible, resumes itself)", formatter_class=fmt,
                       description="Submit slurm/pretrain.sbatch. Arguments after -- go to `toolkit pretrain`.")
    _add_pretrain(p)

    e = sub.add_parser("evaluate", help="evaluate every checkpoint of a run: array job + merge", formatter_class=fmt,
                       description="Submit slurm/evaluate.sbatch as an array (one task per checkpoint) and a merge "
                       "job. Arguments after -- go to `toolkit evaluate`.")
    e.add_argument("--checkpoints", nargs="+", required=True, dest="sources", metavar="PATH",
                   help="run directories (searched for checkpoints) or checkpoint files")
    e.add_argument("--output", required=True, help="results directory")
    e.add_argument("--parallel", type=int, help="at most this many array tasks at once")
    e.add_argument("--only-new", action="store_true", help="skip checkpoints that already have results")
    e.add_argument("--no-merge", action="store_true", help="do not queue the merge step")
    e.add_argument("--every", type=int, metavar="MINUTES", help="with --while-running: evaluate again every MINUTES")
    e.add_argument("--while-running", metavar="JOBID", help="repeat (see --every) while this pretraining job is queued")
    add_resource_arguments(e)
    _add_common(e)

    c = sub.add_parser("chain", help="submit pretraining, and its evaluation behind it", formatter_class=fmt,
                       description="Submit pretraining, then a small job that submits the evaluation of its "
                       "checkpoints when it finishes (afterok), or every --every minutes while it runs. "
                       "Arguments after -- go to `toolkit evaluate`. The evaluation jobs share the partition, "
                       "account, QOS, constraint and --sbatch-option values of the pretraining request.")
    _add_pretrain(c)
    c.add_argument("--eval-output", required=True, help="results directory for the evaluation")
    c.add_argument("--pretrain-arg", action="append", default=[], metavar="ARG",
                   help="one argument for `toolkit pretrain` (repeatable; write --pretrain-arg=--trainer.max_steps=100)")
    c.add_argument("--every", type=int, metavar="MINUTES", help="evaluate new checkpoints every MINUTES while training")
    c.add_argument("--eval-parallel", type=int, help="at most this many evaluation tasks at once")
    c.add_argument("--eval-gpus", type=int, default=0, help="GPUs per evaluation task (default 0)")
    c.add_argument("--eval-cpus", type=int, help="CPU cores per evaluation task")
    c.add_argument("--eval-mem", help="memory per evaluation task")
    c.add_argument("--eval-time", help="time limit per evaluation task")

    n = sub.add_parser("newest-checkpoint", help="print the checkpoint a (re)started run resumes from",
                       description="Print the run's newest complete checkpoint (highest step among "
                       "RUN_DIR/checkpoints/step-*.ckpt and RUN_DIR/hpc_ckpt_*.ckpt; nothing if none): the one "
                       "`toolkit pretrain --resume auto` resumes from.")
    n.add_argument("run_dir")

    k = sub.add_parser("checkpoints", help="print the checkpoints `submit evaluate --checkpoints` would evaluate",
                       description="Print, oldest step first, one per line, the checkpoints that "
                       "`toolkit submit evaluate --checkpoints PATH...` evaluates (folders are searched recursively; "
                       "a periodic and a preemption checkpoint of the same step count once).")
    k.add_argument("paths", nargs="+", metavar="PATH")

    r = sub.add_parser("result-name", help="print the results folder name of a checkpoint")
    r.add_argument("checkpoint")

    for action_parser in (p, e, c):
        action_parser.add_argument("passthrough", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _passthrough(args: argparse.Namespace) -> list[str]:
    rest = list(getattr(args, "passthrough", None) or [])
    if rest and rest[0] == "--":
        return rest[1:]
    if rest:
        raise ToolkitError(rest[0], "unexpected argument (options for the job itself go after --)")
    return rest


def run(args: argparse.Namespace) -> int:
    from toolkit.slurm import jobs

    passthrough = _passthrough(args)
    action = args.action
    if action == "newest-checkpoint":
        from toolkit.checkpoints import newest_in_run

        newest = newest_in_run(args.run_dir)
        if newest is not None:
            print(newest)
        return 0
    if action == "checkpoints":
        for info in jobs.evaluation_list(args.paths):
            print(info.path)
        return 0
    if action == "result-name":
        print(jobs.result_name(args.checkpoint))
        return 0
    test = not args.no_test
    if action == "pretrain":
        job = jobs.submit_pretrain(
            args.config, args.run_dir, resources_from_arguments(args), extra=passthrough, resume=args.resume,
            signal_seconds=args.signal_seconds, python=args.python, dry_run=args.dry_run, test=test,
        )
        if job:
            print(f"pretraining job {job}: logs in {Path(args.run_dir).resolve() / 'slurm'}")
        return 0
    if action == "evaluate":
        resources = resources_from_arguments(args)
        options = dict(extra=passthrough, parallel=args.parallel, python=args.python, dry_run=args.dry_run, test=test)
        if args.while_running:
            if not args.every:
                raise ToolkitError("--while-running", "needs --every MINUTES")
            array, merge, again = jobs.evaluate_pass(
                args.sources, args.output, resources, every_minutes=args.every, while_running=args.while_running,
                merge=not args.no_merge, **options,
            )
        else:
            again = None
            array, merge = jobs.submit_evaluate(
                args.sources, args.output, resources, only_new=args.only_new, merge=not args.no_merge, **options,
            )
        if array:
            print(f"evaluation array job {array}")
        if merge:
            print(f"merge job {merge}: table in {Path(args.output).resolve() / jobs.RESULTS_CSV}")
        if again:
            print(f"next evaluation pass: job {again}")
        return 0
    if action == "chain":
        resources = resources_from_arguments(args)
        eval_resources = jobs.evaluation_resources(
            resources, gpus=args.eval_gpus, cpus=args.eval_cpus, mem=args.eval_mem, time=args.eval_time,
        )
        pretrain_job, chain_job = jobs.submit_chain(
            args.config, args.run_dir, args.eval_output, resources, eval_resources,
            pretrain_extra=args.pretrain_arg, evaluate_extra=passthrough, resume=args.resume,
            signal_seconds=args.signal_seconds, every_minutes=args.every, eval_parallel=args.eval_parallel,
            python=args.python, dry_run=args.dry_run, test=test,
        )
        if chain_job:
            print(f"pretraining job {pretrain_job}: logs in {Path(args.run_dir).resolve() / 'slurm'}")
            print(f"evaluation job {chain_job}: "
                  + (f"every {args.every} min while training" if args.every else "after pretraining"))
        return 0
    raise ToolkitError(action, "unknown action")
