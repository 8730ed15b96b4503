"""Provider choice, install diagnosis and install.py's repair decision, against the real onnxruntime of this venv.

The real calls expect what this venv holds: CI's has the CPU build (`onnxruntime`, no `onnxruntime-gpu`), so they show
the "no GPU" paths there; with a working GPU build they check the GPU paths instead. The clash itself is fed in as
explicit values recorded by scripts/onnxruntime_clash_experiment.sh (docs/onnxruntime.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from packaging.markers import default_environment
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from arc2face_core.errors import Arc2FaceError, InvalidInputError, ProviderError
from arc2face_core.faces.providers import (
    AUTO_ORDER,
    PROVIDER_CHOICES,
    PROVIDER_NAMES,
    diagnose_onnxruntime,
    installed_onnxruntime_builds,
    resolve_providers,
)

REPO = Path(__file__).resolve().parent.parent

# Recorded by scripts/onnxruntime_clash_experiment.sh, case A (onnxruntime-gpu line, then insightface).
CLASH_INSTALLED = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}
CLASH_PROVIDERS = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
FIX = "-m pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"


def _load_install_py():
    spec = importlib.util.spec_from_file_location("arc2face_install_script", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_py = _load_install_py()


def _add_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("x", "y")],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------- resolve_providers on the real (CPU) onnxruntime


def live_build() -> str:
    from onnxruntime.capi import build_and_package_info

    return build_and_package_info.package_name


def distributions_named_onnxruntime() -> dict[str, str]:
    """Installed distributions whose name is onnxruntime or onnxruntime-*, read from importlib.metadata here."""
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name == "onnxruntime" or name.startswith("onnxruntime-"):
            found.setdefault(name, dist.version)
    return found


CUDA_HERE = "CUDAExecutionProvider" in ort.get_available_providers()


def test_the_live_build_is_one_of_the_installed_ones():
    builds = installed_onnxruntime_builds()
    assert builds == distributions_named_onnxruntime() and live_build() in builds
    if live_build() == "onnxruntime":   # the CPU package never offers CUDA
        assert not CUDA_HERE


def test_auto_picks_the_gpu_when_onnxruntime_offers_it_and_runs_a_real_session():
    providers = resolve_providers("auto")
    expected = ([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"] if CUDA_HERE
                else ["CPUExecutionProvider"])
    assert providers == expected
    session = ort.InferenceSession(_add_model(), providers=["CPUExecutionProvider"])
    (z,) = session.run(None, {"x": np.array([1, 2, 3], np.float32), "y": np.array([0.5, -2, 10], np.float32)})
    np.testing.assert_array_equal(z, np.array([1.5, 0.0, 13.0], np.float32))


def test_cpu_choice_works():
    assert resolve_providers("CPU") == ["CPUExecutionProvider"]
    assert resolve_providers("cpu", device_id=3) == ["CPUExecutionProvider"]  # device_id means nothing to the CPU
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]


def test_cuda_choice_on_this_install():
    """With the CUDA provider offered, CUDA is chosen (CPU kept as fallback); without it, the choice is refused with
    the providers that exist and, with no onnxruntime-gpu installed, the install command for this interpreter."""
    if CUDA_HERE:
        assert resolve_providers("CUDA", 1) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
        return
    with pytest.raises(ProviderError) as info:
        resolve_providers("CUDA")
    message = str(info.value)
    assert "CUDAExecutionProvider" in message
    for name in ort.get_available_providers():
        assert name in message
    if "onnxruntime-gpu" not in distributions_named_onnxruntime():
        assert f'"{sys.executable}" -m pip install onnxruntime-gpu' in message
        assert "--force-reinstall" not in message
    assert isinstance(info.value, Arc2FaceError)


@pytest.mark.parametrize("choice", ["DirectML", "CoreML", "MIGraphX", "OpenVINO"])
def test_other_unavailable_choices_raise(choice):
    with pytest.raises(ProviderError, match="Available providers: .*CPUExecutionProvider"):
        resolve_providers(choice)


def test_unknown_choice_and_bad_device_id():
    with pytest.raises(ProviderError, match="choose one of: auto, CPU, CUDA"):
        resolve_providers("ROCm")  # removed from ONNX Runtime in 1.23; AMD GPUs use MIGraphX
    with pytest.raises(InvalidInputError, match="device_id must be a GPU index >= 0, got -1"):
        resolve_providers("auto", device_id=-1)
    with pytest.raises(InvalidInputError, match="device_id must be a GPU index >= 0, got True"):
        resolve_providers("auto", device_id=True)


def test_choices_are_providers_onnxruntime_really_has():
    assert PROVIDER_CHOICES[0] == "auto"
    known = set(ort.get_all_providers())
    assert set(PROVIDER_CHOICES[1:]) == set(PROVIDER_NAMES)
    for short in PROVIDER_CHOICES[1:]:
        assert PROVIDER_NAMES[short] in known, short
    assert "ROCMExecutionProvider" not in known  # why there is no "ROCm" choice
    assert set(AUTO_ORDER) <= set(PROVIDER_NAMES)


# ---------------------------------------------------------------- resolve_providers with explicit provider lists


def test_auto_prefers_cuda_with_device_id_and_keeps_cpu_fallback():
    assert resolve_providers("auto", 1, available=GPU_PROVIDERS, installed={"onnxruntime-gpu": "1.31.1"}) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    # TensorRT is listed first by the GPU build but never picked by auto.
    dml = ["DmlExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", available=dml, installed={"onnxruntime-directml": "1.24.4"}) == [
        ("DmlExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]
    coreml = ["CoreMLExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", available=coreml, installed={"onnxruntime": "1.32.0"}) == [
        "CoreMLExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_explicit_cuda_when_available():
    assert resolve_providers("CUDA", 2, available=GPU_PROVIDERS, installed=CLASH_INSTALLED) == [
        ("CUDAExecutionProvider", {"device_id": 2}),
        "CPUExecutionProvider",
    ]


def test_cuda_choice_during_the_clash_explains_it_and_gives_the_fix():
    with pytest.raises(ProviderError) as info:
        resolve_providers("CUDA", available=CLASH_PROVIDERS, installed=CLASH_INSTALLED)
    message = str(info.value)
    assert "Available providers: AzureExecutionProvider, CPUExecutionProvider" in message
    assert "same onnxruntime/ folder" in message
    assert f'"{sys.executable}" {FIX}' in message
    assert "Do not run `pip uninstall onnxruntime`" in message


def test_auto_during_the_clash_falls_back_to_cpu_and_warns(caplog):
    with caplog.at_level("WARNING", logger="arc2face_core.faces.providers"):
        providers = resolve_providers("auto", available=CLASH_PROVIDERS, installed=CLASH_INSTALLED)
    assert providers == ["CPUExecutionProvider"]
    assert FIX in caplog.text


# ---------------------------------------------------------------- diagnose_onnxruntime


def test_diagnosis_of_the_real_install_is_none():
    assert diagnose_onnxruntime() is None
    assert diagnose_onnxruntime(installed_onnxruntime_builds(), ort.get_available_providers()) is None


def test_diagnosis_of_the_recorded_clash():
    text = diagnose_onnxruntime(CLASH_INSTALLED, CLASH_PROVIDERS, live_build="onnxruntime")
    assert "onnxruntime-gpu 1.31.1 is installed" in text
    assert "onnxruntime 1.32.0" in text
    assert "here that is the files of onnxruntime" in text
    assert "insightface requires the CPU package" in text
    assert FIX in text


def test_diagnosis_when_gpu_files_are_live_is_none():
    # Case B of the experiment: both distributions listed, GPU files written last. Fine (if fragile).
    assert diagnose_onnxruntime(CLASH_INSTALLED, GPU_PROVIDERS, live_build="onnxruntime-gpu") is None
    # Distribution names are compared in canonical form.
    assert diagnose_onnxruntime({"onnxruntime_gpu": "1.31.1"}, GPU_PROVIDERS) is None


def test_diagnosis_of_an_uninstall_that_deleted_shared_files():
    # Case D6: `pip uninstall onnxruntime` with onnxruntime-gpu installed left an un-importable package.
    err = "ImportError: cannot import name 'build_and_package_info' from 'onnxruntime.capi' (unknown location)"
    text = diagnose_onnxruntime({"onnxruntime-gpu": "1.31.1"}, import_error=err)
    assert "cannot be imported" in text and "build_and_package_info" in text
    assert FIX in text
    both = diagnose_onnxruntime(CLASH_INSTALLED, import_error=err)
    assert "deletes files the others need" in both and FIX in both
    nothing = diagnose_onnxruntime({}, import_error="ModuleNotFoundError: No module named 'onnxruntime'")
    assert "not installed" in nothing and "-m pip install onnxruntime-gpu" in nothing


def test_diagnosis_of_other_accelerated_builds():
    text = diagnose_onnxruntime(
        {"onnxruntime": "1.32.0", "onnxruntime-directml": "1.24.4"}, CLASH_PROVIDERS, live_build="onnxruntime"
    )
    assert "onnxruntime-directml 1.24.4 is installed" in text
    assert "--force-reinstall --no-deps onnxruntime-directml==1.24.4" in text
    assert "insightface" not in text  # that explanation is specific to onnxruntime-gpu


# ---------------------------------------------------------------- install.py


def test_install_py_reads_the_real_installed_dists():
    assert install_py.installed_onnxruntime_dists() == installed_onnxruntime_builds()


def test_install_py_probe_in_a_fresh_interpreter():
    probe = install_py.probe_onnxruntime(sys.executable)
    assert probe == {"providers": ort.get_available_providers(), "version": ort.__version__, "build": live_build()}
    broken = install_py.probe_onnxruntime(str(REPO / "no-such-python"))
    assert set(broken) == {"error"}


def test_install_py_decisions():
    decide = install_py.decide_repair
    fix_args = ["install", "--force-reinstall", "--no-deps", "onnxruntime-gpu==1.31.1"]

    # GPU build never chosen: nothing, whatever the probe says.
    assert decide({"onnxruntime": "1.32.0"}, None)[0] is None
    assert decide({}, None)[0] is None
    # GPU files live (case B): nothing.
    args, why = decide(CLASH_INSTALLED, {"providers": GPU_PROVIDERS, "version": "1.31.1", "build": "onnxruntime-gpu"})
    assert args is None and "nothing to do" in why
    # CPU files live (cases A, C, D3b, D4): rewrite the same GPU version, without deps, never uninstall.
    args, why = decide(CLASH_INSTALLED, {"providers": CLASH_PROVIDERS, "version": "1.32.0", "build": "onnxruntime"})
    assert args == fix_args
    assert "uninstall" not in " ".join(args)
    # Import broken (case D6): rewriting the GPU files restores it.
    args, _ = decide({"onnxruntime-gpu": "1.31.1"}, {"error": "ImportError: cannot import name"})
    assert args == fix_args
    # Another accelerated build is live: the user put it there; leave it.
    args, why = decide(
        {"onnxruntime-gpu": "1.31.1", "onnxruntime-directml": "1.24.4"},
        {"providers": ["DmlExecutionProvider", "CPUExecutionProvider"], "version": "1.24.4",
         "build": "onnxruntime-directml"},
    )
    assert args is None and "leaving your onnxruntime-directml" in why
    # A local version label is kept as installed.
    args, _ = decide({"onnxruntime-gpu": "1.23.2+cu126"}, {"providers": ["CPUExecutionProvider"], "build": "x"})
    assert args[-1] == "onnxruntime-gpu==1.23.2+cu126"


def test_install_py_changes_nothing_on_a_sound_install():
    """Run exactly as ComfyUI-Manager runs it (`python install.py` in the pack folder): on this install (no
    onnxruntime-gpu, or its GPU files live) it says why there is nothing to do and runs no pip command."""
    env = {k: v for k, v in os.environ.items() if k != "ARC2FACE_SKIP_ORT_REPAIR"}
    proc = subprocess.run(
        [sys.executable, "install.py"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    installed = distributions_named_onnxruntime()
    if "onnxruntime-gpu" not in installed:
        assert "onnxruntime-gpu is not installed; nothing to repair" in proc.stdout, proc.stdout
    else:
        assert CUDA_HERE, "onnxruntime-gpu is installed but its CUDA provider is gone: this venv needs the repair"
        assert f"onnxruntime-gpu {installed['onnxruntime-gpu']} is live" in proc.stdout, proc.stdout
    assert "Running:" not in proc.stdout and "Repaired" not in proc.stdout
    skipped = subprocess.run(
        [sys.executable, "install.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**env, "ARC2FACE_SKIP_ORT_REPAIR": "1"},
    )
    assert skipped.returncode == 0 and "ARC2FACE_SKIP_ORT_REPAIR is set; onnxruntime check skipped." in skipped.stdout


def test_install_py_imports_nothing_heavy():
    code = (
        "import runpy, sys; runpy.run_path('install.py', run_name='not_main'); "
        "heavy = ('torch', 'insightface', 'onnxruntime', 'arc2face_core', 'numpy'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- requirements.txt / pyproject.toml markers

PLATFORMS = {
    # (sys_platform, platform_machine): the onnxruntime build that must be selected
    ("linux", "x86_64"): "onnxruntime-gpu",
    ("win32", "AMD64"): "onnxruntime-gpu",
    ("linux", "aarch64"): "onnxruntime",
    ("win32", "ARM64"): "onnxruntime",
    ("darwin", "arm64"): "onnxruntime",
    ("darwin", "x86_64"): "onnxruntime",
    ("freebsd14", "amd64"): "onnxruntime",
}


def _requirement_lines() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    # ComfyUI-Manager's treatment: strip, skip comments and blanks, cut at '#'.
    return [ln.split("#")[0].strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pyproject_dependencies() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize("source", ["requirements.txt", "pyproject.toml"])
def test_exactly_one_onnxruntime_build_per_platform(source):
    lines = _requirement_lines() if source == "requirements.txt" else _pyproject_dependencies()
    reqs = [Requirement(line) for line in lines]  # raises on an invalid line (a `not` in a marker did)
    ort_reqs = [r for r in reqs if r.name in ("onnxruntime", "onnxruntime-gpu")]
    assert {r.name for r in ort_reqs} == {"onnxruntime", "onnxruntime-gpu"}
    for (plat, machine), expected in PLATFORMS.items():
        env = {**default_environment(), "sys_platform": plat, "platform_machine": machine}
        chosen = [r.name for r in ort_reqs if r.marker is None or r.marker.evaluate(env)]
        assert chosen == [expected], (plat, machine)


def test_requirements_order_and_contents():
    names = [Requirement(line).name.lower() for line in _requirement_lines()]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    assert {"insightface", "diffusers", "transformers", "safetensors", "numpy", "pillow"} <= set(names)
    # The onnxruntime builds come after insightface (and everything else), so their files are written last.
    assert names[-2:] in (["onnxruntime", "onnxruntime-gpu"], ["onnxruntime-gpu", "onnxruntime"])
    assert names.index("insightface") < names.index("onnxruntime-gpu")
    # Same dependency set as pyproject.toml, markers included.
    assert sorted(map(str, map(Requirement, _requirement_lines()))) == sorted(
        map(str, map(Requirement, _pyproject_dependencies()))
    )


def test_install_py_uv_spelling():
    args = ["install", "--force-reinstall", "--no-deps", "onnxruntime-gpu==1.31.1"]
    assert install_py._to_uv(args, "/x/python") == [
        "install", "--reinstall", "--no-deps", "onnxruntime-gpu==1.31.1", "--python", "/x/python"
    ]
    assert install_py._pip_command(sys.executable) == [sys.executable, "-m", "pip"]
