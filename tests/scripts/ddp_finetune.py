"""Fine-tune the tiny test model under `accelerate launch` (tests/test_finetune.py, slow tier)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import movie_data  # noqa: E402
from ragrec import schema as S  # noqa: E402
from ragrec.finetune import FinetuneConfig, finetune  # noqa: E402
from ragrec.inference import RecommenderConfig, Scenario, ScenarioConfig, load_model  # noqa: E402
from ragrec.retrieval import PopularityEncoder, Retriever  # noqa: E402


def main(model_dir: str, out: str) -> None:
    data = movie_data()
    sc = Scenario(
        ScenarioConfig(name="movies"), data, Retriever.build(PopularityEncoder.fit(data, splits=(S.TRAIN,)), data)
    )
    config = FinetuneConfig(examples=16, candidates=6, max_steps=2, eval_steps=1, eval_users=4, grad_accum=1,
                            lora_r=2, lora_layers=1)  # fmt: skip
    res = finetune(load_model(model_dir, device="cpu"), sc, config, out, rec_config=RecommenderConfig(candidates=6),
                   progress=False)  # fmt: skip
    print(f"RESULT steps={res.steps} world={res.info.train.get('processes')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
