"""The manifest: one CSV row per calcification (DESIGN §3)."""

from __future__ import annotations

# Column order used whenever birads-calc writes a manifest (synth, convert).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "image",
    "mask",
    "birads",
    "pathology",
    "lesion_id",
    "laterality",
    "view",
    "split",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "image", "mask")
