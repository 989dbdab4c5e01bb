"""Weights & Biases: the one module that talks to W&B (the trainer commands, the test reports and ``compare``).

W&B is optional at run time: offline unless the user has logged in (``wandb login``), never prompting, and tests
run with ``WANDB_MODE=offline``. Runs are grouped by method (loss, attention, alpha) so the group view shows the
spread over seeds (docs/wandb.md).

**One W&B run per run folder**: its id is kept in the folder (``.wandb_id``) and every command of that run (fit,
a resumed fit, validate, test, predict) logs into it with ``resume="allow"``; a W&B sweep agent's run id
(``WANDB_RUN_ID``) takes precedence, so an agent's fit and test land in the agent's run.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from birads_calc.reporting.reports import PREDICTION_COLUMNS, method_key

WANDB_PROJECT = "birads-calc"
RUN_ID_FILE = ".wandb_id"
METRIC_KEYS = ("value", "ci_low", "ci_high", "n")
COMPARE_CONFIG = ("level", "comparisons", "primary", "equivalence_margin", "resamples", "bootstrap_seed")


def run_id(folder: Path) -> str:
    """The W&B run id of a run folder: a sweep agent's (``WANDB_RUN_ID``), else the one kept in the folder, else a
    new one, kept there for the run's later commands."""
    path = Path(folder) / RUN_ID_FILE
    kept = path.read_text().strip() if path.is_file() else ""
    chosen = os.environ.get("WANDB_RUN_ID") or kept
    if not chosen:
        chosen = secrets.token_hex(4)  # W&B's own ids are 8 characters of [a-z0-9]
    if chosen != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(chosen + "\n")
    return chosen


def wandb_logger_defaults(init: MutableMapping[str, Any], method: Mapping[str, Any], subcommand: str) -> None:
    """Project, group (the method) and job type of a ``WandbLogger``'s arguments, where the config leaves them."""
    init["project"] = init.get("project") or WANDB_PROJECT
    init["group"] = init.get("group") or wandb_group(method["loss"], method["attention"], method["alpha"])
    init["job_type"] = init.get("job_type") or ("train" if subcommand == "fit" else None)


def configure_wandb_logger(
    init: MutableMapping[str, Any],
    method: Mapping[str, Any],
    folder: Path,
    subcommand: str,
    full_config: Mapping[str, Any],
) -> bool:
    """Fill a ``WandbLogger``'s arguments for a command of the run in ``folder``: its one W&B run (``run_id``,
    ``resume="allow"``), grouped by method, named ``<config>/<folder>/seed<S>``. ``fit`` sends the whole resolved
    configuration; later commands add only the method keys, never overwriting it. Offline unless logged in.

    Returns:
        Whether it switched the logger offline because nobody is logged in (the caller says so).
    """
    wandb_logger_defaults(init, method, subcommand)
    init["resume"] = "allow"
    init["id"] = init.get("id") or run_id(folder)
    init["name"] = init.get("name") or f"{method['config']}/{Path(folder).name}/seed{method['seed']}"
    full = json.loads(json.dumps(dict(full_config), default=str))  # plain values (PositiveInt, paths)
    init["config"] = {**(init.get("config") or {}), **(full if subcommand == "fit" else {}), **method}
    if "WANDB_MODE" not in os.environ and not init.get("offline") and not logged_in():
        # mode, not Lightning's ``offline``: that sets WANDB_MODE, which W&B no longer reads once ``logged_in``
        # has set W&B up, so the run would ask for an API key
        init["mode"] = "offline"
        return True
    return False


def test_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B summary of a test: every metric with its CI bounds and count, so dashboards can draw error bars."""
    summary = {f"test/{name}_{key}" if key != "value" else f"test/{name}": metric.get(key)
               for name, metric in report["metrics"].items() for key in METRIC_KEYS}  # fmt: skip
    return summary | {"test/n_lesions": report["n_lesions"], "test/n_patients": report["n_patients"]}


def log_phase(logger: Any, phase: str) -> None:
    """Mark in the run's history where a command (fit, validate, test, predict) of the run began."""
    logger.experiment.log({"phase": phase})


def logged_in() -> bool:
    """Whether W&B credentials exist (environment, netrc or settings); never prompts, no network."""
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def wandb_group(loss: str, attention: bool, alpha: float | None) -> str:
    """One W&B group per method (loss, input, alpha), so the group view shows the spread over seeds."""
    key = method_key(loss, attention)
    return f"{key}_alpha{alpha:g}" if loss == "mamse" and alpha is not None else key


def finish_wandb(trainer: Any) -> None:
    """Close the command's W&B run: one run per command (job type fit/test/...), also when called in-process."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish()


def log_test_reports(logger: Any, report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """Log the test metrics (summary), the confusion matrix and the per-lesion predictions table to W&B.

    Args:
        logger: a Lightning ``WandbLogger`` (rank 0).
        report: the ``metrics.json`` content.
        rows: the ``predictions.csv`` rows.
    """
    import wandb

    classes = list(report["classes"])
    logger.log_table(
        key="test/predictions",
        columns=list(PREDICTION_COLUMNS),
        data=[[row[c] for c in PREDICTION_COLUMNS] for row in rows],
    )
    logger.experiment.log(
        {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=[classes.index(r["birads_true"]) for r in rows],
                preds=[classes.index(r["birads_pred"]) for r in rows],
                class_names=classes,
                title="Test confusion matrix (rows = truth)",
            )
        }
    )
    logger.experiment.summary.update(test_summary(report))


def log_compare(report: Mapping[str, Any], charts: Mapping[str, Any], out: Any) -> Any:
    """Log a ``birads-calc compare`` result to a W&B run of job type ``compare`` in the project; return the run's
    local folder (``None`` when W&B is disabled).

    The run holds the methods table (mean, SD and CI per metric), the paired differences (diff, CI, p, adjusted p,
    verdict, minimum detectable difference), the runs left out, the charts as images, and in its summary the
    primary verdicts (``verdict/<a> vs <b>/<metric>``) and the minimum detectable differences. Offline unless the
    user has logged in (``WANDB_MODE`` decides when set); the files go under ``WANDB_DIR`` or ``out``.

    Args:
        report: the ``compare.json`` content.
        charts: name -> PNG path (``table.png``, ``differences.png``, ``alpha.png``).
        out: the comparison's output folder.
    """
    import wandb

    offline = "WANDB_MODE" not in os.environ and not logged_in()
    folder = Path(os.environ.get("WANDB_DIR") or out)
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=WANDB_PROJECT,
        job_type="compare",
        group="compare",
        name=f"compare/{Path(out).name}",
        dir=str(folder),
        mode="offline" if offline else None,
        config={key: report[key] for key in COMPARE_CONFIG}
        | {"runs": [r for m in report["methods"] for r in m["runs"]]},
        settings=wandb.Settings(silent=True),
    )
    if run.disabled:
        run.finish()
        return None
    metrics = list(report["mdd"])
    method_columns = ["label", "loss", "attention", "alpha", "n_runs", "seeds"]
    stat_columns = [f"{m}_{s}" for m in metrics for s in ("mean", "sd", "ci_low", "ci_high")]
    methods = wandb.Table(
        columns=method_columns + stat_columns,
        data=[
            [str(m[c]) if c == "seeds" else m[c] for c in method_columns]
            + [m["metrics"][metric][s] for metric in metrics for s in ("mean", "sd", "ci_low", "ci_high")]
            for m in report["methods"]
        ],
    )
    paired_columns = [
        "family",
        "a",
        "b",
        "metric",
        "diff",
        "ci_low",
        "ci_high",
        "p",
        "p_adjusted",
        "margin",
        "p_equivalence",
        "verdict",
        "mdd",
        "seeds",
        "n_patients",
    ]
    paired = wandb.Table(
        columns=paired_columns,
        data=[
            [
                p["family"],
                p["a"],
                p["b"],
                p["metric"],
                p["diff"],
                p["ci_low"],
                p["ci_high"],
                p["p"],
                p.get("p_holm", p.get("q")),
                p["margin"],
                p["p_equivalence"],
                p["verdict"],
                p["mdd"],
                str(p["seeds"]),
                p["n_patients"],
            ]
            for p in report["paired"]
        ],
    )
    left_out = wandb.Table(columns=["run", "reason"], data=[[x["run"], x["reason"]] for x in report["left_out"]])
    run.log(
        {"compare/methods": methods, "compare/paired": paired, "compare/left_out": left_out}
        | {f"compare/{Path(name).stem}": wandb.Image(str(path)) for name, path in charts.items()}
    )
    run.summary.update(
        {
            f"verdict/{p['a']} vs {p['b']}/{p['metric']}": p["verdict"]
            for p in report["paired"]
            if p["family"] == "primary"
        }
        | {
            f"mdd/{metric}/{family}": v[family]
            for metric, v in report["mdd"].items()
            for family in ("primary", "exploratory")
        }
    )
    where = Path(run.dir).parent
    run.finish()
    return where
