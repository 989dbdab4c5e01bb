"""Lesion metadata: what each synthetic calcification is, drawn before any pixel is rendered.

Everything here is cheap (no images), so the class mix and the malignancy rates can be checked on thousands of
draws. The figures and their sources are listed in the package docstring (``birads_calc.data.synthetic``).

The chain for one calcification region:

1. its reader category ``c`` (six-class scale) from the paper's Table 2 frequencies;
2. a continuous latent suspicion ``s`` in [0, 1]: the class band ``[c/6, (c+1)/6]`` blurred by a normal spread,
   so about one lesion in ten lies in a neighbouring band (readers disagree between neighbouring categories);
3. its morphology and distribution, drawn from ``s`` (not from ``c``), following the BI-RADS lexicon;
4. its true malignancy with the probability of the BI-RADS likelihood-of-malignancy range of ``c``, rising with
   ``s`` inside the range;
5. whether it was biopsied (nearly always from 4A up, rarely for 2 and 3): only then is its pathology known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birads_calc.categories import SIX_CLASS

# Paper Table 2: calcifications per BI-RADS category (7,175 regions, 1,776 mammograms, 708 patients).
TABLE2_COUNTS: dict[str, int] = {"2": 3180, "3": 1751, "4A": 323, "4B": 241, "4C": 778, "5": 902}
CLASS_FREQUENCIES = np.array([TABLE2_COUNTS[name] for name in SIX_CLASS], dtype=float) / sum(TABLE2_COUNTS.values())
MEAN_LESIONS_PER_IMAGE = 7175 / 1776  # about 4.0
IMAGES_PER_PATIENT_P = (0.2, 0.3, 0.3, 0.2)  # 1..4 views, mean 2.5 (1776 / 708)

# ACR BI-RADS Atlas 5th ed. likelihood of malignancy per category (2: essentially 0%).
MALIGNANCY_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 0.002),
    (0.002, 0.02),
    (0.02, 0.10),
    (0.10, 0.50),
    (0.50, 0.95),
    (0.95, 0.995),
)
# Which lesions get a pathology in the manifest: clinical (biopsied ones only) or paper (all; §3.1).
PATHOLOGY_COVERAGES: tuple[str, ...] = ("paper", "clinical")
# 2 and 3 are followed up, not biopsied; a few are (patient request, a biopsy of a nearby lesion).
BIOPSY_RATES: tuple[float, ...] = (0.03, 0.10, 1.0, 1.0, 1.0, 1.0)

LATENT_SPREAD = 0.4  # std of the latent position inside the class band, in band widths
SAME_CLASS_P = 0.3  # a lesion repeats the first lesion's category (breasts with several similar clusters)
NEIGHBOUR_P = 0.5  # a lesion is placed within about one window of an earlier one
DENSITY_LEVELS = (0.1, 0.3, 0.5, 0.7)  # glandular fraction of BI-RADS density a..d
DENSITY_P = (0.1, 0.4, 0.4, 0.1)  # US screening population mix of density a..d

# Lexicon morphologies and where they sit on the latent axis (in class units: class c spans [c, c+1]).
MORPHOLOGY_CENTRES: dict[str, float] = {
    "coarse_popcorn": 0.30,
    "rim": 0.35,
    "vascular": 0.45,
    "large_rod_like": 0.50,
    "round": 1.10,
    "punctate": 1.60,
    "amorphous": 2.60,
    "coarse_heterogeneous": 3.10,
    "fine_pleomorphic": 4.40,
    "fine_linear_branching": 5.60,
}
MORPHOLOGY_WIDTH = 0.55
BENIGN_LARGE = frozenset({"coarse_popcorn", "rim", "vascular", "large_rod_like"})
DISTRIBUTIONS = ("diffuse", "regional", "grouped", "linear", "segmental")


@dataclass(frozen=True)
class LesionSpec:
    """One calcification region before rendering.

    Attributes:
        class_index: reader category on the six-class scale (0 = BI-RADS 2 ... 5 = BI-RADS 5).
        suspicion: latent suspicion in [0, 1] that drives the appearance.
        morphology: lexicon morphology (a key of ``MORPHOLOGY_CENTRES``).
        distribution: lexicon distribution (one of ``DISTRIBUTIONS``).
        malignant: ground truth, known to the generator only.
        biopsied: whether the pathology is reported (else the manifest leaves it empty = unknown).
        near_previous: place it within about one window of an earlier lesion of the same image.
    """

    class_index: int
    suspicion: float
    morphology: str
    distribution: str
    malignant: bool
    biopsied: bool
    near_previous: bool

    @property
    def pathology(self) -> str:
        """The manifest's pathology cell: ``malignant`` / ``benign`` / empty when not biopsied."""
        return self.reported_pathology("clinical")

    def reported_pathology(self, coverage: str = "clinical") -> str:
        """The pathology cell under a coverage: ``clinical`` reports it only where the lesion was biopsied (as
        clinical practice does); ``paper`` reports it for every lesion (the paper's data: a biopsy result for
        essentially every calcification, §3.1)."""
        if coverage not in PATHOLOGY_COVERAGES:
            raise ValueError(f"pathology coverage must be one of {PATHOLOGY_COVERAGES}, got {coverage!r}")
        if coverage == "clinical" and not self.biopsied:
            return ""
        return "malignant" if self.malignant else "benign"


@dataclass(frozen=True)
class ImageSpec:
    """One mammogram before rendering: who, which view, acquisition settings and its lesions."""

    patient_index: int
    patient_id: str
    laterality: str
    view: str
    density: float
    bits_stored: int
    photometric: str
    lesions: tuple[LesionSpec, ...]

    @property
    def image_id(self) -> str:
        """File stem of the image, unique in the dataset."""
        return f"{self.patient_id}_{self.laterality}_{self.view}"


def sample_classes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` six-class category indices with the paper's Table 2 frequencies."""
    return rng.choice(len(SIX_CLASS), size=n, p=CLASS_FREQUENCIES)


def sample_suspicion(rng: np.random.Generator, class_index: int) -> float:
    """Latent suspicion of a lesion of ``class_index``: its band blurred into the neighbouring ones."""
    position = 0.5 + LATENT_SPREAD * rng.standard_normal()
    return float(np.clip((class_index + position) / len(SIX_CLASS), 0.0, 1.0))


def malignancy_probability(class_index: int, suspicion: float) -> float:
    """Probability of malignancy: the category's BI-RADS range, rising with the suspicion inside its band.

    A lesion whose suspicion lies outside its own band (reader overlap) is held at the range's edge, so the
    rate of each category stays inside its BI-RADS range while malignancy still rises with the latent value.
    """
    low, high = MALIGNANCY_RANGES[class_index]
    n = len(SIX_CLASS)
    position = float(np.clip(suspicion * n - class_index, 0.0, 1.0))
    return low + (high - low) * position


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index drawn with probability proportional to ``weights`` (``rng.choice(p=...)`` is slow per call)."""
    cumulative = np.cumsum(weights)
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(weights) - 1)


_MORPHOLOGY_NAMES = tuple(MORPHOLOGY_CENTRES)
_MORPHOLOGY_CENTRE_ARRAY = np.array(list(MORPHOLOGY_CENTRES.values()))


def sample_morphology(rng: np.random.Generator, suspicion: float) -> str:
    """Lexicon morphology drawn from the latent suspicion (overlapping bells along the latent axis)."""
    distance = suspicion * len(SIX_CLASS) - _MORPHOLOGY_CENTRE_ARRAY
    return _MORPHOLOGY_NAMES[_draw(rng, np.exp(-(distance**2) / (2 * MORPHOLOGY_WIDTH**2)) + 1e-12)]


def sample_distribution(rng: np.random.Generator, suspicion: float, morphology: str) -> str:
    """Lexicon distribution: suspicion rises from diffuse/regional to grouped to linear/segmental."""
    if morphology in BENIGN_LARGE:
        return "diffuse" if rng.random() < 0.6 else "regional"
    x = suspicion * len(SIX_CLASS)
    logits = np.array([-np.inf, -0.8 * (x - 1.0), 1.0, 1.2 * (x - 4.2), 1.2 * (x - 4.8)])
    return DISTRIBUTIONS[_draw(rng, np.exp(logits - logits[np.isfinite(logits)].max()))]


def sample_lesion(rng: np.random.Generator, class_index: int, first: bool) -> LesionSpec:
    """Everything about one calcification region of a given category."""
    suspicion = sample_suspicion(rng, int(class_index))
    morphology = sample_morphology(rng, suspicion)
    return LesionSpec(
        class_index=int(class_index),
        suspicion=suspicion,
        morphology=morphology,
        distribution=sample_distribution(rng, suspicion, morphology),
        malignant=bool(rng.random() < malignancy_probability(class_index, suspicion)),
        biopsied=bool(rng.random() < BIOPSY_RATES[class_index]),
        near_previous=bool(not first and rng.random() < NEIGHBOUR_P),
    )


def sample_image_lesions(rng: np.random.Generator) -> tuple[LesionSpec, ...]:
    """The lesions of one mammogram: 1 + Poisson(3.04) regions, some repeating the first one's category.

    Repeating the first category with probability ``SAME_CLASS_P`` (else an independent draw) keeps every
    lesion's marginal category at the Table 2 frequencies.
    """
    count = 1 + int(rng.poisson(MEAN_LESIONS_PER_IMAGE - 1))
    classes = sample_classes(rng, count)
    repeat = rng.random(count) < SAME_CLASS_P
    classes[1:][repeat[1:]] = classes[0]
    return tuple(sample_lesion(rng, c, first=k == 0) for k, c in enumerate(classes))


def sample_dataset(patients: int, rng: np.random.Generator) -> list[ImageSpec]:
    """Metadata of a whole synthetic dataset: patients, their views and every lesion (no pixels).

    Each patient has one to four views (both views of one breast first), a breast density and one of two
    acquisition profiles (14-bit MONOCHROME2 or 12-bit MONOCHROME1 stored inverted), echoing the paper's two
    vendors.

    Example:
        >>> images = sample_dataset(3, np.random.default_rng(0))
        >>> sorted({image.patient_id for image in images})
        ['S00000', 'S00001', 'S00002']
    """
    images: list[ImageSpec] = []
    for p in range(patients):
        n_views = 1 + _draw(rng, np.asarray(IMAGES_PER_PATIENT_P))
        first_side = "R" if rng.random() < 0.5 else "L"
        other_side = "L" if first_side == "R" else "R"
        views = [(first_side, "CC"), (first_side, "MLO"), (other_side, "CC"), (other_side, "MLO")][:n_views]
        density = DENSITY_LEVELS[_draw(rng, np.asarray(DENSITY_P))]
        bits, photometric = (14, "MONOCHROME2") if rng.random() < 0.6 else (12, "MONOCHROME1")
        for side, view in views:
            images.append(
                ImageSpec(
                    patient_index=p,
                    patient_id=f"S{p:05d}",
                    laterality=side,
                    view=view,
                    density=density,
                    bits_stored=bits,
                    photometric=photometric,
                    lesions=sample_image_lesions(rng),
                )
            )
    return images
