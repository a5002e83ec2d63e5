"""GGUF files for the llama.cpp backend: the base model at F16, Q8_0 or Q4_K_M, and LoRA adapters
as GGUF adapters.

The conversions are llama.cpp's own (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` and
their ``gguf-py`` package), taken from the source distribution of the installed
llama-cpp-python version: fetched once with pip from PyPI and kept under
``$RAGREC_HOME/tools/llama.cpp-<version>`` (``RAGREC_LLAMACPP_TOOLS`` points at another copy, e.g.
a llama.cpp checkout). They need ``sentencepiece`` and ``protobuf`` (the ``llamacpp`` extra).
Quantization is llama.cpp's ``llama_model_quantize`` through llama-cpp-python. Every file is
written to a temporary name and renamed when whole, and exports are cached by what they came from:
the model's folder (F16) or the adapter's weights checksum.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from os import PathLike
from pathlib import Path

from ragrec import paths
from ragrec.errors import RagrecError
from ragrec.io import atomic_directory, sha256_file

__all__ = ["QUANTS", "tools_dir", "export_model", "export_adapter", "quantize"]

# llama_ftype values (LLAMA_FTYPE_MOSTLY_*). Q4_0 and IQ4_NL quantize in blocks of 32 (K-quants: 256), so
# models whose rows are not a multiple of 256 wide (SmolLM2-135M: 576) keep them 4-bit, and llama.cpp
# repacks both for its fastest CPU kernels at load.
QUANTS = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q4_0": 2, "IQ4_NL": 25}
_MEMBERS = re.compile(
    r"^[^/]+/vendor/llama\.cpp/(convert_hf_to_gguf\.py|convert_lora_to_gguf\.py|conversion/.+|gguf-py/.+)$"
)


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise RagrecError("GGUF exports need llama-cpp-python: pip install 'ragrec[llamacpp]'") from None
    return llama_cpp


def tools_dir() -> Path:
    """llama.cpp's converters for the installed llama-cpp-python (fetched once; see module docstring)."""
    given = os.environ.get("RAGREC_LLAMACPP_TOOLS")
    if given:
        folder = Path(given).expanduser()
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise RagrecError(f"RAGREC_LLAMACPP_TOOLS={given}: no convert_hf_to_gguf.py there")
        return folder
    version = _llama_cpp().__version__
    target = paths.home() / "tools" / f"llama.cpp-{version}"
    if (target / "convert_lora_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               f"llama-cpp-python=={version}", "-d", tmp]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"), None)
        if done.returncode != 0 or sdist is None:
            raise RagrecError(f"could not fetch llama-cpp-python {version}'s source for its converters: "
                              f"{done.stderr.strip()[-500:] or 'no source distribution'}")  # fmt: skip
        with tarfile.open(sdist) as tar, atomic_directory(target) as staging:
            for member in tar.getmembers():
                m = _MEMBERS.match(member.name)
                if m and member.isfile():
                    member.name = m.group(1)
                    tar.extract(member, staging, filter="data")
    return target


def _convert(script: str, args: list[str]) -> None:
    tools = tools_dir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tools / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(tools / script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RagrecError(f"llama.cpp's {script} failed: {done.stderr.strip()[-800:]}")


def _model_folder(model: str) -> Path:
    from ragrec.inference.models import resolve_model

    where, _ = resolve_model(model)
    if not Path(where).is_dir():  # a Hub id: its files, as transformers caches them
        from huggingface_hub import snapshot_download

        where = snapshot_download(where)
    return Path(where)


def _name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name if Path(model).exists() else model).strip("-")


def _check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise RagrecError(f"unknown quantization {quant!r}; valid: {', '.join(QUANTS)}")


def quantize(src: str | PathLike[str], dst: str | PathLike[str], quant: str) -> Path:
    """Quantize GGUF ``src`` to ``quant`` (one of :data:`QUANTS`) as ``dst``."""
    _check_quant(quant)
    llama_cpp = _llama_cpp()
    dst = Path(dst)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    tmp = dst.with_name(f".{dst.name}.tmp")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        tmp.unlink(missing_ok=True)
        raise RagrecError(f"llama.cpp could not quantize {src} to {quant}")
    os.replace(tmp, dst)
    return dst


def export_model(model: str, quant: str = "Q8_0") -> Path:
    """``model`` (alias, folder, .gguf or Hub id, as :func:`~ragrec.inference.load_model` takes it) as a
    GGUF file at ``quant``: converted from its weights at F16 once, then quantized; cached."""
    _check_quant(quant)
    folder = _model_folder(model)
    stem = paths.home() / "models" / "gguf" / _name(model)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = stem.with_name(f"{stem.name}-{quant}.gguf")
    if out.is_file():
        return out
    f16 = stem.with_name(f"{stem.name}-F16.gguf")
    if not f16.is_file():
        tmp = f16.with_name(f".{f16.name}.tmp")
        _convert("convert_hf_to_gguf.py", [str(folder), "--outtype", "f16", "--outfile", str(tmp)])
        os.replace(tmp, f16)
    return f16 if quant == "F16" else quantize(f16, out, quant)


def export_adapter(adapter: str | PathLike[str], base_model: str) -> Path:
    """The peft LoRA folder ``adapter`` (trained on ``base_model``) as a GGUF adapter (F32), cached
    by its weights' SHA-256."""
    from ragrec.inference.adapters import WEIGHTS

    adapter = Path(adapter)
    weights = adapter / WEIGHTS
    if not weights.is_file():
        raise RagrecError(f"{adapter}: no {WEIGHTS} (not a peft LoRA adapter folder)")
    digest = sha256_file(weights)[:16]
    out = paths.home() / "gguf-adapters" / f"{digest}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    _convert("convert_lora_to_gguf.py", ["--base", str(_model_folder(base_model)), "--outtype", "f32",
                                         "--outfile", str(tmp), str(adapter)])  # fmt: skip
    os.replace(tmp, out)
    return out
