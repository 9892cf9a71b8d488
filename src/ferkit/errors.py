"""Errors that reach the user: each names the file, row or field at fault."""


class FerkitError(Exception):
    """Base class: the CLI prints these as one readable line, never as a traceback."""


class ArgumentError(FerkitError, ValueError):
    """A function or command-line argument has an unsupported value (also a ValueError for API callers)."""


class DataError(FerkitError):
    """A data file (label CSV, image, Kaggle CSV) is missing or malformed."""


class ConfigError(FerkitError):
    """A configuration value is invalid."""


class ModelFileError(FerkitError):
    """A model/run folder or weights file is missing or malformed."""


class EvaluationError(FerkitError):
    """An evaluation or explanation cannot run: no images, bad predictions or arguments."""


class ImageError(FerkitError):
    """An image (or video) to predict on cannot be used: empty, not an image, corrupt, too large."""


class ImageTooLarge(ImageError):
    """An image above the pixel limit (or a decompression bomb): refused before its pixels are decoded."""


class FaceDetectorError(FerkitError):
    """Face detection or alignment cannot run: unknown detector, its package missing, unusable image."""


class MissingExtra(FerkitError):
    """What was asked needs an optional extra that is not installed; the message ends with its pip line
    (the CLI exits 2 on it, as for a command that needs the extra)."""

    def __init__(self, extra: str, why: str):
        self.extra, self.why = extra, why
        super().__init__(f"{why}: pip install 'ferkit[{extra}]'")

    def __reduce__(self):  # rebuilt from its own arguments where it crosses processes (Ray workers)
        return type(self), (self.extra, self.why)


def require_extra(extra: str, what: str, *modules: str) -> None:
    """MissingExtra naming `extra` when one of `modules` cannot be imported: the one check behind the
    CLI's commands and the library's entry points that need an extra."""
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(extra, f"{what} needs the {extra} extra ({exc})") from None
