"""Candidate retrieval: encoders, FAISS item indexes and retrievers (see issue #3)."""
