"""Bad input and silent failures a new user hit: each is a one-line error (exit 2) or a reported
fallback, never a traceback, never silence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import movie_data, run_cli, tiny_scenario
from ragrec.errors import CacheError
from ragrec.inference import RecommenderConfig, save_recommender
from ragrec.inference.persistence import load_parts
from test_finetune import _csvs


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def scenario_dir(tmp_path):
    inter, items = _csvs(tmp_path, movie_data(), "m")
    code, _, err = run_cli("scenario", "new", "films", "--interactions", str(inter), "--items", str(items),
                           "--root", str(tmp_path / "sc"))  # fmt: skip
    assert code == 0, err
    return tmp_path / "sc"


def test_bad_settings_are_one_line_errors(scenario_dir, tmp_path):
    code, _, err = run_cli("finetune", "--scenario", "films", "--root", str(scenario_dir), "--set", "max_minutz=3")
    _one_line_error(code, err, "max_minutz", "Extra inputs are not permitted", "valid fields:", "max_minutes")
    code, _, err = run_cli("finetune", "--scenario", "films", "--root", str(scenario_dir), "--set", "quantization=3bit")
    _one_line_error(code, err, "quantization", "'auto', 'none' or '4bit'", "got '3bit'")
    rec = save_recommender(tmp_path / "rec", [tiny_scenario()], RecommenderConfig(model="none", device="cpu"))
    code, _, err = run_cli("recommend", str(rec), "--user", "u1", "--quantization", "3bit")
    _one_line_error(code, err, "quantization", "'none', '8bit' or '4bit'", "got '3bit'")
    inter = tmp_path / "m_ratings.csv"
    code, _, err = run_cli("scenario", "new", "bad name!", "--interactions", str(inter), "--root", str(tmp_path))
    _one_line_error(code, err, "bad scenario name 'bad name!'")
    code, _, err = run_cli("scenario", "new", "films", "--interactions", str(inter), "--root", str(scenario_dir))
    _one_line_error(code, err, "exists; pass --force")


def _adapter_recommender(tiny_lm_dir, tmp_path):
    """A saved recommender whose scenario carries a real (random) LoRA adapter with ragrec metadata."""
    from peft import LoraConfig, get_peft_model

    from ragrec.inference.adapters import AdapterInfo, model_fingerprint, save_adapter
    from ragrec.inference.models import load_model
    from ragrec.prompts import builtin_registry

    loaded = load_model(str(tiny_lm_dir), device="cpu")
    model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    info = AdapterInfo(str(tiny_lm_dir), model_fingerprint(model), "movies", {"rank": 1}, {}, "train")
    adapter = save_adapter(model, "default", tmp_path / "adapter", info)
    sc = tiny_scenario(adapter=adapter)
    sc.templates.add(builtin_registry().get("default", "rank").model_copy(update={"scenario": "movies"}))
    rec = save_recommender(tmp_path / "rec", [sc],
                           RecommenderConfig(model=str(tiny_lm_dir), device="cpu"))  # fmt: skip
    load_parts(rec)  # intact: loads
    return rec, rec / "scenarios" / "movies"


def test_damaged_saved_recommender_is_refused(tiny_lm_dir, tmp_path):
    rec, sc = _adapter_recommender(tiny_lm_dir, tmp_path)
    backup = tmp_path / "backup"
    shutil.copytree(sc, backup)

    def restore():
        shutil.rmtree(sc)
        shutil.copytree(backup, sc)

    (sc / "adapter" / "adapter_config.json").write_bytes(b"\xff\xfe garbage \x00")
    with pytest.raises(CacheError, match="adapter_config.json: corrupt"):
        load_parts(rec)
    restore()
    shutil.rmtree(sc / "adapter")
    with pytest.raises(CacheError, match="saved with adapter/, which is missing"):
        load_parts(rec)
    restore()
    (sc / "adapter" / "ragrec_adapter.json").unlink()
    with pytest.raises(CacheError, match="ragrec_adapter.json missing"):
        load_parts(rec)
    restore()
    (sc / "templates" / "rank.yaml").unlink()
    with pytest.raises(CacheError, match="templates/rank.yaml, which is missing"):
        load_parts(rec)
    restore()
    (sc / "adapter" / "adapter_model.safetensors").write_bytes(b"0" * 64)
    with pytest.raises(CacheError, match="does not match the checksum"):
        load_parts(rec)
    restore()
    load_parts(rec)
    code, _, err = run_cli("recommend", str(rec), "--user", "u1")
    assert code == 0, err
    shutil.rmtree(sc / "adapter")
    code, _, err = run_cli("recommend", str(rec), "--user", "u1")
    _one_line_error(code, err, "adapter/, which is missing")


def test_scenario_new_guesses_time_says_what_it_mapped_and_validates(tmp_path):
    data = movie_data()
    inter = data.interactions_frame()
    days = pd.to_datetime("2020-01-01") + pd.to_timedelta(inter["timestamp"].astype(int), unit="D")
    frame = pd.DataFrame({"who": inter["user_id"], "item": inter["item_id"], "when": days.dt.strftime("%Y-%m-%d"),
                          "shop": "x"})  # fmt: skip
    frame = frame.iloc[::-1]  # file order is not time order: only the timestamps can sort it
    frame.to_csv(tmp_path / "log.csv", index=False)
    _, items = _csvs(tmp_path, data, "m")
    code, out, err = run_cli("scenario", "new", "shop", "--interactions", str(tmp_path / "log.csv"), "--items",
                             str(items), "--column", "user_id=who", "--root", str(tmp_path / "sc"))  # fmt: skip
    assert code == 0, err
    assert "timestamp <- 'when'" in out and "read as datetime (guessed from the first rows)" in out
    assert "ignored in log.csv: 'shop'" in out
    assert "10 users, 12 items" in out
    from ragrec.finetune.scenario import load_spec

    spec = load_spec(tmp_path / "sc" / "shop")
    assert spec.data.interactions.columns["timestamp"] == "when"
    assert spec.data.interactions.timestamp_format == "datetime"
    # Files finetune would reject are refused at creation, and nothing is written.
    items_frame = pd.read_csv(items)
    dup = pd.concat([items_frame, items_frame.iloc[[0]].assign(name="another title")])
    dup.to_csv(tmp_path / "dup.csv", index=False)
    code, _, err = run_cli("scenario", "new", "dup", "--interactions", str(tmp_path / "log.csv"), "--items",
                           str(tmp_path / "dup.csv"), "--column", "user_id=who", "--root", str(tmp_path / "sc"))  # fmt: skip
    _one_line_error(code, err, "dup.csv")
    assert not (tmp_path / "sc" / "dup").exists()
    raw = (tmp_path / "log.csv").read_bytes().replace(b"2020-01-0", "2020-01-0\xe9".encode("latin-1"), 1)
    (tmp_path / "latin.csv").write_bytes(raw)
    code, _, err = run_cli("scenario", "new", "latin", "--interactions", str(tmp_path / "latin.csv"), "--column",
                           "user_id=who", "--root", str(tmp_path / "sc"))  # fmt: skip
    _one_line_error(code, err, "latin.csv")
    assert not (tmp_path / "sc" / "latin").exists()


def test_empty_history_gets_the_reported_popularity_fallback(tmp_path, tiny_lm_dir):
    rec = save_recommender(tmp_path / "rec", [tiny_scenario()], RecommenderConfig(model=str(tiny_lm_dir), device="cpu"))
    code, out, err = run_cli("recommend", str(rec), "--history", "", "-k", "2")
    assert code == 0, err
    assert "empty history: popularity" in err and len(out.strip().splitlines()) == 2
    assert "kernels-community" not in err  # bitsandbytes' Hub-kernel notice is not printed
    code, _, err = run_cli("recommend", str(rec), "-k", "2")
    _one_line_error(code, err, "pass --user or --history")


def test_recommender_build_needs_force_to_replace(tmp_path, tiny_lm_dir):
    data = movie_data("movies").save(tmp_path / "movies")
    out = tmp_path / "rec"
    args = ["recommender", "build", str(data), "--out", str(out), "--no-text", "--model", str(tiny_lm_dir)]
    assert run_cli(*args)[0] == 0
    before = (out / "recommender.json").read_text()
    code, _, err = run_cli(*args)
    _one_line_error(code, err, "exists; pass --force")
    assert (out / "recommender.json").read_text() == before
    code, _, err = run_cli(*args, "--force")
    assert code == 0, err


def test_killed_writer_leaves_nothing_behind_for_long(tmp_path):
    """A SIGKILLed atomic write leaves its staging folder; the next write of the path removes it,
    and a lone backup (killed between the two renames) is restored, not deleted."""
    from ragrec.io import atomic_directory, clean_stale

    target = tmp_path / "out"
    script = (f"import os, signal\nfrom ragrec.io import atomic_directory\n"
              f"with atomic_directory({str(target)!r}) as s:\n"
              f"    (s / 'half').write_text('x')\n    os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    orphans = list(tmp_path.glob(".out.new-*"))
    assert len(orphans) == 1 and not target.exists()
    with atomic_directory(target) as s:
        (s / "ok").write_text("y")
    assert not list(tmp_path.glob(".out.new-*")) and (target / "ok").is_file()
    # A live writer's staging folder is left alone.
    live = tmp_path / f".out.new-{os.getpid()}-abc"
    live.mkdir()
    assert clean_stale(target) == [] and live.is_dir()
    live.rmdir()
    # Killed between "old -> backup" and "staging -> path": the backup comes back.
    backup = tmp_path / ".out.old-999999999-xyz"
    target.rename(backup)
    assert clean_stale(target) == [backup] and (target / "ok").is_file()


def test_time_limit_counts_steps_and_the_final_validation(monkeypatch):
    """max_minutes holds for the loop and its validations: with 10 s steps and a 15 s validation,
    a 1-minute limit stops when one more step plus the final validation would pass 60 s."""
    from types import SimpleNamespace

    from ragrec.finetune import trainer

    clock = [0.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])
    limit = trainer._time_limit(1.0)
    limit.on_train_begin(None, None, None)
    stopped_at = None
    for step in range(1, 20):
        clock[0] += 10.0
        control = SimpleNamespace(should_training_stop=False, should_evaluate=step % 2 == 0, should_save=False)
        limit.on_step_end(None, None, control)
        if control.should_evaluate:
            clock[0] += 15.0  # the validation that runs after this step
            limit.on_evaluate(None, None, control, metrics={"eval_runtime": 15.0})
        if control.should_training_stop:
            stopped_at = clock[0]
            break
    assert limit.hit and stopped_at is not None
    assert stopped_at <= 60.0, stopped_at  # the final validation included
    assert stopped_at + 10.0 + 15.0 > 60.0  # and not stopped needlessly early


def test_cli_error_for_every_config_model_names_fields():
    from pydantic import ValidationError

    from ragrec.config import validation_message
    from ragrec.finetune import FinetuneConfig

    with pytest.raises(ValidationError) as e:
        FinetuneConfig(max_minutz=3)
    line = validation_message(e.value)
    assert line.startswith("FinetuneConfig: max_minutz: Extra inputs are not permitted") and "learning_rate" in line
    assert "\n" not in line


def test_bitsandbytes_hub_kernel_notice_is_dropped(caplog):
    """bitsandbytes warns at import (on AVX512-BF16 CPUs) that it cannot fetch a Hub kernel; ragrec
    drops that one line and nothing else of bitsandbytes' logger."""
    import logging

    import ragrec  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "no module")
        logger.warning("another bitsandbytes warning")
    assert "kernels-community" not in caplog.text and "another bitsandbytes warning" in caplog.text
