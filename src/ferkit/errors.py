"""Errors that reach the user: each names the file, row or field at fault."""


class FerkitError(Exception):
    """Base class: the CLI prints these as one readable line, never as a traceback."""


class DataError(FerkitError):
    """A data file (label CSV, image, Kaggle CSV) is missing or malformed."""


class ConfigError(FerkitError):
    """A configuration value is invalid."""


class ModelFileError(FerkitError):
    """A model/run folder or weights file is missing or malformed."""
