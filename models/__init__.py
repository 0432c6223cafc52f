"""The models shipped with charlstm: files beside this module, found also from an installed wheel."""

from pathlib import Path

DEFAULT_MODEL = "moliere.onnx"


def default_model() -> Path | None:
    """The default model's path, or None where its file is missing (a build without package data)."""
    path = Path(__file__).with_name(DEFAULT_MODEL)
    return path if path.is_file() else None
