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

import csv
import hashlib
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from birads_calc.cli.predict_options import PREDICT_DESCRIPTION, add_predict_options
from birads_calc.cli.run_integrity import EvaluationPlan, claim_fit_folder, plan_evaluation, split_guard
from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.data.manifest import require_manifest_file
from birads_calc.data.roi import GridError, check_grid
from birads_calc.data.splits import SPLITS_FILE
from birads_calc.errors import InputError
from birads_calc.reporting.reports import (
    RunInfo,
    method_label,
    write_predict_reports,
    write_test_reports,
)
from birads_calc.reporting.wandb_runs import (
    RUN_ID_FILE,
    configure_wandb_logger,
    finish_wandb,
    log_phase,
    log_test_reports,
    wandb_logger_defaults,
)
from birads_calc.runs import (
    CHECKPOINT_FILES,
    CHECKPOINTS,
    LAST,
    LOCK_FILE,
    RUN_RECORD,
    FitLock,
    claim_new_version,
    config_name,
    export_run_dir,
    newest_checkpoint,
    process_rank,
    resolve_run_dir,
    run_dir_of_checkpoint,
)
from birads_calc.training.callbacks import LastCheckpoint, RunRecord, WandbImages
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
    training_spacing,
)
from birads_calc.training.guards import NonFiniteLossError, last_checkpoint
from birads_calc.training.identity import identity
from birads_calc.training.model import BiradsClassifier, PretrainedWeightsError
from birads_calc.training.precision import cpu_precision

GPU_ACCELERATORS = ("gpu", "cuda")
HALF_PRECISIONS = ("16-mixed", "16", 16, "16-true")
# what a GPU config's 16-bit precision becomes on the CPU: chosen per machine (training/precision.py)
CPU_PRECISION_OVERRIDE = "BIRADS_CALC_CPU_PRECISION=32-true|bf16-mixed or --trainer.precision decide instead"
FILE_LOGGERS = ("WandbLogger", "CSVLogger", "TensorBoardLogger")


@rank_zero_only
def result(message: str) -> None:
    """A command's closing line naming what it wrote: a result, so on stdout (once per run, rank 0)."""
    print(f"birads-calc: {message}", flush=True)


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
        self.fit_lock: FitLock | None = None  # held for the life of a fit (cli/run_integrity.py)
        self.new_version: Path | None = None  # the version folder this fit created, if it did
        self.run_record: RunRecord | None = None  # fit: the identity kept in run.json and the checkpoints
        self.evaluation: EvaluationPlan | None = None  # validate/test: split and output folder
        self.command_line: list[str] = []
        try:  # LightningCLI runs the whole command inside its constructor
            super().__init__(
                model_class=BiradsClassifier,
                datamodule_class=BiradsDataModule,
                args=args,
                parser_kwargs={"prog": "birads-calc", "predict": {"description": PREDICT_DESCRIPTION}},
                **kwargs,
            )
        finally:
            if self.fit_lock is not None:  # the run folder is free again, however the command ended
                self.fit_lock.release()
            drop_unused_version(self.new_version)

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
                # a resumed run replaces best.ckpt in place instead of leaving best-v1.ckpt beside an older best
                "checkpoint.enable_version_counter": False,
            }
        )
        add_predict_options(parser, checkpoint=False)  # shared with predict --dicomweb/--dicom_dir (one meaning)
        parser.add_argument(
            "--run_dir", type=Path | None, default=None, help="Exact run folder (default: the next free version)."
        )
        parser.add_argument(
            "--bootstrap_resamples",
            type=PositiveInt,
            default=1000,
            help="Patient-level bootstrap resamples for the CIs.",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit: then test the run's model after its last epoch in the same W&B run (what a W&B sweep "
            "agent runs per point, configs/alpha/sweep.yaml).",
        )

    # --- hooks ----------------------------------------------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        self._prepare_run()  # a refusal is an InputError: one message and exit code 2 (cli.main)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except PretrainedWeightsError as error:
            self._parser(self.subcommand).error(str(error))

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does, keeping the command line: its first ``--config`` names the run folder.

        ``--print_config`` prints what the run will use: the configuration after the CPU fallback and with the W&B
        project, group and job type filled in (jsonargparse alone prints the configuration before them).
        """
        if args is None or isinstance(args, list | tuple):
            self.command_line = list(sys.argv[1:] if args is None else args)
        printing = [a for a in self.command_line if a.split("=", 1)[0] == "--print_config"]
        if not printing or not self.command_line or self.command_line[0] not in self.subcommands():
            super().parse_arguments(parser, args)
            return
        self.command_line = [a for a in self.command_line if a not in printing]
        super().parse_arguments(parser, self.command_line)
        subcommand = self.config["subcommand"]
        cfg = self.config[subcommand]
        for change in cpu_fallback(cfg.trainer):
            say(change)
        fill_wandb_defaults(cfg, self.run_name(cfg), subcommand)
        print(self._parser(subcommand).dump(cfg, skip_none=False), end="")
        raise SystemExit(0)

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
        """Resolve the checkpoint (``--ckpt_path last|best``, or the config's newest one for validate/test/predict)
        and let it bring its own settings: LightningCLI then takes its model's hyperparameters (weights-only), and
        the data settings that change results come from it too unless given explicitly (a conflict is refused)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        check_seed(cfg.get("seed_everything"))  # before LightningCLI seeds with it
        try:
            if cfg.get("ckpt_path"):
                self._resolve_checkpoint_keyword(subcommand)
            elif subcommand != "fit":
                cfg.ckpt_path = str(default_checkpoint(cfg, self.run_name(cfg)))
                self.checkpoint_choice = cfg.evaluate_checkpoint
                say(f"{subcommand}: using the newest {cfg.evaluate_checkpoint} checkpoint of config "
                    f"'{self.run_name(cfg)}': {cfg.ckpt_path}")  # fmt: skip
            explicit = self._explicit_config(subcommand)
            self.config_settings = config_settings(explicit)  # before Lightning replaces the model settings
            self._read_checkpoint(cfg)
            if self.checkpoint is not None:
                for key, value in adopt_checkpoint_data(cfg, self.checkpoint, explicit).items():
                    say(f"{subcommand}: data.{key} {value} from the checkpoint")
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as error:  # refused before any model or trainer exists
            say(unsafe_checkpoint_message(cfg.ckpt_path, error))
            raise SystemExit(1) from None

    def _explicit_config(self, subcommand: str) -> Namespace:
        """The result-changing settings (``checkpoints.result_settings``) that the command line or its ``--config``
        files set, as a namespace holding only those: the ones that keep their value when the parser's defaults are
        changed (jsonargparse records no origin per key, and parsing without defaults breaks the linked
        ``data.num_classes``)."""
        parser, cfg = self._parser(subcommand), self.config[subcommand]
        if not self.command_line:
            return cfg
        saved = parser.get_defaults()
        moved = {key: _other_value(key, cfg.get(key)) for key in RESULT_KEYS}
        try:
            parser.set_defaults(moved)
            again = parser.parse_args(self.command_line[1:])
        except SystemExit:  # cannot happen after the same line parsed with the real defaults; be safe
            return cfg
        finally:
            parser.set_defaults({key: saved.get(key) for key in RESULT_KEYS})
        explicit = Namespace()
        for key in RESULT_KEYS:
            if again.get(key) != moved[key]:
                explicit[key] = cfg.get(key)
        return explicit

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

    def _check_checkpoint(self, cfg: Namespace) -> None:
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
            check_epochs(cfg.trainer)
            run_dir = self._fit_run_dir(cfg, name)
        else:
            run_dir = self._evaluation_run_dir(cfg, name)
            self._use_training_scale(cfg)
            cfg.model.pretrained = False  # the weights come from the checkpoint; no ImageNet download needed
        self.run_dir = run_dir
        cfg.trainer.default_root_dir = str(run_dir)
        cfg.checkpoint.dirpath = str(run_dir / CHECKPOINTS)
        recipe = {"recipe": self.run_record.identity["recipe"]} if self.run_record is not None else {}
        configure_loggers(cfg, name, run_dir, subcommand, recipe)
        self.save_config_kwargs["config_filename"] = "config.yaml" if subcommand == "fit" else f"{subcommand}.yaml"

    def _use_training_scale(self, cfg: Namespace) -> None:
        """A model trained at a fixed spacing rates every image resampled to it, whatever the config says."""
        fixed = (training_spacing(self.checkpoint or {}) or {}).get("pixel_spacing_mm")
        if fixed and cfg.data.get("pixel_spacing_mm") != fixed:
            say(f"{self.subcommand}: the model was trained on images resampled to {fixed} mm per pixel: "
                f"data.pixel_spacing_mm {cfg.data.get('pixel_spacing_mm')} -> {fixed}")  # fmt: skip
            cfg.data.pixel_spacing_mm = fixed

    def before_predict(self) -> None:
        """Hand the data module the scale rule: the checkpoint's training spacing and ``--pixel_spacing``."""
        self.datamodule.scale_reference = training_spacing(self.checkpoint or {}) or {}
        self.datamodule.use_fallback_spacing(self.config[self.subcommand].get("pixel_spacing"))
        self._log_phase()

    def _resolve_checkpoint_keyword(self, subcommand: str) -> None:
        """``--ckpt_path last|best``: the config's newest such file (Lightning would look in a new run folder)."""
        cfg = self.config[subcommand]
        keyword = str(cfg.ckpt_path)
        if keyword in CHECKPOINT_FILES:
            cfg.ckpt_path = str(newest_checkpoint(Path(cfg.runs_root), self.run_name(cfg), keyword))
            self.checkpoint_choice = keyword
            say(f"{subcommand}: --ckpt_path {keyword}: {cfg.ckpt_path}")

    def _fit_run_dir(self, cfg: Namespace, name: str) -> Path:
        """The folder of this fit: the resumed checkpoint's, ``--run_dir``, or a newly claimed version; rank 0
        claims it (``run.json`` + lock) and refuses a folder of another run (cli/run_integrity.py)."""
        resume = Path(cfg.ckpt_path) if cfg.ckpt_path else None
        if resume is not None:
            self._check_checkpoint(cfg)
        run_dir = run_dir_of_checkpoint(resume) if resume is not None else None
        if run_dir is None:
            run_dir, export = resolve_run_dir(Path(cfg.runs_root), name, cfg.run_dir)
            if export:
                run_dir = claim_new_version(Path(cfg.runs_root), name)  # atomically: two fits never share one
                export_run_dir(run_dir)
                self.new_version = run_dir
        if process_rank() > 0:
            return run_dir  # rank 0 claimed it and holds the lock
        manifest = Path(cfg.data.manifest)
        require_manifest_file(manifest)  # hashed into the run's identity next: a folder, FIFO, typo... named first
        identity = run_identity(cfg.as_dict(), manifest, world_size(cfg.trainer))
        self.fit_lock, salt = claim_fit_folder(run_dir, identity, resume)
        self.run_record = RunRecord(run_dir, identity, salt)
        return run_dir

    def _evaluation_run_dir(self, cfg: Namespace, name: str) -> Path:
        """The output folder of validate/test/predict; for validate/test also the split (always the checkpoint's
        run's own, or an external one checked against the patients the checkpoint saw)."""
        checkpoint_path = Path(cfg.ckpt_path)
        self._check_checkpoint(cfg)
        if self.subcommand == "predict":
            run_dir = cfg.run_dir or run_dir_of_checkpoint(checkpoint_path) or Path(cfg.runs_root) / name / "predict"
            pin_splits(cfg, run_dir_of_checkpoint(checkpoint_path) or Path(run_dir), "predict")
            return Path(run_dir)
        explicit = Path(cfg.data.splits) if cfg.data.get("splits") else None
        plan = plan_evaluation(self.subcommand, checkpoint_path, self.checkpoint, explicit, cfg.run_dir,
                               Path(cfg.data.manifest), Path(cfg.runs_root))  # fmt: skip
        cfg.data.splits = plan.splits
        if plan.splits is not None:
            kind = "the run's pinned" if plan.own_split else "the external (checked against the checkpoint's)"
            say(f"{self.subcommand}: using {kind} patient split {plan.splits}")
        if not plan.own_split:
            say(f"{self.subcommand}: not the run's own split: results go to {plan.output_dir}, never over the run's")
        self.evaluation = plan
        return plan.output_dir

    def before_fit(self) -> None:
        self.datamodule.record_splits = self.run_dir / SPLITS_FILE  # the split this fit uses, for later commands
        if self.run_record is not None:
            self.trainer.callbacks.append(self.run_record)
        if self.trainer.loggers:
            self.trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))  # the schedule's curve
        if self.checkpoint is not None:  # a resumed fit: the curve so far stays in metrics.csv
            for logger in self.trainer.loggers:
                if isinstance(logger, CSVLogger) and self.trainer.is_global_zero:
                    keep_csv_history(logger, int(self.checkpoint.get("global_step", 0)))
        self._log_phase()

    def before_validate(self) -> None:
        self.datamodule.split_guard = split_guard(self.checkpoint, str(self.config_splits() or "the manifest"))
        self._log_phase()

    def before_test(self) -> None:
        self.before_validate()

    def _log_phase(self) -> None:
        """Mark the command in the run's one W&B run (rank 0)."""
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                if isinstance(logger, WandbLogger):
                    log_phase(logger, self.subcommand)

    def config_splits(self) -> Path | None:
        return self.evaluation.splits if self.evaluation is not None else None

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
        result(f"predict: wrote {', '.join(str(path) for path in written.values())}")

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
            seed=run_seed(self.checkpoint, self.run_dir, cfg.seed_everything),
            saved=(self.checkpoint or {}).get("birads_calc"),
        )
        report, rows = write_test_reports(
            self.run_dir,
            self.model.test_predictions,
            self.datamodule.lesions,
            info,
            resamples=cfg.bootstrap_resamples,
            root=self.datamodule.manifest.parent,
        )
        result(f"test: wrote {self.run_dir / 'metrics.json'}, predictions.csv and report.md beside it")
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_test_reports(logger, report, rows)


def default_checkpoint(cfg: Namespace, name: str) -> Path:
    """The checkpoint evaluated without ``--ckpt_path``: the ``last.ckpt`` (paper: the model after the last epoch)
    or, with ``--evaluate_checkpoint best``, the ``best.ckpt`` of ``--run_dir`` when it holds one, else the config's
    newest."""
    if cfg.get("run_dir"):
        own = Path(cfg.run_dir) / CHECKPOINTS / CHECKPOINT_FILES[cfg.evaluate_checkpoint]
        if own.is_file():
            return own
    return newest_checkpoint(Path(cfg.runs_root), name, cfg.evaluate_checkpoint)


def checkpoint_record(path: Any, choice: str | None) -> dict[str, Any]:
    """Which model ``metrics.json`` reports: how its checkpoint was chosen (``last``: the model after the last
    epoch; ``best``: best validation QWK; ``given``: ``--ckpt_path FILE``) and how many epochs it had trained."""
    if not path:
        return {"checkpoint_selection": None, "checkpoint_epochs": None}
    saved = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return {"checkpoint_selection": choice or "given", "checkpoint_epochs": int(saved.get("epoch", -1)) + 1}


def run_seed(checkpoint: dict[str, Any] | None, run_dir: Path, default: Any) -> int | None:
    """The training seed of a run: the checkpoint's identity record, else ``seed_everything`` of the run's
    ``config.yaml``, else this command's."""
    recorded = ((checkpoint or {}).get("birads_calc") or {}).get("identity", {}).get("seed")
    if recorded is not None:
        return int(recorded)
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


# the settings a checkpoint is checked against (checkpoints.result_settings) and, for data, takes over
RESULT_KEYS = ("model.loss", "model.alpha", "model.backbone", "data.num_classes", "data.attention", "data.window",
               "data.stride", "data.pixel_spacing_mm", "data.voi")  # fmt: skip


def _other_value(key: str, value: Any) -> Any:
    """A valid value of ``key`` different from ``value``: a default no command line or config would give."""
    others = {"model.loss": ("ce", "mse"), "data.num_classes": (4, 6), "data.voi": ("full", "window")}
    if key in others:
        return next(v for v in others[key] if v != value)
    if key == "data.attention":
        return not value
    if key in ("model.alpha", "data.pixel_spacing_mm"):
        return 0.123457 if value != 0.123457 else 0.234567
    if key == "model.backbone":
        return "default-backbone" if value != "default-backbone" else "other-backbone"
    return 987 if value != 987 else 986  # window, stride


# data settings a checkpoint brings with it (what its model was trained on); the rest (manifest, batch size, workers,
# cache) belong to the command
DATA_FROM_CHECKPOINT = ("num_classes", "window", "stride", "attention", "pixel_spacing_mm", "voi")


def adopt_checkpoint_data(cfg: Namespace, checkpoint: dict[str, Any], explicit: Namespace) -> dict[str, Any]:
    """Take the checkpoint's data settings where the command line and its configs give none (Lightning takes the
    model's itself); return the ones that changed. An explicit conflicting value stays and is refused by
    :meth:`BiradsCLI._check_checkpoint`."""
    saved = checkpoint.get("datamodule_hyper_parameters") or {}
    given = explicit.get("data") or Namespace()
    changed = {}
    for key in DATA_FROM_CHECKPOINT:
        if key in saved and given.get(key) is None and cfg.data.get(key) != saved[key]:
            cfg.data[key] = changed[key] = saved[key]
    return changed


SEED_RANGE = (0, 2**32 - 1)  # what NumPy's and torch's generators accept


def check_seed(seed: Any) -> None:
    """Refuse a training seed outside [0, 2^32) (Lightning would warn and silently train with seed 0)."""
    if isinstance(seed, int) and not isinstance(seed, bool) and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise InputError(f"--seed_everything {seed}: a seed must be a whole number from 0 to {SEED_RANGE[1]}")


def check_epochs(trainer: Namespace) -> None:
    """Refuse a fit that would train nothing (``max_epochs 0`` ends at once without a checkpoint)."""
    if trainer.get("max_epochs") == 0 or trainer.get("max_steps") == 0:
        option = "max_epochs" if trainer.get("max_epochs") == 0 else "max_steps"
        raise InputError(f"--trainer.{option} 0: nothing to train; give at least 1 (-1: no limit)")


def world_size(trainer: Namespace) -> int:
    """Processes of a run: devices x nodes (after the CPU fallback)."""
    return _device_count(trainer.devices) * int(trainer.num_nodes or 1)


def run_identity(config: dict[str, Any], manifest: Path, processes: int) -> dict[str, Any]:
    """The identity record of a fit (training/identity.py), from its resolved config."""
    return identity(config, manifest, processes)


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
    precision becomes what :func:`birads_calc.training.precision.cpu_precision` chooses for this CPU: bf16-mixed
    where the processor runs bfloat16 natively and a training step measured faster, else 32-true; the line
    printed says which and why.
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
        choice = cpu_precision()
        changes.append(
            f"trainer.precision {trainer.precision} -> {choice.precision} ({choice.reason}; {CPU_PRECISION_OVERRIDE})"
        )
        trainer.precision = choice.precision
    return changes


def _device_count(devices: Any) -> int:
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, int) or str(devices).lstrip("-").isdigit():
        return max(int(devices), 1)
    return 1  # "auto"


def _strategy_name(strategy: Any) -> str:
    return strategy.class_path.rsplit(".", 1)[-1] if isinstance(strategy, Namespace) else str(strategy)


def configure_loggers(
    cfg: Namespace, name: str, run_dir: Path, subcommand: str, extra_config: dict[str, Any] | None = None
) -> None:
    """Point file loggers at the run folder; group W&B runs by method, offline unless the user is logged in."""
    loggers = cfg.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, Namespace) or logger.class_path.rsplit(".", 1)[-1] not in FILE_LOGGERS:
            continue
        init = logger.init_args
        init.save_dir = str(Path(run_dir).resolve())  # absolute: W&B's service process has a cwd of its own
        if logger.class_path.endswith("WandbLogger"):
            _configure_wandb(init, cfg, name, run_dir, subcommand)
            init.config = {**init.config, **(extra_config or {})}
        else:  # CSV / TensorBoard: fit writes straight into the run folder; test/validate/predict into a
            # subfolder of their own, so they never overwrite the training curves
            init.name, init.version = "", "" if subcommand == "fit" else subcommand


def keep_csv_history(logger: CSVLogger, before_step: int) -> None:
    """Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a resumed fit would lose the
    curve of the epochs before its checkpoint. Keep those rows (steps before the checkpoint's; later ones, of an
    interrupted epoch, are logged again) and let the writer append after them."""
    path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
    if not path.is_file():
        return
    with path.open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if int(float(row.get("step") or 0)) < before_step]
    writer = logger.experiment  # starting it removes the file
    if rows:
        writer.metrics_keys = sorted(set().union(*rows))
        with path.open("w", newline="") as file:
            table = csv.DictWriter(file, fieldnames=writer.metrics_keys)
            table.writeheader()
            table.writerows(rows)


def drop_unused_version(run_dir: Path | None) -> None:
    """Remove a version folder a fit created and left with nothing but its claim (e.g. refused for unreachable
    ImageNet weights before anything ran), so the next fit is not ``version_<k+1>`` beside an empty one."""
    if run_dir is None or process_rank() > 0 or not run_dir.is_dir():
        return
    if all(path.name in (RUN_RECORD, LOCK_FILE, RUN_ID_FILE) for path in run_dir.iterdir()):
        for path in run_dir.iterdir():
            path.unlink()
        run_dir.rmdir()


def fill_wandb_defaults(cfg: Namespace, name: str, subcommand: str) -> None:
    """What ``--print_config`` shows of the W&B loggers: project, group and job type as the run will set them."""
    loggers = cfg.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("WandbLogger"):
            method = run_method(cfg, name, None)
            wandb_logger_defaults(logger.init_args, method, subcommand)


def _configure_wandb(init: Namespace, cfg: Namespace, name: str, run_dir: Path, subcommand: str) -> None:
    """The run folder's one W&B run (reporting/wandb_runs.py); the fit sends the whole resolved config."""
    full = {key: value for key, value in cfg.clone().as_dict().items() if key not in ("config", "ckpt_path")}
    method = run_method(cfg, name, run_seed(None, run_dir, cfg.seed_everything))
    if configure_wandb_logger(init, method, run_dir, subcommand, full):
        say("W&B: not logged in, logging offline into the run folder (run 'wandb login' to sync online)")


def run_method(cfg: Namespace, name: str, seed: int | None) -> dict[str, Any]:
    """The method keys every W&B run of a config carries (and groups by)."""
    loss, attention, alpha = cfg.model.loss, bool(cfg.data.attention), float(cfg.model.alpha)
    return {"config": name, "method": method_label(loss, attention), "loss": loss, "attention": attention,
            "alpha": alpha if loss == "mamse" else None, "seed": seed}  # fmt: skip
