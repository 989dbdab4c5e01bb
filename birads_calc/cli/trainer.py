"""LightningCLI for the trainer commands (``fit``, ``validate``, ``test``, ``predict``); DESIGN §7, docs/training.md.

On top of LightningCLI it adds, through its hooks only:

* run folders ``runs/<config name>/<version>/`` (resolved config, ``checkpoints/{best,last}.ckpt``, reports);
* ``validate``/``test``/``predict`` without ``--ckpt_path``: the config's newest ``last.ckpt`` (the model after the
  last epoch, as the paper reports; ``--evaluate_checkpoint best`` for the best validation QWK), announced;
* pinned splits: ``fit`` writes ``<run>/splits.csv`` and every later command of the run uses it (``data/splits.py``);
* a CPU fallback for GPU configs on machines without a GPU, announcing each changed setting;
* W&B grouping by method, offline unless the user is logged in; W&B images only on request (``wandb_images``);
* ``last.ckpt`` after every epoch, ``--ckpt_path last|best``, weights-only checkpoint loading, a clear stop on a
  non-finite loss (docs/reliability.md);
* after ``test``: ``metrics.json``, ``predictions.csv``, the confusion matrix, calibration table and ``report.md``;
* after ``predict``: ``predictions.csv``, ``breasts.csv`` and overlays in ``<run>/predict/<manifest>-<hash>/``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.data.roi import GridError, check_grid
from birads_calc.data.splits import SPLITS_FILE
from birads_calc.reporting.reports import (
    RunInfo,
    method_label,
    write_predict_reports,
    write_test_reports,
)
from birads_calc.reporting.wandb_runs import WANDB_PROJECT, finish_wandb, log_test_reports, logged_in, wandb_group
from birads_calc.runs import (
    CHECKPOINT_FILES,
    CHECKPOINTS,
    LAST,
    RunFolderError,
    config_name,
    export_run_dir,
    newest_checkpoint,
    resolve_run_dir,
    run_dir_of_checkpoint,
)
from birads_calc.training.callbacks import LastCheckpoint, WandbImages
from birads_calc.training.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    checkpoint_mismatches,
    checkpoint_settings,
    cut_short,
    describe_checkpoint,
    epochs_trained,
    read_checkpoint,
    result_settings,
)
from birads_calc.training.guards import NonFiniteLossError, last_checkpoint
from birads_calc.training.model import BiradsClassifier, PretrainedWeightsError

GPU_ACCELERATORS = ("gpu", "cuda")
HALF_PRECISIONS = ("16-mixed", "16", 16, "16-true")
# what a GPU config's 16-bit precision becomes on the CPU: the fastest measured by bench/bench_cpu_precision.py
CPU_PRECISION = "32-true"
CPU_PRECISION_WHY = "fastest on CPUs: bf16-mixed measured ~10x slower than fp32; bench/bench_cpu_precision.py"
FILE_LOGGERS = ("WandbLogger", "CSVLogger", "TensorBoardLogger")


@rank_zero_only
def say(message: str) -> None:
    """A notice for the user on stderr, once per run (rank 0)."""
    print(f"birads-calc: {message}", file=sys.stderr, flush=True)


class BiradsCLI(LightningCLI):
    """LightningCLI with birads-calc's model, data module, run folders, checkpoints and reports."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)  # the optimizer and scheduler are model arguments
        kwargs.setdefault("trainer_defaults", {"callbacks": [LastCheckpoint()]})
        self.run_dir: Path | None = None
        self.checkpoint_choice: str | None = None  # last | best when birads-calc chose the checkpoint
        self.config_settings: dict[str, Any] = {}  # the config's result-changing settings (checkpoints.py)
        self.checkpoint: dict[str, Any] | None = None  # --ckpt_path, read once (mmap)
        self._checkpoint_path: Any = None
        self.command_line: list[str] = []
        super().__init__(
            model_class=BiradsClassifier,
            datamodule_class=BiradsDataModule,
            args=args,
            parser_kwargs={"prog": "birads-calc"},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The scale is a property of the data (six- or four-class labels); the model's head follows it.
        parser.link_arguments("data.num_classes", "model.num_classes")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(WandbImages, "wandb_images")  # default: no image is sent to W&B
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_qwk",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": False,  # LastCheckpoint writes last.ckpt after every epoch (callbacks.py)
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_argument("--runs_root", type=Path, default=Path("runs"), help="Folder holding runs/<config>/.")
        parser.add_argument(
            "--evaluate_checkpoint",
            type=Literal["last", "best"],
            default="last",
            help="validate/test/predict without --ckpt_path: the run's model after its last epoch (paper §3.2) or "
            "its best validation QWK checkpoint.",
        )
        parser.add_argument(
            "--run_dir", type=Path | None, default=None, help="Exact run folder (default: the next free version)."
        )
        parser.add_argument(
            "--bootstrap_resamples",
            type=PositiveInt,
            default=1000,
            help="Patient-level bootstrap resamples for the CIs.",
        )
        parser.add_argument("--overlays", type=bool, default=True, help="predict: one overlay PNG per image.")
        parser.add_argument(
            "--overlay_size",
            type=PositiveInt,
            default=1024,
            help="predict: longest side of an overlay's mammogram (px).",
        )
        parser.add_argument(
            "--predict_dir",
            type=Path | None,
            default=None,
            help="predict: output folder (default: <run folder>/predict/<manifest stem>-<hash of its path>).",
        )

    # --- hooks ----------------------------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        try:
            self._prepare_run()
        except RunFolderError as error:
            self._parser(self.subcommand).error(str(error))  # usage + message, exit code 2; no traceback

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except PretrainedWeightsError as error:
            self._parser(self.subcommand).error(str(error))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, keeping the command line: its first ``--config`` names the run folder."""
        if args is None or isinstance(args, list | tuple):
            self.command_line = list(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)

    def run_name(self, cfg: Namespace) -> str:
        """The run group: the method's config, the first ``--config`` (an overlay such as demo.yaml never is)."""
        return config_name(cfg.get("config"), self.command_line)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer, writing its checkpoints atomically in their own folder (AtomicCheckpointIO)."""
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default; a user's own stays
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last|best``; LightningCLI then reads the file's hyperparameters (weights-only)."""
        subcommand = self.config.get("subcommand")
        try:
            if subcommand and self.config[subcommand].get("ckpt_path"):
                self._resolve_checkpoint_keyword(subcommand)
            if subcommand:  # before Lightning replaces the config's model settings with the checkpoint's
                self.config_settings = config_settings(self.config[subcommand])
                self._read_checkpoint(self.config[subcommand])
            super()._parse_ckpt_path()
        except RunFolderError as error:
            self._parser(subcommand).error(str(error))
        except pickle.UnpicklingError as error:  # refused before any model or trainer exists
            say(unsafe_checkpoint_message(self.config[subcommand].ckpt_path, error))
            raise SystemExit(1) from None

    def _run_subcommand(self, subcommand: str) -> None:
        """Run the command; a diverged loss or an unsafe checkpoint ends it with a message and exit code 1."""
        try:
            super()._run_subcommand(subcommand)
        except NonFiniteLossError as error:  # a SplitError is bad input: the error boundary gives it exit code 2
            say(str(error))
            raise SystemExit(1) from None
        except pickle.UnpicklingError as error:
            say(unsafe_checkpoint_message(self.config[subcommand].ckpt_path, error))
            raise SystemExit(1) from None
        except SystemExit:  # Lightning ends a Ctrl-C'd fit with exit(1) after its graceful shutdown
            if self.trainer is not None and self.trainer.interrupted:
                raise interrupted(self.trainer, subcommand) from None
            raise

    def _read_checkpoint(self, cfg: Namespace) -> None:
        """Read ``--ckpt_path`` once (refusing a missing, foreign or truncated file) for the checks that follow."""
        if cfg.get("ckpt_path") and str(cfg.ckpt_path) != str(self._checkpoint_path):
            self.checkpoint = read_checkpoint(cfg.ckpt_path, weights_only=cfg.get("weights_only") is not False)
            self._checkpoint_path = cfg.ckpt_path

    def _check_checkpoint(self, cfg: Namespace, run_dir: Path) -> None:
        """Refuse a checkpoint of another method or scale; announce the one used, warning if its run was short."""
        self._read_checkpoint(cfg)
        different = checkpoint_mismatches(self.config_settings, checkpoint_settings(self.checkpoint))
        if different:
            raise CheckpointError(
                f"checkpoint {cfg.ckpt_path} was trained with other settings than this config: "
                f"{'; '.join(different)}. Give the config it was trained with (its run folder's config.yaml), "
                "or the checkpoint of this config's run"
            )
        say(f"{self.subcommand}: checkpoint {describe_checkpoint(cfg.ckpt_path, self.checkpoint)}")
        for reason in run_cut_short(run_dir_of_checkpoint(Path(cfg.ckpt_path)), self.checkpoint):
            say(f"{self.subcommand}: warning: this checkpoint's run was cut short: {reason}")

    def _prepare_run(self) -> None:
        subcommand = self.subcommand
        cfg = self.config[subcommand]
        try:  # before anything is built or written
            check_grid(cfg.data.window, cfg.data.stride)
        except GridError as error:  # name the options the user sets, not only the numbers
            raise GridError(f"--data.window {cfg.data.window} / --data.stride {cfg.data.stride}: {error}") from None
        name = self.run_name(cfg)
        for change in cpu_fallback(cfg.trainer):
            say(change)
        if cfg.get("weights_only") is None:
            cfg.weights_only = True  # never unpickle arbitrary objects; --weights_only false for a trusted file
        if subcommand == "fit":
            run_dir = self._fit_run_dir(cfg, name)
        else:
            run_dir = self._evaluation_run_dir(cfg, name)
            self._check_checkpoint(cfg, run_dir)
            cfg.model.pretrained = False  # the weights come from the checkpoint; no ImageNet download needed
        self.run_dir = run_dir
        pin_splits(cfg, run_dir, subcommand)
        cfg.trainer.default_root_dir = str(run_dir)
        cfg.checkpoint.dirpath = str(run_dir / CHECKPOINTS)
        configure_loggers(cfg, name, run_dir, subcommand)
        self.save_config_kwargs["config_filename"] = "config.yaml" if subcommand == "fit" else f"{subcommand}.yaml"

    def _resolve_checkpoint_keyword(self, subcommand: str) -> None:
        """``--ckpt_path last|best``: the config's newest such file (Lightning would look in a new run folder)."""
        cfg = self.config[subcommand]
        keyword = str(cfg.ckpt_path)
        if keyword in CHECKPOINT_FILES:
            cfg.ckpt_path = str(newest_checkpoint(Path(cfg.runs_root), self.run_name(cfg), keyword))
            self.checkpoint_choice = keyword
            say(f"{subcommand}: --ckpt_path {keyword}: {cfg.ckpt_path}")

    def _fit_run_dir(self, cfg: Namespace, name: str) -> Path:
        if cfg.ckpt_path and run_dir_of_checkpoint(Path(cfg.ckpt_path)) is not None:
            return run_dir_of_checkpoint(Path(cfg.ckpt_path))  # resuming continues in the same folder
        run_dir, export = resolve_run_dir(Path(cfg.runs_root), name, cfg.run_dir)
        if export:
            export_run_dir(run_dir)
        return run_dir

    def _evaluation_run_dir(self, cfg: Namespace, name: str) -> Path:
        if not cfg.ckpt_path:
            cfg.ckpt_path = str(default_checkpoint(cfg, name))
            self.checkpoint_choice = cfg.evaluate_checkpoint
            say(f"{self.subcommand}: using the newest {cfg.evaluate_checkpoint} checkpoint of config '{name}': "
                f"{cfg.ckpt_path}")  # fmt: skip
        run_dir = cfg.run_dir or run_dir_of_checkpoint(Path(cfg.ckpt_path))
        if run_dir is None:
            run_dir, _ = resolve_run_dir(Path(cfg.runs_root), name)
        return Path(run_dir)

    def before_fit(self) -> None:
        self.datamodule.record_splits = self.run_dir / SPLITS_FILE  # the split this fit uses, for later commands

    def after_fit(self) -> None:
        finish_wandb(self.trainer)

    def after_validate(self) -> None:
        finish_wandb(self.trainer)

    def after_predict(self) -> None:
        """Write ``predictions.csv``, ``breasts.csv`` and the overlays from every process's predictions (rank 0)."""
        if self.trainer.is_global_zero and self.model.predictions is not None:
            self._write_predict_reports()
        finish_wandb(self.trainer)

    def _write_predict_reports(self) -> None:
        cfg, data = self.config[self.subcommand], self.datamodule
        out_dir = Path(cfg.predict_dir) if cfg.predict_dir else predict_dir(self.run_dir, data.manifest)
        if cfg.overlays:
            images = len({x.image for x in data.lesions})
            say(f"predict: drawing the overlays of {images} image(s) (--overlays false skips them)")
        written = write_predict_reports(
            out_dir,
            self.model.predictions,
            data.lesions,
            self.model.hparams.num_classes,
            root=data.manifest.parent,
            overlays=cfg.overlays,
            overlay_size=cfg.overlay_size,
            voi=data.hparams.voi,
            splits=data.patient_splits(),
        )
        say(f"predict: wrote {', '.join(str(path) for path in written.values())}")

    def after_test(self) -> None:
        """Write ``metrics.json`` and ``predictions.csv`` from every process's predictions (rank 0)."""
        if self.trainer.is_global_zero and self.model.test_predictions is not None:
            self._write_test_reports()
        finish_wandb(self.trainer)

    def _write_test_reports(self) -> None:
        cfg, hp = self.config[self.subcommand], self.model.hparams
        info = RunInfo(
            config=self.run_name(cfg),
            loss=hp.loss,
            attention=bool(self.datamodule.hparams.attention),
            alpha=hp.alpha if hp.loss == "mamse" else None,
            num_classes=hp.num_classes,
            checkpoint=str(cfg.ckpt_path) if cfg.ckpt_path else None,
            **checkpoint_record(cfg.ckpt_path, self.checkpoint_choice),
            seed=run_seed(self.run_dir, cfg.seed_everything),
        )
        report, rows = write_test_reports(
            self.run_dir,
            self.model.test_predictions,
            self.datamodule.lesions,
            info,
            resamples=cfg.bootstrap_resamples,
            root=self.datamodule.manifest.parent,
        )
        say(
            f"test: wrote {self.run_dir / 'metrics.json'}, {self.run_dir / 'predictions.csv'} and report.md beside them"
        )
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_test_reports(logger, report, rows)


def default_checkpoint(cfg: Namespace, name: str) -> Path:
    """The checkpoint evaluated without ``--ckpt_path``: the config's newest ``last.ckpt`` (paper: the model after
    the last epoch) or, with ``--evaluate_checkpoint best``, its newest ``best.ckpt``."""
    return newest_checkpoint(Path(cfg.runs_root), name, cfg.evaluate_checkpoint)


def checkpoint_record(path: Any, choice: str | None) -> dict[str, Any]:
    """Which model ``metrics.json`` reports: how its checkpoint was chosen (``last``: the model after the last
    epoch; ``best``: best validation QWK; ``given``: ``--ckpt_path FILE``) and how many epochs it had trained."""
    if not path:
        return {"checkpoint_selection": None, "checkpoint_epochs": None}
    saved = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return {"checkpoint_selection": choice or "given", "checkpoint_epochs": int(saved.get("epoch", -1)) + 1}


def run_seed(run_dir: Path, default: Any) -> int | None:
    """The training seed of a run: ``seed_everything`` of its fit's ``config.yaml``, else this command's."""
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        saved = yaml.safe_load(config.read_text()) or {}
        default = saved.get("seed_everything", default)
    return int(default) if isinstance(default, int) and not isinstance(default, bool) else None


def pin_splits(cfg: Namespace, run_dir: Path, subcommand: str) -> None:
    """Use the run's ``splits.csv`` when it has one and no ``--data.splits`` is given (announced); ``predict`` only
    marks each row with its patient's split."""
    pinned = Path(run_dir) / SPLITS_FILE
    if cfg.data.get("splits") is None and pinned.is_file():
        cfg.data.splits = pinned
        use = "marking each row's split from" if subcommand == "predict" else "using"
        say(f"{subcommand}: {use} the run's pinned patient split {pinned}")


def predict_dir(run_dir: Path, manifest: Path) -> Path:
    """Default predict output folder: ``<run_dir>/predict/<manifest stem>-<8 hex of its absolute path>``.

    One folder per manifest: predicting another manifest never overwrites the last one's files (nor the test's
    ``predictions.csv`` in the run folder), while predicting the same manifest again replaces them.
    """
    key = hashlib.sha256(str(Path(manifest).resolve()).encode()).hexdigest()[:8]
    return Path(run_dir) / "predict" / f"{Path(manifest).stem}-{key}"


def unsafe_checkpoint_message(path: Any, error: Exception) -> str:
    """Why a checkpoint was refused: torch's weights-only unpickler met something other than tensors/plain values."""
    detail = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
    detail = detail.split(" was not an allowed global")[0].split("error: ")[-1]  # "Unsupported global: GLOBAL exec"
    return (
        f"refusing to load checkpoint {path}: it holds objects other than tensors and plain values, and unpickling "
        f"them could run arbitrary code ({detail or type(error).__name__}). birads-calc checkpoints never do. "
        "Load only checkpoints from a source you trust; if you trust this file, pass --weights_only false."
    )


def config_settings(cfg: Namespace) -> dict[str, Any]:
    """The config's settings that change results (``model.loss``, ``data.window``, ...; checkpoints.py)."""
    model, data = cfg.get("model") or Namespace(), cfg.get("data") or Namespace()
    return result_settings(vars(model), vars(data))


def run_cut_short(run_dir: Path | None, checkpoint: dict[str, Any]) -> list[str]:
    """Why the fit run that wrote a checkpoint was not a full training (its ``config.yaml`` and ``last.ckpt``)."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return []
    trainer = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("trainer") or {}
    last = run_dir / CHECKPOINTS / LAST
    epochs = epochs_trained(read_checkpoint(last) if last.is_file() else checkpoint)
    return cut_short(trainer, epochs)


def interrupted(trainer: Trainer, subcommand: str) -> KeyboardInterrupt:
    """The Ctrl-C of a Lightning command, with where ``fit`` left its last checkpoint and how to resume it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C from here on
    if subcommand != "fit":
        return KeyboardInterrupt()
    last = last_checkpoint(trainer)
    say(
        f"fit: interrupted at epoch {trainer.current_epoch}; the last finished epoch is in {last}. "
        f"Resume with the same command plus --ckpt_path {last if last.endswith('.ckpt') else 'last'}"
    )
    return KeyboardInterrupt()


def cpu_fallback(trainer: Namespace, cuda_available: bool | None = None) -> list[str]:
    """Adapt a GPU trainer config in place for a machine without a GPU; return one line per change.

    A config asking for GPUs runs on the CPU in one process: ``devices: N`` with DDP becomes one device with
    ``accumulate_grad_batches`` multiplied by N, so the optimiser still sees the global batch of N x
    ``data.batch_size`` (DDP averages the N per-device gradients, accumulation the N consecutive ones). 16-bit
    precision becomes :data:`CPU_PRECISION`, the fastest precision measured for a training step on CPUs
    (``bench/bench_cpu_precision.py``; bf16-mixed, the obvious replacement, was much slower).
    """
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    changes = []
    if str(trainer.accelerator).lower() in GPU_ACCELERATORS and not cuda_available:
        changes.append(f"no GPU found: trainer.accelerator {trainer.accelerator} -> cpu")
        trainer.accelerator = "cpu"
        count = _device_count(trainer.devices)
        if count > 1:
            factor = count * int(trainer.num_nodes or 1)
            accumulate = int(trainer.accumulate_grad_batches or 1)
            changes.append(f"trainer.devices {trainer.devices} -> 1 (one CPU process uses every core)")
            changes.append(f"trainer.strategy {_strategy_name(trainer.strategy)} -> auto")
            changes.append(
                f"trainer.accumulate_grad_batches {accumulate} -> {accumulate * factor} "
                f"(keeps the global batch of {factor} x data.batch_size)"
            )
            trainer.devices, trainer.strategy, trainer.num_nodes = 1, "auto", 1
            trainer.accumulate_grad_batches = accumulate * factor
    on_cpu = str(trainer.accelerator).lower() == "cpu" or (str(trainer.accelerator) == "auto" and not cuda_available)
    if on_cpu and trainer.precision in HALF_PRECISIONS:
        changes.append(f"trainer.precision {trainer.precision} -> {CPU_PRECISION} ({CPU_PRECISION_WHY})")
        trainer.precision = CPU_PRECISION
    return changes


def _device_count(devices: Any) -> int:
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, int) or str(devices).lstrip("-").isdigit():
        return max(int(devices), 1)
    return 1  # "auto"


def _strategy_name(strategy: Any) -> str:
    return strategy.class_path.rsplit(".", 1)[-1] if isinstance(strategy, Namespace) else str(strategy)


def configure_loggers(cfg: Namespace, name: str, run_dir: Path, subcommand: str) -> None:
    """Point file loggers at the run folder; group W&B runs by method, offline unless the user is logged in."""
    loggers = cfg.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or logger.class_path.rsplit(".", 1)[-1] not in FILE_LOGGERS:
            continue
        init = logger.init_args
        init.save_dir = str(run_dir)
        if logger.class_path.endswith("WandbLogger"):
            _configure_wandb(init, cfg, name, run_dir, subcommand)
        else:  # CSV / TensorBoard: fit writes straight into the run folder; test/validate/predict into a
            # subfolder of their own, so they never overwrite the training curves
            init.name, init.version = "", "" if subcommand == "fit" else subcommand


def _configure_wandb(init: Namespace, cfg: Namespace, name: str, run_dir: Path, subcommand: str) -> None:
    loss, attention, alpha = cfg.model.loss, bool(cfg.data.attention), float(cfg.model.alpha)
    seed = run_seed(run_dir, cfg.seed_everything)
    init.project = init.project or WANDB_PROJECT
    init.group = init.group or wandb_group(loss, attention, alpha)
    init.job_type = init.job_type or subcommand
    init.name = init.name or f"{name}/{run_dir.name}/seed{seed}/{subcommand}"
    init.config = {
        **(init.config or {}),
        "config": name,
        "method": method_label(loss, attention),
        "loss": loss,
        "attention": attention,
        "alpha": alpha if loss == "mamse" else None,
        "seed": seed,
    }
    if "WANDB_MODE" not in os.environ and not init.offline and not logged_in():
        init.offline = True
        say("W&B: not logged in, logging offline into the run folder (run 'wandb login' to sync online)")
