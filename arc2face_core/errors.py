"""One exception type per kind of user error.

Every message is meant to be read by a ComfyUI user in the error dialog: it says what went wrong, where the pack looked,
and what to do about it. Subclassing the matching built-in (FileNotFoundError, ValueError) keeps generic handlers working.
"""

from __future__ import annotations


class Arc2FaceError(Exception):
    """Base class of every error the pack raises on purpose."""


class WeightsNotFoundError(Arc2FaceError, FileNotFoundError):
    """A weight file is not in any of the folders searched."""


class CorruptWeightsError(Arc2FaceError):
    """A weight file exists but cannot be read, is truncated, or does not hold what it should."""


class WrongModelError(Arc2FaceError):
    """A file was found but it is the wrong model for Arc2Face (e.g. antelopev2's glintr100 recogniser)."""


class UnsafePathError(Arc2FaceError, ValueError):
    """A model name would resolve outside the model folders."""


class NoFaceError(Arc2FaceError):
    """No usable face was found in an input image."""


class InvalidInputError(Arc2FaceError, ValueError):
    """A tensor or parameter has the wrong shape, dtype, range, or holds NaN/inf."""


class ProviderError(Arc2FaceError):
    """The requested ONNX Runtime execution provider is not available."""


class MissingPackageError(Arc2FaceError, ImportError):
    """An optional Python package that the chosen option needs is not installed."""


class WriteFailedError(Arc2FaceError):
    """A file could not be written (a full disk, no permission); no partial file is left behind."""


class DamagedFileError(Arc2FaceError):
    """A file the pack wrote earlier (a dataset's record or image) was changed or cut short since."""
