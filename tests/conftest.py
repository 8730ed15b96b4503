"""Shared fixtures. Tiny random-weight models are built once per session, in the real file layouts; the real ComfyUI
server (when COMFYUI_DIR is set) is started once per session too.

``ARC2FACE_NO_SKIP=1`` (set by ``.ci/run``) turns every skip into a failure, so CI cannot pass by skipping.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from fixtures_comfyui import *  # noqa: F401,F403  (the real ComfyUI server)
from fixtures_faces import *  # noqa: F401,F403  (tiny ONNX detector/recogniser, test photos)
from fixtures_models import *  # noqa: F401,F403  (tiny encoder, UNet, ...)

NO_SKIP = os.environ.get("ARC2FACE_NO_SKIP") == "1"


@pytest.fixture(scope="session")
def pack():
    """The pack's ``nodes`` package, imported as ComfyUI imports it (a subpackage of the checkout), without ComfyUI."""
    name = "arc2face_pack_under_test"
    if name not in sys.modules:
        package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
        package.__path__ = [str(Path(__file__).resolve().parents[1])]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.nodes")


class _CheckoutIsAFolder:
    """Collect the checkout's root as a plain folder, not as a package.

    The root holds the pack's ``__init__.py`` (ComfyUI imports it as a package), so pytest would import it before any
    test. That works only when the checkout's folder name is a Python identifier: in ``ComfyUI-Arc2Face`` (a CI
    clone) or ``issue7-ci`` it is imported as a top-level ``__init__`` and its relative imports fail, which errors
    every test. The tests import ``arc2face_core`` and the nodes themselves; nothing needs that package import.
    """

    def __init__(self, root):
        self.root = root

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if (path / "__init__.py").is_file() and path.resolve() == self.root:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    # registered as a plugin (not a conftest hook), so it also applies to the root folder above tests/
    checkout = Path(__file__).resolve().parents[1]
    config.pluginmanager.register(_CheckoutIsAFolder(checkout), "arc2face-checkout-is-a-folder")


def _refuse_skip(report) -> None:
    if NO_SKIP and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped although ARC2FACE_NO_SKIP=1 (CI runs every test): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _refuse_skip(outcome.get_result())
