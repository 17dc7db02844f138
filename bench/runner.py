"""The generic training/evaluation loop: every (model, seed) of a suite to the same budget.

The runner owns everything a fair comparison must hold constant: data order, seeding, device,
precision, budget accounting, timing (steady-state throughput excludes warm-up and evaluation),
checkpoints and the result record. The wrapper only computes losses and samples
(:mod:`bench.registry`). Flow of data: suite -> runner -> wrapper -> record.

The jobs around the loop live in their own modules: :mod:`bench.device` (device, rank, peak memory),
:mod:`bench.seeding` (seeds, RNG capture for checkpoints), :mod:`bench.checkpoint` (what a checkpoint holds,
written and restored atomically), :mod:`bench.suite` (budget accounting), :mod:`bench.stopping` (preemption signals),
:mod:`bench.distributed` (gradient averaging), :mod:`bench.evaluation` (metrics and the sampler sweep),
:mod:`bench.run_record` (record fields, identity, writing) and :mod:`bench.progress`. What stays here is the
loop itself (:class:`Trainer`) and the suite driver, a little over 400 lines, kept together because a
reader checking that a budget is honoured fairly needs to see the step, its timing and its accounting at once.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

from bench import (checkpoint, distributed, environment, evaluation, flops, metrics, paths, preflight, real_data, registry,
                   stopping, threads)
from bench.data import EpochLoader, ImageData, load_split
from bench.device import peak_memory_mb, reset_peak_memory, resolve_device, world
from bench.errors import BenchError
from bench.progress import PlainProgress, progress_bar
from bench.records import RunRecord, disk_full_message, utc_now
from bench.registry import Batch, GenerativeModel
from bench.run_record import finished_runs, loss_curve, record_header, run_hash, write
from bench.seeding import capture_rng, seed_everything, step_generator
from bench.stopping import Interrupted
from bench.suite import Suite, model_config


class Diverged(Exception):
    """Non-finite loss or a family's own divergence/collapse signal (FloatingPointError)."""


@dataclasses.dataclass
class RunOptions:
    results_dir: Path = Path(paths.RESULTS)
    checkpoint_dir: Path = Path(paths.CHECKPOINTS)
    cache_dir: Path = dataclasses.field(default_factory=paths.cache_dir)
    data_root: str | None = None
    download: bool | None = None  # None: download only when no --data-root is given
    resume: bool = False
    device: str | None = None  # overrides train.device
    models: list[str] | None = None  # subset of the suite's run names
    seeds: list[int] | None = None  # subset/override of train.seeds
    progress: bool = True
    keep_checkpoints: bool = False
    threads: int | None = None  # torch intra-op threads; None: train.threads, else chosen by bench.threads
    rerun: bool = False  # with resume: run (model, seed) pairs again even when an ok record of the same config exists
    reports_dir: Path | None = None  # where the report will be rendered after training (checked before it)


# ---- the loop -----------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainState:
    """Everything about training progress that a checkpoint must restore."""

    step: int = 0
    images: int = 0  # global images seen (all processes)
    train_seconds: float = 0.0  # wall-clock in training steps only
    eval_seconds: float = 0.0
    steady_seconds: float = 0.0  # training time after warm-up (for throughput)
    steady_images: int = 0
    losses: list[float] = dataclasses.field(default_factory=list)
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # evaluations at budget fractions
    next_fraction: int = 0
    interruptions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    flops_per_step: float | None = None  # counted once before training under a flops budget (bench.flops)


class Trainer:
    """Trains one (model, seed) of a suite to its budget and evaluates it."""

    def __init__(self, suite: Suite, run_name: str, seed: int, opts: RunOptions,
                 train_data: ImageData, eval_data: ImageData):
        self.suite, self.run_name, self.seed, self.opts = suite, run_name, seed, opts
        self.train_data, self.eval_data = train_data, eval_data
        self.cfg = suite.models[run_name]
        self.cls = registry.get(self.cfg["model"])
        self.device = resolve_device(opts.device or suite.train["device"])
        self.precision = suite.train["precision"]
        self.rank, self.world = world()
        self.batch_size = int(self.cfg.get("batch_size", suite.train["batch_size"]))  # global batch
        self.budget = suite.budget_for(run_name)
        self.state = TrainState()
        self._shard_weight = 1.0  # this process's share of the global batch (DDP)
        self.ckpt_dir = (Path(opts.checkpoint_dir) / suite.name / suite.profile /
                         f"{run_name}__seed{seed}__{suite.config_hash(run_name)}")
        self._last_ckpt = time.monotonic()
        self._saved_step = -1

    # -- setup --
    def build(self) -> None:
        seed_everything(self.seed)
        spec = self.train_data.spec
        self.model: GenerativeModel = self.cls(model_config(self.cfg), spec).to(self.device)
        # The instance decides (a wrapper that can run unconditionally sets conditional=False on
        # unlabelled data, e.g. cfm); wrappers that need labels reject the DataSpec themselves.
        if self.model.conditional and not spec.num_classes:
            raise BenchError(f"model {self.run_name!r} is conditional but dataset {self.suite.data['dataset']} "
                             "has no labels; use a labelled dataset or an unconditional model")
        self.model.optimizers = self.model.configure_optimizers()
        self.model._optimize_hook = self._optimize
        self.loader = EpochLoader(self.train_data, self.batch_size, self.seed)
        self.step_gen = torch.Generator(self.device).manual_seed(self.seed * 7919 + 1)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _optimize(self, loss: torch.Tensor, name: str) -> None:
        """The harness's backward + step: gradient averaging across processes, clipping, EMA hook."""
        if name not in self.model.optimizers:
            raise KeyError(f"{self.run_name}: optimizer {name!r} not in configure_optimizers() "
                           f"({', '.join(self.model.optimizers)})")
        opt = self.model.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        if self.world > 1:
            distributed.average_gradients(params, self._shard_weight)
        clip = float(self.suite.train.get("grad_clip") or 0.0)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)  # free them now, not after the next forward: a parameter-sized set
        self.model.after_optimizer_step(name)

    # -- budget (accounted by :class:`bench.suite.Budget`) --
    def resolve_budget(self) -> None:
        """Under a flops budget, count one training step's FLOPs (once: a resumed run keeps its checkpoint's count),
        which fixes the run's step count on every machine."""
        if self.budget.kind != "flops" or self.state.flops_per_step is not None:
            return
        fps = flops.training_step_flops(self.model, self.train_data.x, self.train_data.y, self.batch_size,
                                        self.device, self.autocast)
        if fps <= 0:
            raise BenchError(f"model {self.run_name!r} counts no FLOPs per training step ({flops.__name__} counts "
                             "matmuls, convolutions and attention only), so a flops budget cannot set its steps; give "
                             f"it a budget of its own, e.g. models.{self.run_name}.budget = {{ steps = 1000 }}")
        self.state.flops_per_step = fps

    def _used(self) -> dict[str, float]:
        st = self.state
        return {"steps": st.step, "images": st.images, "seconds": st.train_seconds,
                "epochs": self.loader.epoch + self.loader.offset / max(1, len(self.train_data)),
                "flops": st.step * (st.flops_per_step or 0.0)}

    def progress(self) -> float:
        return self.budget.fraction(**self._used())

    def finished(self) -> bool:
        return self.budget.reached(**self._used())

    # -- checkpoints --
    def _rng_state(self) -> dict[str, Any]:
        return capture_rng(self.step_gen, self.device)

    def save_checkpoint(self, rng: dict[str, Any] | None = None) -> None:
        """Checkpoint on rank 0; ``rng``: RNG states to store instead of the current ones (a stop
        during an evaluation stores those from before it, so the resumed run redoes it identically)."""
        if self.rank != 0:
            return
        payload = checkpoint.training_payload(self.model, self.loader, rng or self._rng_state(),
                                              dataclasses.asdict(self.state), self.suite.config_hash(self.run_name))
        checkpoint.save(self.ckpt_dir, payload, self.state.step)
        self._last_ckpt = time.monotonic()
        self._saved_step = self.state.step

    def stop(self, phase: str, rng: dict[str, Any] | None = None) -> None:
        """Honour a stop request: note it, checkpoint, raise :class:`Interrupted`."""
        name = stopping.signal_name()
        self.state.interruptions.append({"signal": name, "step": self.state.step, "phase": phase, "time": utc_now()})
        self.save_checkpoint(rng)
        raise Interrupted(f"stopped by signal {name} at step {self.state.step} ({phase}); checkpoint saved")

    def try_resume(self) -> list[str]:
        payload, notes = checkpoint.load(self.ckpt_dir, map_location=self.device)
        if payload is None:
            if notes:  # checkpoints were there but none is usable: say so before starting over
                print(f"warning: cannot resume {self.run_name} seed {self.seed} from {self.ckpt_dir}: {'; '.join(notes)}; "
                      "starting over from step 0", file=sys.stderr)
                self.state.interruptions.append({"restarted_from_step": 0, "time": utc_now(), "notes": notes})
            return notes
        if notes:
            print(f"warning: {self.run_name} seed {self.seed}: {'; '.join(notes)}", file=sys.stderr)
        self.state = TrainState(**checkpoint.restore_training(payload, self.model, self.loader, self.step_gen,
                                                              self.device))
        self.state.interruptions.append({"resumed_at_step": self.state.step, "time": utc_now(), "notes": notes})
        return notes

    # -- evaluation --
    def _context(self, sampler: dict[str, Any], final: bool) -> metrics.EvalContext:
        return metrics.EvalContext(
            model=self.model, real=self.eval_data, train=self.train_data,
            eval_cfg={**self.suite.eval, "eval_batch_size": self.suite.train["eval_batch_size"]},
            device=self.device, precision=self.precision, seed=self.seed, sampler=sampler,
            cache_dir=str(Path(self.opts.cache_dir)), dataset=self.suite.data, final=final,
            stop_requested=stopping.stop_requested, data_root=self.opts.data_root)

    def evaluate(self, final: bool) -> tuple[dict[str, Any], metrics.Samples | None]:
        """(metrics, sample grid (final evaluation only)); see :func:`bench.evaluation.evaluate`. A stop request
        is honoured between sample batches and between metrics: the checkpoint then holds the state from before
        this evaluation (training state unchanged by it), and the resumed run redoes the evaluation from the start."""
        t0 = time.perf_counter()
        rng = self._rng_state()
        try:
            result, grid = evaluation.evaluate(self._context, list(self.suite.eval["metrics"]),
                                               dict(self.cfg.get("sampler") or {}), self.cfg.get("samplers") or {},
                                               final)
        except metrics.EvaluationStopped:
            self.state.eval_seconds += time.perf_counter() - t0
            self.stop("final evaluation" if final else "evaluation", rng)
        self.state.eval_seconds += time.perf_counter() - t0
        return result, grid

    def _due_evaluations(self) -> None:
        """Evaluations at budget fractions that progress has reached (all but the final one)."""
        fractions, st = self.suite.train["eval_fractions"], self.state
        p = self.progress()
        while st.next_fraction < len(fractions) - 1 and p >= fractions[st.next_fraction]:
            m, _ = self.evaluate(final=False)
            st.curve.append({"fraction": fractions[st.next_fraction], "step": st.step, "images": st.images,
                             "flops": st.step * st.flops_per_step if st.flops_per_step else None,
                             "train_seconds": st.train_seconds, "metrics": m})
            st.next_fraction += 1

    # -- the loop --
    def train(self, on_step: Callable[["Trainer", float], None] | None = None) -> None:
        warmup = int(self.suite.train["warmup_steps"])
        steps_this_process = 0
        every_s = float(self.suite.train.get("checkpoint_every_s") or 0)
        if self.state.step > 0:  # resumed from a stop during an evaluation at a budget fraction: redo it
            self._due_evaluations()
        while not self.finished():
            x, y, _ = self.loader.next(max_images=self.budget.images_left(self.state.images))
            n_global = int(x.shape[0])
            if self.world > 1:  # each process takes its share of the global batch
                xs = x[self.rank::self.world]
                self._shard_weight = xs.shape[0] / n_global
                if xs.shape[0] == 0:  # fewer images than processes: a dummy image with weight 0
                    xs, y = x[:1], (y[:1] if y is not None else None)
                else:
                    y = y[self.rank::self.world] if y is not None else None
                x = xs
            gen = self.step_gen if self.world == 1 else step_generator(self.seed, self.state.step, self.rank, self.device)
            batch = Batch(x.to(self.device, non_blocking=True),
                          y.to(self.device, non_blocking=True) if y is not None else None, gen)
            metrics.synchronize(self.device)
            t0 = time.perf_counter()
            try:
                with self.autocast():
                    out = self.model.training_step(batch, self.state.step)
            except FloatingPointError as e:
                raise Diverged(str(e) or "the model signalled divergence") from None
            metrics.synchronize(self.device)
            dt = time.perf_counter() - t0
            loss = float(out["loss"])
            stop = stopping.stop_requested()
            if self.world > 1:  # the global batch's loss, and one stop decision for all processes
                t = torch.tensor([loss * self._shard_weight, float(stop)], dtype=torch.float64)
                torch.distributed.all_reduce(t)
                loss, stop = float(t[0]), bool(t[1] > 0)
            if not math.isfinite(loss):
                raise Diverged(f"non-finite loss ({loss}) at step {self.state.step}")
            st = self.state
            st.step += 1
            st.images += n_global
            st.train_seconds += dt
            st.losses.append(loss)
            steps_this_process += 1
            if steps_this_process > warmup:
                st.steady_seconds += dt
                st.steady_images += n_global
            self._due_evaluations()
            if on_step is not None:
                on_step(self, loss)
            if stop:
                self.stop("training")
            if every_s > 0 and time.monotonic() - self._last_ckpt >= every_s:
                self.save_checkpoint()
        if every_s > 0 and steps_this_process > 0 and self._saved_step != self.state.step:
            self.save_checkpoint()  # the final evaluation can be long: a stop during it must not cost training

    def throughput(self) -> float | None:
        st = self.state
        if st.steady_seconds > 0:
            return st.steady_images / st.steady_seconds
        return st.images / st.train_seconds if st.train_seconds > 0 else None


def run_one(suite: Suite, run_name: str, seed: int, opts: RunOptions, train_data: ImageData,
            eval_data: ImageData, on_step: Callable | None = None) -> RunRecord:
    """Train and evaluate one (model, seed); returns the record (written by the caller on rank 0).

    Divergence and model errors become the record's status; :class:`Interrupted` and
    :class:`BenchError` propagate (a stop request, or a problem the user must fix).
    """
    cfg = suite.models[run_name]
    cls = registry.get(cfg["model"])
    record = record_header(suite, run_name, seed, train_data, eval_data, cls,
                           config={**cls.defaults, **model_config(cfg)}, config_hash=suite.config_hash(run_name))
    record.sampler, record.samplers = dict(cfg.get("sampler") or {}), dict(cfg.get("samplers") or {})
    record.search = dict(cfg.get("search") or {})
    trainer = Trainer(suite, run_name, seed, opts, train_data, eval_data)
    reset_peak_memory(trainer.device)
    record.hardware = {**environment.hardware(str(trainer.device)), **threads.describe()}
    try:
        trainer.build()
        record.config = trainer.model.config  # the typed config object's values (bench.registry.build_config)
        record.parameters = trainer.model.num_parameters()
        record.conditional = bool(trainer.model.conditional)  # the instance's, not the class's
        if opts.resume:
            trainer.try_resume()
        trainer.resolve_budget()
        trainer.train(on_step)
        final, grid = trainer.evaluate(final=True)
        record.metrics = final
        record.sampler_resolved = metrics.resolved_sampler(grid)  # defaults included
        record.samples = grid
    except Diverged as e:
        record.status, record.error = "diverged", str(e)
    except (Interrupted, BenchError, KeyboardInterrupt):
        raise
    except Exception as e:
        full = disk_full_message(e)
        if full:
            raise BenchError(full) from None
        record.status, record.error = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
        record.traceback = traceback.format_exc()
    st = trainer.state
    record.train = {"steps": st.step, "images": st.images, "epochs": st.images / max(1, len(train_data)),
                    "flops": st.step * st.flops_per_step if st.flops_per_step else None,
                    "flops_per_step": st.flops_per_step,
                    "global_batch": trainer.batch_size, "world_size": trainer.world,
                    "loss_first": st.losses[0] if st.losses else None,
                    "loss_last": st.losses[-1] if st.losses else None,
                    "loss_min": min(st.losses) if st.losses else None, "loss_curve": loss_curve(st.losses)}
    per_image = record.metric_value("train_flops_per_image")  # the cost metric's count, where no flops budget made one
    if record.train["flops"] is None and isinstance(per_image, (int, float)) and per_image > 0:
        record.train["flops"] = per_image * st.images
    record.curve = st.curve
    ips = trainer.throughput()
    record.timings = {"train_seconds": st.train_seconds, "eval_seconds": st.eval_seconds,
                      "train_images_per_second": ips,
                      "train_images_per_second_per_device": ips / trainer.world if ips else None,
                      **peak_memory_mb(trainer.device)}
    record.interruptions = st.interruptions
    record.finished = utc_now()
    if record.status == "ok" and not opts.keep_checkpoints and trainer.rank == 0:
        record.clear_checkpoints = str(trainer.ckpt_dir)  # by write(), once the record is on disk
    return record


def run_real_data(suite: Suite, seed: int, opts: RunOptions, train_data: ImageData, eval_data: ImageData
                  ) -> RunRecord:
    """The suite's real-data row (:mod:`bench.real_data`): training images in place of samples, through
    the models' sample metrics, extractor and counts; one record like a model's."""
    device = resolve_device(opts.device or suite.train["device"])
    record = record_header(suite, real_data.NAME, seed, train_data, eval_data, real_data.RealImages, config={},
                           config_hash=run_hash(suite, real_data.NAME))
    record.hardware = {**environment.hardware(str(device)), **threads.describe()}
    record.conditional = False
    t0 = time.perf_counter()

    def context(model: GenerativeModel) -> metrics.EvalContext:
        return metrics.EvalContext(
            model=model, real=eval_data, train=train_data,
            eval_cfg={**suite.eval, "eval_batch_size": suite.train["eval_batch_size"]}, device=device,
            precision="fp32", seed=seed, sampler={}, cache_dir=str(Path(opts.cache_dir)), dataset=suite.data,
            stop_requested=stopping.stop_requested, data_root=opts.data_root)

    try:
        record.metrics = real_data.evaluate(context, train_data, metrics.compute)
    except metrics.EvaluationStopped:
        raise Interrupted("stopped during the real-data evaluation (nothing to resume: it is re-measured)")
    record.parameters, record.train = 0, {"steps": 0, "images": 0, "epochs": 0.0}
    record.timings = {"train_seconds": 0.0, "eval_seconds": time.perf_counter() - t0}
    record.finished = utc_now()
    return record


@dataclasses.dataclass
class PreparedRun:
    """What a run of a suite settles before anything trains (:func:`prepare_run`)."""

    runs: list[str]  # the model runs, in suite order
    seeds: list[int]
    with_real: bool  # whether the real-data row is wanted too
    train_data: ImageData
    eval_data: ImageData


def prepare_run(suite: Suite, opts: RunOptions) -> PreparedRun:
    """The one setup of `bench run` and of an array task (:func:`bench.launch.local.run_task`): pick the runs and
    seeds, check the device, load both splits, run the preflight checks (:mod:`bench.preflight`: every mistake a
    one-line error before training), join a torchrun / SLURM process group and choose torch's threads."""
    runs, seeds = suite.select(opts.models, opts.seeds, also=(real_data.NAME,))
    with_real = bool(real_data.wanted(list(suite.eval["metrics"]))) and (not opts.models or real_data.NAME in opts.models)
    device = opts.device or suite.train["device"]
    resolve_device(device)  # a bad device name fails before any data or training
    train_data = load_split(suite.data, suite.data.get("train_split", "train"), opts.data_root, opts.download)
    eval_data = load_split(suite.data, suite.data.get("eval_split", "test"), opts.data_root, opts.download)
    preflight.check(suite, opts, runs, train_data)
    distributed.init_from_env(device)
    threads.apply(opts.threads or suite.train.get("threads"))  # --threads, train.threads, else SLURM / cgroup / affinity
    return PreparedRun(runs, seeds, with_real, train_data, eval_data)


def run_suite(suite: Suite, opts: RunOptions, log: Callable[[str], None] = print) -> list[Path]:
    """Run every (model, seed) of ``suite``; one record per run. Returns the written record paths."""
    prep = prepare_run(suite, opts)
    stopping.clear()  # a stop honoured by an earlier run of this process is not this run's
    previous_handlers = stopping.install_signal_handlers()
    try:
        return _run_all(suite, opts, prep, log)
    finally:
        stopping.restore_signal_handlers(previous_handlers)


def _run_all(suite: Suite, opts: RunOptions, prep: PreparedRun, log: Callable[[str], None]) -> list[Path]:
    runs, seeds, train_data, eval_data = prep.runs, prep.seeds, prep.train_data, prep.eval_data
    rank, _ = world()
    written: list[Path] = []
    progress = progress_bar(opts.progress and rank == 0 and sys.stdout.isatty())
    plain = PlainProgress(log) if opts.progress and rank == 0 and not sys.stdout.isatty() else None
    done = finished_runs(suite, opts.results_dir) if opts.resume and not opts.rerun else {}

    def skip(run_name: str, seed: int) -> bool:
        if (run_name, seed) in done and rank == 0:
            log(f"{run_name} seed {seed}: skipped, finished with the same config ({done[(run_name, seed)]}); "
                "--rerun runs it again")
        return (run_name, seed) in done

    with progress as bar:
        for seed in (seeds if prep.with_real else []):  # the real-data row first: the floor every FID is read against
            if skip(real_data.NAME, seed):
                continue
            record = run_real_data(suite, seed, opts, train_data, eval_data)
            if rank == 0:
                written.append(write(record, Path(opts.results_dir)))
        for run_name in runs:
            for seed in seeds:
                if skip(run_name, seed):
                    continue
                task = bar.add_task(f"{run_name} s{seed}", total=1000, loss=float("nan"), ips=0.0, step=0) if bar else None

                def on_step(tr: Trainer, loss: float, task=task, name=f"{run_name} seed {seed}") -> None:
                    if plain is not None:
                        plain.update(name, tr, loss)
                    if bar is not None and (tr.state.step % 5 == 0 or tr.finished()):
                        bar.update(task, completed=int(1000 * tr.progress()), loss=loss, ips=tr.throughput() or 0.0,
                                   step=tr.state.step)

                record = run_one(suite, run_name, seed, opts, train_data, eval_data, on_step)
                if bar is not None:
                    bar.update(task, completed=1000)
                if rank == 0:
                    path = write(record, Path(opts.results_dir))
                    written.append(path)
                    if record.status != "ok":
                        log(f"{run_name} seed {seed}: {record.status}: {record.error}")
    return written
