"""Shared fixtures. Tiny random-weight models are built once per session, in the real file layouts."""

from fixtures_faces import *  # noqa: F401,F403  (tiny ONNX detector/recogniser, test photos)
from fixtures_models import *  # noqa: F401,F403  (tiny encoder, UNet, ...)
