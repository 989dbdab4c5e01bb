"""The learned second stage: how likely each candidate speck is a calcification.

Two small multilayer perceptrons, in two passes ("auto-context"): the first on the candidate's measurements
(``features.FEATURES``), the second on the same measurements plus what the first pass thinks of its neighbours
(``features.CONTEXT``: calcifications come in groups of likely specks, noise peaks do not). Inputs are
standardised by the training set's means and deviations (kept in the same file) and clipped to
``CLIP_SD`` deviations, so a film unlike any background of the training set cannot push a feature to an extreme
the network never saw. It is trained by ``birads-calc detect-train``
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

from birads_calc.detection.features import CONTEXT, FEATURES, context_features
from birads_calc.errors import InputError

WEIGHTS = Path(__file__).with_name("ranker.pt")
FORMAT = "birads-calc speck ranker"
VERSION = 2
HIDDEN = 32
CLIP_SD = 5.0


class RankerError(InputError, ValueError):
    """A weights file that is not a speck ranker of this version (the message names the file)."""


class Perceptron(nn.Module):
    """Features [N, F] -> logit [N]: standardised, clipped, two hidden layers."""

    def __init__(self, n_features: int, hidden: int = HIDDEN):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def standardise_on(self, features: torch.Tensor) -> None:
        """Take the means and deviations of ``features`` (the training set)."""
        self.mean.copy_(features.mean(0))
        self.scale.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(((features - self.mean) / self.scale).clamp(-CLIP_SD, CLIP_SD)).squeeze(-1)


class SpeckRanker(nn.Module):
    """Candidates' features [N, F] and positions [N, 2] (mm) -> probability [N] of a calcification."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.first = Perceptron(len(FEATURES), hidden)
        self.second = Perceptron(len(FEATURES) + len(CONTEXT), hidden)

    def probabilities(self, features: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
        """float32 [N] in (0, 1): the second pass, given the first pass's view of the neighbours."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        first = logits_to_probability(self.first, features)
        return logits_to_probability(self.second, np.hstack([features, context_features(points_mm, first)]))


def logits_to_probability(model: nn.Module, features: np.ndarray) -> np.ndarray:
    """sigmoid(model(features)) without gradients, numpy in and out."""
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(features, np.float32)))
    return torch.sigmoid(logits).numpy().astype(np.float32)


def save_ranker(model: SpeckRanker, path: Path, recipe: dict) -> Path:
    """Write ``model`` with its format, feature list and training recipe (seeds, data, figures)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "features": [*FEATURES, *CONTEXT], "hidden": HIDDEN,
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
    if list(payload.get("features", [])) != [*FEATURES, *CONTEXT]:
        raise RankerError(f"{path}: trained on other features than this version measures; run detect-train again")
    model = SpeckRanker(int(payload["hidden"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        raise RankerError(f"{path}: the weights do not fit the ranker ({error})") from None
    return model.eval()


def ranker_recipe(path: Path | str | None = None) -> dict:
    """The training recipe and figures stored with a ranker (``detect-train`` wrote them)."""
    payload = torch.load(Path(path) if path else WEIGHTS, map_location="cpu", weights_only=True)
    return dict(payload.get("recipe", {}))
