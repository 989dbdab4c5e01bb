"""LightningCLI for the trainer commands (``fit``, ``validate``, ``test``, ``predict``)."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from birads_calc.data.datamodule import BiradsDataModule
from birads_calc.model import BiradsClassifier


class BiradsCLI(LightningCLI):
    """LightningCLI with birads-calc's model, data module and shared arguments linked once."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            model_class=BiradsClassifier,
            datamodule_class=BiradsDataModule,
            args=args,
            parser_kwargs={"prog": "birads-calc"},
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        # The scale is a property of the data (six- or four-class labels); the model's head follows it.
        parser.link_arguments("data.num_classes", "model.num_classes")
