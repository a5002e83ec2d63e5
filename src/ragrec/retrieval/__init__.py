"""Candidate retrieval: encoders (EASE, SASRec, ALS/BPR, text, hybrid, popularity), FAISS item indexes, retrievers."""

from ragrec.retrieval.base import ENCODERS, Encoder, load_encoder
from ragrec.retrieval.ease import EASEConfig, EASEEncoder
from ragrec.retrieval.hybrid import HybridEncoder
from ragrec.retrieval.index import ItemIndex
from ragrec.retrieval.mf import MFConfig, MFEncoder
from ragrec.retrieval.popularity import PopularityEncoder
from ragrec.retrieval.retriever import CandidateSource, Retriever
from ragrec.retrieval.sasrec import SASRecConfig, SASRecEncoder, TrainReport
from ragrec.retrieval.text import TextEncoder, TextEncoderConfig

__all__ = [
    "CandidateSource",
    "EASEConfig",
    "EASEEncoder",
    "ENCODERS",
    "Encoder",
    "HybridEncoder",
    "ItemIndex",
    "MFConfig",
    "MFEncoder",
    "PopularityEncoder",
    "Retriever",
    "SASRecConfig",
    "SASRecEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "TrainReport",
    "load_encoder",
]
