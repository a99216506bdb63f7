"""The ``pontryx`` command line (entry point :func:`.console.console`).

Commands::

    pontryx train CONFIG.yaml [--output DIR] [--set KEY.PATH=VALUE ...]
                  [--resume | --overwrite] [--max-memory SIZE] [--quiet]
    pontryx evaluate RUN_DIR [--data KEY=VALUE ... | --data FILE] [--json]
    pontryx check-gradient CONFIG.yaml [--set ...] [--seed S] [--h0 H] [--steps K]
    pontryx validate CONFIG.yaml [--set ...]
    pontryx methods [NAME] [--json]
    pontryx analyze RUN_DIR [RUN_DIR ...] [--output DIR] [--features projection|norms] [--json]
    pontryx hjb CONFIG.yaml [--output DIR] [--set ...] [--overwrite] [--quiet]
    pontryx info [--json]

Exit codes: 0 success (``train``: converged or the iterations asked for are
done), 1 internal error (``check-gradient``: an observed Taylor rate below
1.95), 2 bad input (configuration, command line, run directory, checkpoint,
memory), 3 non-finite loss or gradient, 4 the method stopped without converging,
5 the run directory could not be written (no space, permissions), 128 + N
interrupted by signal N (SIGTERM 143, SIGUSR1 138, SIGINT 130; resumable).

Under MPI every rank runs the same command. Bad input fails identically on
every rank (one line on rank 0). Any other exception on any rank prints one
line (after its traceback) and calls ``MPI.COMM_WORLD.Abort``, so the whole job
ends instead of the other ranks waiting forever in a collective.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import math
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

from mpi4py import MPI

from pontryx.meshes.errors import InputError, bounded, file_problem, show
from pontryx.solver.app.faults import abort
from pontryx.solver.app.signals import SIGNALS, Interrupted
from pontryx.solver.errors import (
    EXIT_NON_FINITE,
    EXIT_NOT_CONVERGED,
    NonFiniteError,
    SolveError,
    caused_by,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_IO", "EXIT_NON_FINITE", "main"]

EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_IO = 1, 2, 5
#: Seconds the ranks that failed on bad input wait for the others to fail likewise
#: before aborting the job (bad input fails on every rank at the same point).
AGREE_TIMEOUT = 10.0
TAYLOR_RATE = 1.95
#: with the first step chosen from the problem (in the asymptotic range, near
#: round-off), the rates must also be at most this: an error of the other sign
#: than the curvature first raises them towards a cancellation
TAYLOR_RATE_MAX = 2.05
#: a value that starts like a negative number (-5G, -.5, -inf), not like an option
NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)
#: the most steps h0, h0/2, …, h0/2^(K−1) of a Taylor test: the remainder r¹ ∝ h² falls
#: by 4^(K−1), and 4^26 = 2^52 is the inverse machine epsilon — further steps measure round-off
MAX_TAYLOR_STEPS = 27
#: copies of the controls a Taylor test holds (θ, the direction, ∇J, θ + h dθ, spare)
TAYLOR_COPIES = 6.0


# ------------------------------------------------------------------ parser ---


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("pontryx")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "(not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pontryx: error: …`` on rank 0 only
    (usage stays in ``--help``), exit code 2, the same on every rank."""

    def error(self, message: str):
        if MPI.COMM_WORLD.rank == 0:
            text = bounded(" ".join(message.split()))
            print(f"{self.prog}: error: {text} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pontryx",
        description="Continuum networks (width = finite-element mesh, depth = time) "
        "trained as PDE-constrained optimal control problems on FEniCSx/PETSc/MPI.",
        epilog="Run any command under `mpirun -n P`. Exit codes: 0 ok, 1 internal error, "
        "2 bad input, 3 non-finite loss/gradient, 4 not converged, 5 I/O error, "
        "128+N interrupted by signal N (resume with --resume).",
    )
    p.add_argument("--version", action="version", version=f"pontryx {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def overrides(sp):
        sp.add_argument(
            "--set",
            metavar="KEY.PATH=VALUE",
            action="append",
            default=[],
            help="override a configuration value (parsed as YAML), e.g. "
            "--set model.layers=8 --set training.max_iterations=50; repeatable",
        )

    t = sub.add_parser(
        "train",
        help="train a continuum network from a YAML configuration",
        description="Train a continuum network described by CONFIG.yaml; results go to a "
        "run directory (config.yaml, metrics.jsonl/.csv, summary.json, model.npz, "
        "checkpoints/, paraview/, plots/).",
    )
    t.add_argument("config", metavar="CONFIG.yaml", help="the parameter file")
    t.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        help="run directory (default: output.directory of the config, else runs/<config name>)",
    )
    overrides(t)
    mode = t.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the run directory "
        "(start fresh if there is none)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an existing run directory",
    )
    t.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    t.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse the run if its estimated memory per rank exceeds SIZE (e.g. 8G, 500M; "
        "default: the memory available on the node, shared by its ranks)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="evaluate a trained model (RUN_DIR/model.npz) on its data or other data",
        description="Load RUN_DIR/config.yaml and RUN_DIR/model.npz and report loss and "
        "accuracy (or RMSE) on the training and test sets.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by pontryx train")
    e.add_argument(
        "--data",
        metavar="KEY=VALUE|FILE",
        action="append",
        default=[],
        help="override the data section (e.g. --data n_test=5000 --data seed=1), "
        "or one .csv/.npz file to evaluate on (not both)",
    )
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser(
        "check-gradient",
        help="Taylor test of the adjoint gradient for a configuration",
        description="Taylor remainders |J(θ+hδ) − J(θ) − h⟨∇J, δ⟩| at the initial controls "
        "along a seeded random direction over all trainable controls; exit 0 only if "
        f"every observed rate is ≥ {TAYLOR_RATE} (with the first step chosen from the "
        f"problem, without --h0: between {TAYLOR_RATE} and {TAYLOR_RATE_MAX}).",
    )
    g.add_argument("config", metavar="CONFIG.yaml")
    overrides(g)
    g.add_argument("--seed", type=int, default=0, help="seed of the direction, ≥ 0 (default 0)")
    g.add_argument(
        "--h0",
        type=float,
        default=None,
        help="first step, 0 < h0 ≤ 1 (δ has the RMS size of each control; default: chosen "
        "from J alone — the deepest window of steps 2^-k where J's second differences fall "
        "at rate 2 ± 0.05 and the last remainder stands above round-off)",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=4,
        help=f"the number K of steps h0, h0/2, …, h0/2^(K−1), giving K − 1 rates "
        f"(2 ≤ K ≤ {MAX_TAYLOR_STEPS}; default 4: three rates)",
    )
    g.set_defaults(func=cmd_check_gradient)

    v = sub.add_parser(
        "validate",
        help="check a configuration (schema, mesh, data, model) without training",
        description="Validate CONFIG.yaml: the schema, then build the mesh, data set, network "
        "and trainer exactly as `train` would, writing nothing.",
    )
    v.add_argument("config", metavar="CONFIG.yaml")
    overrides(v)
    v.set_defaults(func=cmd_validate)

    me = sub.add_parser(
        "methods",
        help="the training methods and their options with defaults",
        description="List every training method (training.method) with its options "
        "(training.options) and their defaults; with NAME, that method only.",
    )
    me.add_argument("name", metavar="NAME", nargs="?", help="one method")
    me.add_argument("--json", action="store_true", help="print as JSON")
    me.set_defaults(func=cmd_methods)

    a = sub.add_parser(
        "analyze",
        help="diffusion maps of the controls recorded along runs (output.trajectory_every)",
        description="Embed the controls recorded along one or several runs "
        "(RUN_DIR/trajectory.jsonl, written with output.trajectory_every: k) with a diffusion "
        "map (Coifman & Lafon 2006) and plot the leading diffusion coordinates coloured by "
        "iteration and by loss, with the eigenvalue spectrum.",
    )
    a.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories")
    a.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        help="where diffusion_map.png/.npz go (default: the first RUN_DIR's analysis/)",
    )
    a.add_argument(
        "--features",
        choices=("projection", "norms"),
        default="projection",
        help="what is embedded: the random projection of the controls (default) or their "
        "layerwise L² norms",
    )
    a.add_argument(
        "--components",
        type=int,
        default=None,
        help="diffusion coordinates, from 2 to the recorded iterates less one (default 3, or 2 "
        "for 3 iterates)",
    )
    a.add_argument(
        "--epsilon", type=float, default=None, help="kernel bandwidth ε > 0 (default: automatic)"
    )
    a.add_argument(
        "--alpha", type=float, default=1.0, help="density normalisation 0 ≤ α ≤ 1 (default 1)"
    )
    a.add_argument("--time", type=float, default=1.0, help="diffusion time t > 0 (default 1)")
    a.add_argument("--json", action="store_true", help="print the summary as JSON")
    a.set_defaults(func=cmd_analyze)

    hj = sub.add_parser(
        "hjb",
        help="HJB value function of the network reduced to two states; feedback vs open loop",
        description="Solve the HJB equation of the two-dof network of CONFIG.yaml (an hjb: "
        "section) on a grid, extract the feedback law, and compare its closed-loop cost with "
        "the open-loop solution pontryx finds, from every initial state; results go to a run "
        "directory (summary.json, value.npz, plots/, paraview/).",
    )
    hj.add_argument("config", metavar="CONFIG.yaml", help="a parameter file with an hjb: section")
    hj.add_argument("--output", "-o", metavar="DIR", help="run directory (as for train)")
    overrides(hj)
    hj.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    hj.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    hj.set_defaults(func=cmd_hjb)

    i = sub.add_parser(
        "info",
        help="versions, MPI ranks and PETSc configuration",
        description="Versions of pontryx, DOLFINx, PETSc, MPI; ranks; PETSc external packages.",
    )
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=cmd_info)
    return p


# ---------------------------------------------------------------- helpers ---


def _say(text: str = "") -> None:
    if MPI.COMM_WORLD.rank == 0:
        print(text, flush=True)


def _load(path: str, overrides, comm=MPI.COMM_WORLD, *, section: str | None = None):
    """The validated configuration; with ``section``, a file without that section
    (or with ``section: null``) is refused first, keyed by it."""
    from pontryx.solver.config import load_config

    hint = "pontryx train runs it" if section is not None else None
    return load_config(path, overrides, ranks=comm.size, require=section, hint=hint)


def _output(value: str | None) -> Path | None:
    """The directory of ``--output`` (None if not given; an empty path is refused)."""
    if value is not None and not value.strip():
        raise InputError("expected a directory, got an empty path", "--output")
    return None if value is None else Path(value)


def _run_dir(args, config) -> tuple[Path, str]:
    """The run directory and what gave it (the key of its errors): ``--output``, the
    configuration's ``output.directory``, or the default runs/NAME (``--output``'s)."""
    from pontryx.solver.app.directory import OUTPUT

    if args.output is not None:
        return _output(args.output), OUTPUT
    if config.output.directory:
        return Path(config.output.directory), "output.directory"
    return Path("runs") / Path(args.config).stem, OUTPUT


# --------------------------------------------------------------- commands ---


def cmd_train(args) -> int:
    from pontryx.solver.app.memory import parse_size
    from pontryx.solver.app.train import train

    max_memory = parse_size(args.max_memory) if args.max_memory is not None else None
    config = _load(args.config, args.set)
    run_dir, key = _run_dir(args, config)
    summary = train(
        config,
        run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        source=args.config,
        max_memory=max_memory,
        directory_key=key,
    )
    return int(summary.get("exit_code", 0))


def cmd_hjb(args) -> int:
    from pontryx.solver.app.hjb import run_hjb

    config = _load(args.config, args.set, section="hjb")
    run_dir, key = _run_dir(args, config)
    summary = run_hjb(
        config,
        run_dir,
        overwrite=args.overwrite,
        quiet=args.quiet,
        source=args.config,
        directory_key=key,
    )
    return int(summary["exit_code"])


def cmd_validate(args) -> int:
    from pontryx.solver.app.memory import check_memory
    from pontryx.solver.app.problem import build_problem, make_method

    config = _load(args.config, args.set)
    if config.hjb is not None:  # pontryx hjb's configuration: built, not solved
        from pontryx.solver.app.hjb import HJBProblem

        problem = HJBProblem(config)
        _say(f"{args.config}: valid (run by pontryx hjb)")
        for line in problem.describe():
            _say("  " + line)
        _say(f"  open loop: {config.training.method}, {config.training.max_iterations} iterations")
        problem.destroy()
        return 0
    comm = MPI.COMM_WORLD
    check_memory(config, comm, None)  # as pontryx train: before anything large exists
    problem = build_problem(config, comm)
    try:
        trainer = make_method(problem)
    except BaseException:
        problem.destroy()
        raise
    try:
        if trainer.memory_bytes():
            check_memory(config, comm, None, method_bytes=trainer.memory_bytes())
    except BaseException:
        trainer.destroy()
        problem.destroy()
        raise
    _say(f"{args.config}: valid")
    for line in problem.describe():
        _say("  " + line)
    _say(f"  method: {config.training.method}, {config.training.max_iterations} iterations")
    trainer.destroy()
    problem.destroy()
    return 0


def _data_overrides(config, specs) -> tuple[dict, str | None]:
    """The data section with ``--data KEY=VALUE`` overrides applied, and the file
    of a ``--data FILE`` (evaluated whole, with the model's classes), if any: one
    file, or overrides, not both."""
    from pontryx.solver.config import apply_override

    data, files, overrides = dict(config.data), [], []
    for spec in specs:
        if "=" in spec:
            key = spec.partition("=")[0].strip()
            if not key or any(not part for part in key.split(".")):
                raise InputError(
                    f"expected KEY=VALUE or a .csv/.npz file, got {show(spec)}", "--data"
                )
            holder = {"data": data}
            apply_override(holder, "data." + spec)
            data = holder["data"]
            overrides.append(spec)
        elif Path(spec).suffix.lower() in (".csv", ".npz", ".txt"):
            if files:
                raise InputError(f"one file only, got {show(files[0])} and {show(spec)}", "--data")
            if (why := file_problem(spec)) is not None:
                raise InputError(f"file {spec!r} {why}", "--data")
            files.append(spec)
        else:
            raise InputError(f"expected KEY=VALUE or a .csv/.npz file, got {show(spec)}", "--data")
    if files and overrides:
        raise InputError(
            "a file is evaluated whole, KEY=VALUE changes the configured data set: give one "
            f"or the other, got {show(files[0])} and {show(overrides[0])}",
            "--data",
        )
    if overrides and data.get("name") != dict(config.data).get("name"):
        holder = {"data": {}}  # another data set: its defaults and the overrides, not the
        for spec in overrides:  # keys of the configured one (a seed digits does not take)
            apply_override(holder, "data." + spec)
        data = holder["data"]
    return data, str(Path(files[0]).resolve()) if files else None


def _file_results(problem, controls, file: str, classes) -> dict:
    """Loss and metric on every sample of ``file`` (labels mapped by the model's
    ``classes``; an unknown label is refused). Collective."""
    from pontryx.solver.adjoint.reduced import ReducedFunctional
    from pontryx.solver.data import DATASET_KEYS, shard
    from pontryx.solver.data.files import file_kind, read_samples

    d = problem.config.data
    desc = {**DATASET_KEYS["file"], "path": file, "task": problem.dataset.task}
    if d["name"] == "file" and file_kind(d["path"]) == file_kind(file):
        # the training file's column choices, for a file of its kind (CSV keys do not
        # apply to an NPZ file; a .txt file is a CSV file)
        desc.update({k: d[k] for k in ("target", "header") if k in d})
    try:
        X, y, shape = read_samples(desc, None, classes)
    except InputError as e:
        raise e.under("--data") from None
    if X.shape[1] != problem.net.n_in:
        raise InputError(
            f"{file} has {X.shape[1]} features, the model takes {problem.net.n_in}", "--data"
        )
    model_shape = tuple(problem.dataset.input_shape)
    if len(shape) > 1 and len(model_shape) > 1 and shape != model_shape:
        raise InputError(
            f"{file} holds samples of shape {list(shape)}, the model takes {list(model_shape)}",
            "--data",
        )
    layout = problem.layout
    part = shard(len(X), layout.group, layout.n_data)
    rf = ReducedFunctional(problem.net, X[part], y[part], problem.dataset.task, layout=layout)
    J = rf(controls)
    m = problem.metric_name
    return {"file": {"loss": J, "misfit": rf.last["misfit"], m: rf.metric(), "samples": rf.S}}


def _data_fits_model(dataset, arrays) -> str | None:
    """Why the data set of ``evaluate --data KEY=VALUE`` does not fit the model file
    (its features, outputs or class labels), or None."""
    import numpy as np

    what = f"the data set of --data ({dataset.description})"
    for key, have in (("n_in", dataset.n_in), ("n_out", dataset.n_outputs)):
        if key in arrays and int(arrays[key]) != have:
            noun = "features" if key == "n_in" else "outputs"
            return f"{what} has {have} {noun}, the model takes {int(arrays[key])}"
    stored = tuple(np.asarray(arrays.get("classes", [])).tolist())
    if stored and dataset.classes and tuple(map(str, stored)) != tuple(map(str, dataset.classes)):
        return f"{what} has the classes {list(dataset.classes)}, the model {list(stored)}"
    return None


def cmd_evaluate(args) -> int:
    import numpy as np

    from pontryx.solver.app.memory import check_memory
    from pontryx.solver.app.problem import build_problem, evaluate
    from pontryx.solver.config import read_yaml, validate_config
    from pontryx.solver.outputs import model_io
    from pontryx.solver.outputs.rundir import lstat

    comm = MPI.COMM_WORLD
    run_dir = Path(args.run_dir)
    lstat(run_dir, "evaluate")  # a name too long, a loop: one line, exit 2 (was exit 5)
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir / 'config.yaml'} not found (not a run directory)", "evaluate")
    raw = read_yaml(run_dir / "config.yaml")
    if isinstance(raw, dict) and raw.get("hjb") is not None:
        raise InputError(
            f"{run_dir} is a pontryx hjb run (its results are summary.json and value.npz): "
            "evaluate applies to trained models (pontryx train, inverse)",
            "evaluate",
        )
    if not (run_dir / "model.npz").is_file():
        status = _status(run_dir)
        why = f"the run ended {status} without one" if status else "the run has not finished"
        raise InputError(f"{run_dir / 'model.npz'} not found ({why})", "evaluate")
    given = raw.get("parallel")  # its library and exchange kept (and checked)
    kept = dict(given) if isinstance(given, dict) else {}
    raw["parallel"] = {**kept, "width": None, "data": None, "depth": 1}  # any number of ranks
    config = validate_config(raw, ranks=comm.size, base_dir=run_dir)
    file = None
    if args.data and config.inverse is not None:
        raise InputError("an inverse run is evaluated on its own observations", "--data")
    if args.data:
        raw["data"], file = _data_overrides(config, args.data)
        config = validate_config(raw, ranks=comm.size, base_dir=Path.cwd())
    check_memory(config, comm, None, copies=1.0)  # the data to evaluate (--data n_test=…)
    problem = build_problem(config, MPI.COMM_WORLD)
    model = run_dir / "model.npz"
    try:
        arrays = model_io.load_model(model)
        bad = model_io.nonfinite(arrays)  # the same file on every rank: the same verdict
        if bad:
            raise NonFiniteError(f"{model} holds non-finite values (in {', '.join(bad)})")
        fits = args.data and file is None  # KEY=VALUE overrides built another data set
        misfit = _data_fits_model(problem.dataset, arrays) if fits else None
        own = problem.dataset if not args.data and config.inverse is None else None
        if not misfit:  # (the same verdict on every rank: check_model is collective)
            model_io.check_model(
                problem.net,
                arrays,
                task=own.task if own is not None else None,
                input_shape=own.input_shape if own is not None else None,
                classes=own.classes if own is not None else None,
                noise=problem.noise if config.inverse is None else None,
            )
        controls = None if misfit else model_io.controls_from_model(problem.net, arrays)
    except InputError as e:  # keyed by the entry of the model file, if one
        raise InputError(f"{model}: {e}", "evaluate") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {model}: {e}", "evaluate") from None
    if misfit:
        raise InputError(misfit, "--data")
    if config.inverse is not None:
        return _print_inverse(args, run_dir, problem, controls)
    with np.errstate(all="ignore"):  # a non-finite loss is reported below, once
        if file is not None:
            classes = tuple(np.asarray(arrays.get("classes", [])).tolist())
            results = _file_results(problem, controls, file, classes)
            description = f"every sample of {file}"
        else:
            results, description = evaluate(problem, controls), problem.dataset.description
    bad = _nonfinite_entry(results)
    if bad is not None:
        problem.destroy()
        raise NonFiniteError(
            f"{run_dir}: the {bad.removeprefix('file ')} on {file or 'its data'} is not "
            "finite (the network overflows on these inputs)"
        )
    if args.json:
        _say(json.dumps({"run_dir": str(run_dir), "metric": problem.metric_name, **results}))
    else:
        m = problem.metric_name
        noise = results.pop("noise", None)
        _say(f"{run_dir}: {description}")
        if noise is not None:
            _say("  the deterministic network (noise in depth off: g = 0):")
        for split, r in results.items():
            _say(
                f"  {split:5s}  {r['samples']:6d} samples  loss {r['loss']:.6e}  "
                f"misfit {r['misfit']:.6e}  {m} {r[m]:.4f}"
            )
        if noise is not None:
            _say(f"  mean over {noise.pop('paths')} noise path(s) per sample (model.noise):")
            for split, r in noise.items():
                _say(
                    f"  {split:5s}  {r['samples']:6d} samples  loss {r['loss']:.6e}  "
                    f"misfit {r['misfit']:.6e}  {m} {r[m]:.4f}"
                )
    problem.destroy()
    return 0


def _status(run_dir: Path) -> str | None:
    """The status summary.json records ("status 'non-finite'"), if it can be read."""
    try:
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return f"with status {status!r}" if isinstance(status, str) else None


def _nonfinite_entry(results: dict, where: str = "") -> str | None:
    """The first number of ``results`` (nested) that is not finite, as "test loss"."""
    for key, value in results.items():
        name = f"{where} {key}".strip()
        if isinstance(value, dict):
            found = _nonfinite_entry(value, name)
            if found is not None:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def _print_inverse(args, run_dir, problem, controls) -> int:
    """``pontryx evaluate`` of an inverse run: misfit, discrepancy, κ error."""
    results = problem.evaluate(controls)
    problem.destroy()
    if args.json:
        _say(json.dumps({"run_dir": str(run_dir), **results}))
        return 0
    r = results["train"]
    _say(f"{run_dir}: the inverse problem's {r['samples']} observations")
    _say(
        f"  J {r['loss']:.6e}  misfit Φ {r['misfit']:.6e}  H¹ term {r['regulariser_h1']:.3e}  "
        f"discrepancy {r['discrepancy']:.4f}"
    )
    if "kappa_error" in results:
        _say(f"  relative L² error of κ against κ†: {results['kappa_error']:.4f}")
    return 0


def _check_taylor_flags(args) -> None:
    """``--seed``, ``--steps`` and ``--h0`` of check-gradient, before anything is read."""
    if args.seed < 0:
        raise InputError(f"expected a non-negative integer, got {show(args.seed)}", "--seed")
    if args.steps < 2:
        raise InputError(f"expected at least 2 steps (one rate), got {args.steps}", "--steps")
    if args.steps > MAX_TAYLOR_STEPS:
        raise InputError(
            f"expected at most {MAX_TAYLOR_STEPS} steps (the remainder ∝ h² has then fallen "
            f"by 2^52, to round-off), got {show(args.steps)}",
            "--steps",
        )
    if args.h0 is not None and not 0 < args.h0 <= 1:
        raise InputError(
            f"expected 0 < h0 ≤ 1 (h0 = 1 moves each control by its RMS size), got {show(args.h0)}",
            "--h0",
        )


def cmd_check_gradient(args) -> int:
    from pontryx.solver.adjoint.taylor import first_step, taylor_test
    from pontryx.solver.app.problem import build_problem
    from pontryx.solver.outputs.canonical import random_direction

    _check_taylor_flags(args)
    config = _load(args.config, args.set)
    if config.hjb is not None:  # the open-loop J(b) of pontryx hjb, at b = 0
        from pontryx.solver.app.hjb import HJBProblem

        problem = HJBProblem(config)
    else:
        from pontryx.solver.app.memory import check_memory

        # θ, the direction, ∇J and a perturbed θ: a few copies; before anything is built
        check_memory(config, MPI.COMM_WORLD, None, TAYLOR_COPIES)
        problem = build_problem(config, MPI.COMM_WORLD)
    net, controls = problem.net, problem.controls
    names = getattr(problem, "trainable", net.trainable)
    direction = random_direction(net, controls, names, seed=args.seed)
    h0, top = args.h0, math.inf
    if h0 is None:
        top = TAYLOR_RATE_MAX
        h0 = first_step(problem.rf, controls, direction, steps=args.steps)
        if h0 is None:
            _say("FAIL: no step h = 2^-k with the Taylor expansion in its asymptotic range")
            problem.destroy()
            return 1
        _say(f"first step h0 = {h0:.3e} (chosen from the problem; --h0 to set it)")
    result = taylor_test(problem.rf, controls, direction, h0=h0, steps=args.steps)
    rates = result.rates
    finite = all(math.isfinite(r) for r in rates)
    ok = finite and min(rates) >= TAYLOR_RATE and max(rates) <= top
    _say(f"Taylor test of ∇J for {args.config} along a random direction (seed {args.seed}) ")
    _say(f"over {', '.join(names)}:")
    _say(result.table())
    _say(f"observed rates: {', '.join(f'{r:.3f}' for r in rates)}")
    if not finite:
        _say("FAIL: a remainder is 0 (round-off) or not finite: no rate; choose another --h0")
    else:
        bound = f"{TAYLOR_RATE} ≤ rate" + (f" ≤ {top}" if math.isfinite(top) else "")
        _say(
            f"{'PASS' if ok else 'FAIL'}: rates from {min(rates):.3f} to {max(rates):.3f}, "
            f"{'' if ok else 'not '}all {bound}"
        )
    problem.destroy()
    return 0 if ok else 1


def _summary(cls) -> str:
    """The summary of a class: its docstring's first paragraph, on one line (read
    from its source where ``python -OO`` dropped the docstrings)."""
    doc = cls.__doc__
    if doc is None:
        import ast
        import textwrap

        try:
            node = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
            doc = ast.get_docstring(node)
        except (OSError, TypeError, SyntaxError, IndexError):
            doc = None
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def cmd_methods(args) -> int:
    from pontryx.solver.registry import METHODS
    from pontryx.solver.training import method_class

    names = [args.name] if args.name is not None else list(METHODS)
    table = {}
    for name in names:
        try:
            cls = method_class(name)
        except InputError as e:
            raise InputError(e.message, "methods") from None
        table[name] = {"summary": _summary(cls), "options": dict(cls.defaults)}
    if args.json:
        _say(json.dumps(table, indent=2, default=str))
        return 0
    for name, entry in table.items():
        _say(f"{name}: {entry['summary']}")
        for key, value in entry["options"].items():
            _say(f"    {key} = {json.dumps(value, default=str)}")
    _say("Set them under training.options in the YAML file, e.g. --set training.options.gatol=1e-6")
    return 0


def cmd_analyze(args) -> int:
    """Diffusion maps of the runs' recorded paths: world rank 0 checks the flags,
    reads the runs, computes and writes (:func:`~.analyze.analyze` checks
    everything before it writes); its errors are raised on every rank."""
    from pontryx.solver.app.analyze import analyze
    from pontryx.solver.app.directory import on_root

    output = _output(args.output)
    summary = on_root(
        MPI.COMM_WORLD,
        lambda: analyze(
            args.run_dirs,
            output,
            features=args.features,
            components=args.components,
            epsilon=args.epsilon,
            alpha=args.alpha,
            t=args.time,
        ),
    )
    if args.json:
        _say(json.dumps(summary))
        return 0
    _say(
        f"diffusion map of {summary['points']} iterates ({summary['features']}, "
        f"dimension {summary['dimension']}): ε = {summary['epsilon']:.3g}, "
        f"α = {summary['alpha']:g}, t = {summary['t']:g}"
    )
    for r in summary["runs"]:
        first, last = r["iterations"]
        _say(
            f"  {r['directory']} ({r['methods']}): {r['points']} iterates, iterations "
            f"{first}–{last}, final loss {r['final_loss']:.4e}"
        )
    lam = ", ".join(f"{v:.4f}" for v in summary["eigenvalues"])
    _say(f"  eigenvalues λ_0 … : {lam}")
    _say(f"  wrote {summary['output']}/diffusion_map.png and diffusion_map.npz")
    return 0


def cmd_info(args) -> int:
    from pontryx.solver.outputs.environment import environment

    env = environment(MPI.COMM_WORLD)
    if args.json:
        _say(json.dumps(env, indent=2))
        return 0
    v, p = env["versions"], env["petsc"]
    _say(f"pontryx   {v['pontryx']}  (Python {v['python']})")
    _say(f"DOLFINx   {v['dolfinx']}  (basix {v['basix']}, UFL {v['ufl']}, FFCx {v['ffcx']})")
    _say(
        f"PETSc     {v['petsc']}  (petsc4py {v['petsc4py']}, {p['scalar_type']}, "
        f"{p['int_type']} indices)"
    )
    _say(f"MPI       {v['mpi']}  (MPI {v['mpi_standard']}, mpi4py {v['mpi4py']})")
    _say(f"NumPy     {v['numpy']}, SciPy {v['scipy']}")
    mkl = f"MKL {v['mkl']}" if v["mkl"] else "MKL not installed (pip install 'pontryx[mkl]')"
    _say(f"BLAS      {env['blas']} for the kernels' GEMMs (parallel.blas); {mkl}")
    sm = env["shared_memory"]
    node = "on one node" if sm["one_node"] else "on several nodes"
    _say(
        f"ranks     {env['ranks']} {node}; /dev/shm {sm['free_mb']:.0f} MB free (the width "
        "axis's node-shared arrays, parallel.exchange)"
    )
    packages = ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in p["external_packages"].items())
    _say(f"PETSc external packages: {packages}")
    config = ", ".join(f"{k}={val or '(unset)'}" for k, val in p["config"].items())
    _say(f"petsc4py.get_config(): {config}")
    dx = ", ".join(f"{k} {'yes' if on else 'no'}" for k, on in env["dolfinx"].items())
    _say(f"DOLFINx features: {dx}")
    return 0


# ------------------------------------------------------------ error exits ---


class _Agreement:
    """A duplicate of COMM_WORLD on which failing ranks agree that all of them
    failed on bad input (then they exit cleanly) before aborting the job."""

    def __init__(self):
        self.comm = MPI.COMM_WORLD.Dup() if MPI.COMM_WORLD.size > 1 else None

    def all_failed(self, timeout: float = AGREE_TIMEOUT) -> bool:
        if self.comm is None:
            return True
        request = self.comm.Ibarrier()
        deadline = time.monotonic() + timeout
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def _fail(agreement: _Agreement, code: int, message: str, *, expected: bool) -> int:
    """Report and leave: if every rank failed the same expected way, rank 0
    prints and all return ``code``; otherwise this rank prints and aborts."""
    world = MPI.COMM_WORLD
    message = bounded(message)  # README: at most 60 characters of a value
    if expected and agreement.all_failed():
        if world.rank == 0:
            print(message, file=sys.stderr, flush=True)
        return code
    prefix = f"[rank {world.rank}/{world.size}] " if world.size > 1 else ""
    print(prefix + message, file=sys.stderr, flush=True)
    if world.size > 1:
        abort(code)
    return code


def _import_dolfinx() -> None:
    """Import DOLFINx with a ``sys.argv`` it can take: it hands the arguments to its
    logger as UTF-8 strings, which a file name of other bytes (kept by Python as
    surrogate escapes) is not — every command failed with a TypeError. The
    arguments themselves are used as given."""
    given = sys.argv
    printable = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in given]
    if "dolfinx" in sys.modules or printable == given:
        return
    sys.argv = printable
    try:
        import dolfinx  # noqa: F401
    finally:
        sys.argv = given


class _Stdout:
    """sys.stdout for an output that may fail (``pontryx train … | head``, a batch
    job's output file on a full disk): the first write or flush that fails (a
    closed pipe, no space) points file descriptor 1 at /dev/null, and the command
    goes on — the run's log is in its run directory — instead of dying half-way on
    SIGPIPE (PETSc's handler), a BrokenPipeError or an ENOSPC taken for the run
    directory's."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError:
            self._gone()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self._gone()

    def _gone(self):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())
        os.close(null)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _jit_cache() -> Path:
    """The FFCx/DOLFINx JIT cache, as dolfinx.jit finds it."""
    return Path(os.getenv("XDG_CACHE_HOME", default=Path.home() / ".cache")).expanduser() / "fenics"


def _jit_cache_problem(e: BaseException) -> bool:
    """Whether ``e`` is the JIT compiler failing on its cache: an OSError on a path in
    it, or DOLFINx's RuntimeError of a failed compilation or cache load (a rank whose
    cache failed makes the others fail with "JIT compilation failed on rank r")."""
    if isinstance(e, OSError) and e.filename is not None:
        cache = _jit_cache()
        return (
            Path(os.fsdecode(e.filename)) in (cache, *cache.parents)
            or cache in Path(os.fsdecode(e.filename)).parents
        )
    return isinstance(e, RuntimeError) and "JIT" in str(e)


def _jit_cache_message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (
        f"config error: XDG_CACHE_HOME: the forms are compiled into {_jit_cache()}, which "
        f"failed ({text}); set XDG_CACHE_HOME to a writable directory"
    )


def _start_petsc() -> None:
    """PETSc initialised without its signal handler (a signal dump and an abort,
    which would replace the command line's handlers while DOLFINx loads); an error
    of its start-up (PETSC_OPTIONS' -options_file, a .petscrc, a working directory
    that is gone) as one line."""
    if "petsc4py.PETSc" in sys.modules:
        return
    import tempfile

    import petsc4py

    sys.stderr.flush()
    saved, caught = os.dup(2), tempfile.TemporaryFile()
    os.dup2(caught.fileno(), 2)  # PETSc's own error banner, kept for the one line
    failed = None
    try:
        petsc4py.init([sys.argv[0] if sys.argv else "pontryx", "-no_signal_handler"])
        from petsc4py import PETSc  # noqa: F401  (PETSc starts here)
    except Exception as e:
        failed = " ".join(str(e).split()) or type(e).__name__
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        caught.seek(0)
        text = caught.read().decode("utf-8", "replace")
        caught.close()
    if failed is None:
        sys.stderr.write(text)  # PETSc's warnings, if any
        return
    why = failed  # the banner's last message line before its "See https://…"
    for line in (ln.split("PETSC ERROR: ", 1)[-1].strip() for ln in text.splitlines()):
        if line.startswith("See "):
            break
        if line and not line.startswith("-"):
            why = line
    raise InputError(
        f"PETSc could not start: {why} (PETSC_OPTIONS, .petscrc and ~/.petscrc are read, "
        "from the working directory)",
        "petsc",
    )


def _tolerate_closed_stdout() -> None:
    """SIGPIPE ignored (PETSc's handler printed a signal dump and aborted every rank
    on it), so a closed stdout is an EPIPE that :class:`_Stdout` absorbs."""
    from petsc4py import PETSc  # noqa: F401  (initialised now: its handler is set, then replaced)

    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if not isinstance(sys.stdout, _Stdout) and sys.stdout is not None:
        sys.stdout = _Stdout(sys.stdout)


def _negative_values(argv: list[str]) -> list[str]:
    """``--flag -5G`` as ``--flag=-5G``: argparse takes a value that starts with "-"
    and is not a plain number for an option, and said "expected one argument";
    joined, the flag's own check names what is wrong with the value."""
    out: list[str] = []
    for a in map(str, argv):
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE.match(a):
            out[-1] += "=" + a
        else:
            out.append(a)
    return out


class _Signalled(KeyboardInterrupt):
    """A stop signal where no training loop takes it (the set-up, other commands)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


_SIGNALLED: list[int] = []


def _signalled(signum, frame):
    if not _SIGNALLED:  # once: a duplicate delivery (coreutils' timeout) is the same
        _SIGNALLED.append(signum)
        raise _Signalled(signum)


def main(argv: list[str] | None = None, *, finally_ignore: bool = False) -> int:
    """Run the command line; returns the exit code.

    SIGTERM, SIGUSR1 and SIGINT outside a training loop (which stops after its
    iteration, :mod:`.signals`) end the command with 128 + the signal and one line,
    ``interrupted``, printed by rank 0 where every rank took it. The handlers are
    restored at the end (``finally_ignore``: the signals ignored instead, for the
    console script, :mod:`.console`)."""
    argv = _negative_values(sys.argv[1:] if argv is None else argv)
    if MPI.COMM_WORLD.rank == 0:
        args = _parser().parse_args(argv)
    else:  # --help, --version and argparse's errors from rank 0 only (all exit alike)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = _parser().parse_args(argv)
    _SIGNALLED.clear()
    previous = {s: signal.signal(s, _signalled) for s in SIGNALS}
    agreement = _Agreement()
    try:
        try:
            _start_petsc()  # (without PETSc's signal handler, which would replace ours)
            _import_dolfinx()
            _tolerate_closed_stdout()
            return args.func(args)
        except InputError as e:
            return _fail(agreement, EXIT_BAD_INPUT, f"config error: {e}", expected=True)
        except NonFiniteError as e:
            return _fail(agreement, EXIT_NON_FINITE, f"error: {e}", expected=True)
        except Interrupted as e:  # a stage of hjb, on every rank together
            return _fail(agreement, e.exit_code, "interrupted", expected=True)
        except (OSError, RuntimeError) as e:
            if _jit_cache_problem(e):
                return _fail(agreement, EXIT_BAD_INPUT, _jit_cache_message(e), expected=True)
            if not isinstance(e, OSError):
                raise
            # the run directory: no space left, permissions, …
            where = f" ({e.filename})" if e.filename else ""
            text = f"error: cannot write the run directory{where}: {e.strerror or e}"
            return _fail(agreement, EXIT_IO, text, expected=False)
    except KeyboardInterrupt as e:
        code = 128 + getattr(e, "signum", signal.SIGINT)
        return _fail(agreement, code, "interrupted", expected=True)
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        failed = caused_by(e, SolveError)  # itself, or a PETSc solve's error caused by it
        if failed is not None:
            return _fail(agreement, EXIT_NOT_CONVERGED, f"error: {failed}", expected=True)
        traceback.print_exc()
        text = " ".join(str(e).split()) or type(e).__name__
        return _fail(
            agreement, EXIT_INTERNAL, f"pontryx: error: {type(e).__name__}: {text}", expected=False
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if finally_ignore else handler)
        if agreement.comm is not None:
            agreement.comm.Free()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(finally_ignore=True))
