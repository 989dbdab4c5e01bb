"""The learned second stage: how likely each candidate speck is a calcification.

A small multilayer perceptron on the candidate's measurements (``features.FEATURES``), standardised by the
training set's means and deviations kept in the same file. It is trained by ``birads-calc detect-train``
(``train``) on phantom calcifications inserted into real film and detector backgrounds, the backgrounds' own
candidates being the negatives, and ships with the package as ``ranker.pt`` (a few kilobytes, loaded with
``torch.load(weights_only=True)``). Every feature is invariant to shifts and mirror images, so the probabilities
are too.

A weights file is refused (one message naming it) when it is not a ranker of this format or was trained on
another list of features.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from birads_calc.detection.features import FEATURES
from birads_calc.errors import InputError

WEIGHTS = Path(__file__).with_name("ranker.pt")
FORMAT = "birads-calc speck ranker"
VERSION = 1
HIDDEN = 32


class RankerError(InputError, ValueError):
    """A weights file that is not a speck ranker of this version (the message names the file)."""


class SpeckRanker(nn.Module):
    """Features [N, F] -> logit [N] of "this candidate is a calcification"."""

    def __init__(self, n_features: int = len(FEATURES), hidden: int = HIDDEN):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.scale).squeeze(-1)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """float [N] in (0, 1) for features float [N, F] (numpy in, numpy out)."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        with torch.no_grad():
            logits = self(torch.from_numpy(np.ascontiguousarray(features, np.float32)))
        return torch.sigmoid(logits).numpy().astype(np.float32)


def save_ranker(model: SpeckRanker, path: Path, recipe: dict) -> Path:
    """Write ``model`` with its format, feature list and training recipe (seeds, data, figures)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "features": list(FEATURES), "hidden": HIDDEN,
               "state_dict": state, "recipe": recipe}  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


@functools.lru_cache(maxsize=4)
def load_ranker(path: Path | str | None = None) -> SpeckRanker:
    """The ranker in ``path`` (default: the one shipped with the package), in eval mode; cached per path."""
    path = Path(path) if path is not None else WEIGHTS
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RankerError(f"{path}: no such ranker weights file") from None
    except Exception as error:  # pickle/zip errors: not a torch file at all
        raise RankerError(f"{path}: not a speck ranker weights file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise RankerError(f"{path}: not a speck ranker weights file of version {VERSION} (birads-calc detect-train)")
    if list(payload.get("features", [])) != list(FEATURES):
        raise RankerError(f"{path}: trained on other features than this version measures; run detect-train again")
    model = SpeckRanker(len(FEATURES), int(payload["hidden"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise RankerError(f"{path}: the weights do not fit the ranker ({error})") from None
    return model.eval()


def ranker_recipe(path: Path | str | None = None) -> dict:
    """The training recipe and figures stored with a ranker (``detect-train`` wrote them)."""
    payload = torch.load(Path(path) if path else WEIGHTS, map_location="cpu", weights_only=True)
    return dict(payload.get("recipe", {}))
