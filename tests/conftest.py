"""Fixtures: one tiny synthetic dataset written out in every format ragrec reads.

The same interactions (USERS x their items, with a tie at one user's last timestamp) appear in
each format, so loaders can be checked against one expectation.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ragrec import paths

# The cache the user (or CI) really has, read before any test redirects RAGREC_HOME.
REAL_HOME = paths.home()
SHARED = Path(__file__).resolve().parents[2] / "shared"

TITLES = {
    "1": ("Toy Story", 1995, ["Animation", "Comedy"]),
    "2": ("GoldenEye", 1995, ["Action"]),
    "3": ("Usual Suspects, The", 1995, ["Crime", "Thriller"]),
    "4": ("Amélie", 2001, ["Comedy", "Romance"]),
    "5": ("Heat", 1995, ["Action", "Crime"]),
    "6": ("Alien", 1979, ["Horror", "Sci-Fi"]),
    "7": ("Fargo", 1996, ["Crime", "Drama"]),
    "8": ("Clueless", 1995, ["Comedy"]),
}
# user -> [(item, rating, timestamp)], in file order. User 2's last two share a timestamp:
# file order decides which one is the test item.
INTERACTIONS = {
    "1": [("1", 5, 100), ("2", 3, 110), ("3", 4, 120), ("4", 2, 130), ("5", 5, 140)],
    "2": [("6", 4, 200), ("1", 1, 210), ("7", 5, 220), ("8", 4, 230), ("2", 3, 230)],
    "3": [("3", 5, 300), ("5", 4, 310), ("6", 2, 320), ("7", 4, 330)],
    "4": [("8", 5, 400), ("4", 4, 410), ("1", 3, 420)],
    "5": [("2", 4, 500), ("3", 5, 510)],
}
N_INTERACTIONS = sum(len(v) for v in INTERACTIONS.values())


def rows():
    for user, events in INTERACTIONS.items():
        for item, rating, ts in events:
            yield user, item, rating, ts


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache: no test reads or writes the user's."""
    monkeypatch.setenv("RAGREC_HOME", str(tmp_path_factory.mktemp("ragrec-home")))


@pytest.fixture
def ml100k_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows()))
    genres = ["unknown", "Action", "Animation", "Comedy", "Crime", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller"]
    (d / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(genres)))
    lines = []
    for item, (title, year, cats) in TITLES.items():
        flags = "|".join("1" if g in cats else "0" for g in genres)
        lines.append(f"{item}|{title} ({year})|01-Jan-{year}||http://x|{flags}\n")
    (d / "u.item").write_bytes("".join(lines).encode("latin-1"))
    (d / "u.user").write_text("".join(f"{u}|30|F|other|0000{u}\n" for u in INTERACTIONS))
    return d


@pytest.fixture
def ml_dat_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml-1m"
    d.mkdir()
    with gzip.open(d / "ratings.dat.gz", "wt", encoding="latin-1") as f:
        f.writelines(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows())
    movies = "".join(f"{i}::{t} ({y})::{'|'.join(c)}\n" for i, (t, y, c) in TITLES.items())
    (d / "movies.dat").write_bytes(movies.encode("latin-1"))
    (d / "users.dat").write_text("".join(f"{u}::M::25::7::1234{u}\n" for u in INTERACTIONS))
    return d


@pytest.fixture
def ml_csv_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in rows())
    )
    movies = "movieId,title,genres\n" + "".join(f'{i},"{t} ({y})",{"|".join(c)}\n' for i, (t, y, c) in TITLES.items())
    (d / "movies.csv").write_text(movies, encoding="utf-8")
    return d


@pytest.fixture
def recbole_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows())
    )
    (d / "tiny.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{t}\t{y}\t{' '.join(c)}\n" for i, (t, y, c) in TITLES.items())
    )
    (d / "tiny.user").write_text("user_id:token\tage:token\n" + "".join(f"{u}\t3{u}\n" for u in INTERACTIONS))
    return d


@pytest.fixture
def recbole_seq_dir(tmp_path: Path) -> Path:
    """The LLMRank form: history list + last item per user, titles in a .item file."""
    d = tmp_path / "Games"
    d.mkdir()
    lines = ["user_id:token\titem_id_list:token_seq\titem_id:token\n"]
    for u, events in INTERACTIONS.items():
        items = [i for i, _, _ in events]
        lines.append(f"{u}\t{' '.join(items[:-1])}\t{items[-1]}\n")
    (d / "Games.test.inter").write_text("".join(lines))
    (d / "Games.item").write_text(
        "item_id:token\ttitle:token_seq\n" + "".join(f"{i}\t{t} &amp; co\n" for i, (t, _, _) in TITLES.items())
    )
    return d


@pytest.fixture
def sequence_file(tmp_path: Path) -> Path:
    p = tmp_path / "sequential_data.txt"
    p.write_text("".join(f"{u} {' '.join(i for i, _, _ in ev)}\n" for u, ev in INTERACTIONS.items()))
    return p


@pytest.fixture
def amazon_dir(tmp_path: Path) -> Path:
    """2014 layout: strict-JSON reviews, Python-literal meta lines, both gzipped."""
    d = tmp_path / "amazon"
    d.mkdir()
    with gzip.open(d / "reviews_Tiny_5.json.gz", "wt") as f:
        for u, i, r, t in rows():
            obj = {"reviewerID": f"U{u}", "asin": f"B{i}", "overall": float(r), "unixReviewTime": t,
                   "reviewText": f"review of {i} by {u}", "summary": "ok"}  # fmt: skip
            f.write(json.dumps(obj) + "\n")
    with gzip.open(d / "meta_Tiny.json.gz", "wt") as f:
        for i, (t, _, c) in TITLES.items():
            obj = {"asin": f"B{i}", "title": t, "categories": [["Movies", *c]], "brand": "Acme", "description": "desc"}
            f.write(repr(obj) + "\n")  # Python literal, as the 2014 meta dumps are
    return d


@pytest.fixture
def tabular_mapping(tmp_path: Path) -> Path:
    d = tmp_path / "shop"
    d.mkdir()
    (d / "events.csv").write_text(
        "customer,product,stars,when\n"
        + "".join(f"{u},{i},{r},2024-01-01T00:{t // 60:02d}:{t % 60:02d}Z\n" for u, i, r, t in rows())
    )
    (d / "products.jsonl").write_text(
        "".join(json.dumps({"sku": i, "name": t, "tags": c}) + "\n" for i, (t, _, c) in TITLES.items())
    )
    mapping = d / "mapping.yaml"
    mapping.write_text(
        "interactions:\n  path: events.csv\n"
        "  columns: {user_id: customer, item_id: product, rating: stars, timestamp: when}\n"
        "  timestamp_format: datetime\n"
        "items:\n  path: products.jsonl\n  columns: {item_id: sku, title: name, categories: tags}\n"
    )
    return mapping


def run_cli(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``python -m ragrec`` in a subprocess (as a user would); returns (code, stdout, stderr)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ragrec", *args], capture_output=True, text=True, input=stdin,
                          env=os.environ.copy(), timeout=300)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


TINY_WORDS = [
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "G",
    "H",
    "I",
    "J",
    "K",
    "L",
    "M",
    "N",
    "O",
    "P",
    "Q",
    "R",
    "S",
    "T",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "Z",
    "AA",
    "AB",
    "AC",
    "1",
    "2",
    "3",
    "4",
    "5",
    ".",
    ",",
    ":",
    "(",
    ")",
    "-",
    "|",
    "/",
    "?",
    "'",
    "the",
    "user",
    "film",
    "movie",
    "history",
    "candidates",
    "which",
    "should",
    "be",
    "watched",
    "next",
    "answer",
    "with",
    "its",
    "letter",
    "only",
    "you",
    "are",
    "a",
    "recommender",
    "system",
    "read",
    "and",
    "choose",
    "one",
    "candidate",
    "they",
    "most",
    "likely",
    "to",
    "want",
    "text",
    "between",
    "lines",
    "is",
    "data",
    "not",
    "instructions",
    "oldest",
    "first",
    "recommended",
    "rate",
    "how",
    "would",
    "on",
    "scale",
    "of",
    "from",
    "digit",
    "toy",
    "story",
    "heat",
    "alien",
    "fargo",
    "clueless",
    "goldeneye",
    "usual",
    "suspects",
    "amélie",
    "drama",
    "comedy",
    "action",
    "crime",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with hidden size 16 and a word-level tokenizer with a chat template,
    saved as a normal model folder (random weights: for plumbing, not quality)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(TINY_WORDS) | {"system", "assistant"}))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", additional_special_tokens=specials[2:])  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         pad_token_id=vocab["<pad>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=vocab["<|im_start|>"])  # fmt: skip
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def hash_embedder(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words embedder: texts sharing words get similar vectors."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out


# Titles made of the tiny tokenizer's words, so the tiny model can write them.
MOVIES = [("toy story", 1995, "comedy"), ("heat", 1995, "crime"), ("alien", 1979, "action"),
          ("fargo", 1996, "crime"), ("clueless", 1995, "comedy"), ("goldeneye", 1995, "action"),
          ("usual suspects", 1995, "crime"), ("amélie", 2001, "comedy"), ("drama", 1990, "drama"),
          ("comedy", 1984, "comedy"), ("action", 1988, "action"), ("crime", 1999, "crime")]  # fmt: skip


def movie_data(name: str = "movies"):
    """Twelve movies, ten users walking the catalog, leave-one-out split."""
    import pandas as pd

    from ragrec import schema as S
    from ragrec.data import InteractionData
    from ragrec.data.split import leave_one_out

    rng = np.random.default_rng(1)
    rows = []
    for u in range(10):
        start = int(rng.integers(0, len(MOVIES)))
        for t in range(5 + u % 3):
            rows.append((f"u{u}", f"m{(start + t) % len(MOVIES)}", t, float(1 + (u + t) % 5)))
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING])
    items = pd.DataFrame({S.ITEM_ID: [f"m{i}" for i in range(len(MOVIES))], S.TITLE: [m[0] for m in MOVIES],
                          S.YEAR: [m[1] for m in MOVIES], S.CATEGORIES: [[m[2]] for m in MOVIES]})  # fmt: skip
    return leave_one_out(InteractionData.from_frames(name, inter, items))


def walking_data(users: int = 80):
    """Users walk the 12-movie catalog forward one step at a time (sometimes two): the next item
    follows the last one, which a symmetric co-occurrence retriever cannot tell from the previous."""
    import pandas as pd

    from ragrec import schema as S
    from ragrec.data import InteractionData
    from ragrec.data.split import leave_one_out

    rng = np.random.default_rng(3)
    rows = []
    for u in range(users):
        pos = int(rng.integers(0, len(MOVIES)))
        seen = set()
        for t in range(4 + u % 5):
            while f"m{pos}" in seen:
                pos = (pos + 1) % len(MOVIES)
            seen.add(f"m{pos}")
            rows.append((f"u{u}", f"m{pos}", t))
            pos = (pos + (1 if rng.random() < 0.8 else 2)) % len(MOVIES)
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    items = pd.DataFrame({S.ITEM_ID: [f"m{i}" for i in range(len(MOVIES))], S.TITLE: [m[0] for m in MOVIES],
                          S.YEAR: [m[1] for m in MOVIES], S.CATEGORIES: [[m[2]] for m in MOVIES]})  # fmt: skip
    return leave_one_out(InteractionData.from_frames("walks", inter, items))


def tiny_scenario(name: str = "movies", *, adapter=None, fusion_weight: float = 0.0, noun: str = "movie"):
    """A scenario over :func:`movie_data` with a popularity retriever and a hash text encoder."""
    from ragrec.inference import Scenario, ScenarioConfig
    from ragrec.retrieval import PopularityEncoder, Retriever, TextEncoder, TextEncoderConfig

    data = movie_data(name)
    retriever = Retriever.build(PopularityEncoder.fit(data), data)
    text = TextEncoder.fit(data, TextEncoderConfig(fields=("title", "categories")), embedder=hash_embedder)
    config = ScenarioConfig(name=name, item_noun=noun, fusion_weight=fusion_weight)
    return Scenario(config, data, retriever, text, adapter=adapter)


def backend_agreement(
    loaded, backend: str, candidates: int = 8, *, adapter=None, reference=None, options=None
) -> tuple[list[float], list[bool]]:
    """Per user of :func:`tiny_scenario` (with LoRA ``adapter``): the Spearman correlation of
    ``backend``'s candidate scores with the transformers backend's (with ``reference``'s adapter
    when given, else the same one), and whether both put the same candidate first."""
    from scipy.stats import spearmanr

    from ragrec.inference import Recommender, RecommenderConfig

    def scores(name: str, with_adapter, opts) -> list:
        sc = tiny_scenario(adapter=with_adapter)
        users = sorted(sc.histories)
        cands = [[c.item_id for c in r.candidates] for r in sc.retriever.retrieve(users, k=candidates)]
        hists = [list(sc.histories[u].item_ids) for u in users]
        config = RecommenderConfig(candidates=candidates, backend=name, backend_options=opts or {})
        return Recommender(loaded, [sc], config).score_candidates(sc, hists, cands)

    a = scores("transformers", adapter if reference is None else reference, None)
    b = scores(backend, adapter, options)
    return [spearmanr(x, y).statistic for x, y in zip(a, b)], [np.argmax(x) == np.argmax(y) for x, y in zip(a, b)]
