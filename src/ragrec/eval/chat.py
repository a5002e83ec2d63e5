"""Chat answers kept without fallback: the validation metric of the ``chat`` task.

For each evaluated user a short conversation (:data:`VALIDATION_CONVERSATION`: a request, then a
question about the first item offered) runs over the user's history at that point (train for
``valid``, train + valid for ``test``), the list "the first one" refers to being the retriever's
top items (no model call). ``chat_kept`` is the share of turns whose answer is the model's own
text (its complete sentences passed the grounding check and named the items offered), not the
data-built fallback; the answers are returned for a person to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.eval.protocol import eval_target_sets
from ragrec.inference.chat import ChatAnswer, ChatSession
from ragrec.inference.recommender import Recommender
from ragrec.types import UserHistory

__all__ = ["VALIDATION_CONVERSATION", "ChatEval", "evaluate_chat"]

# Worded unlike the training question bank (finetune.examples.CHAT_QUESTIONS) and the benchmark's script.
VALIDATION_CONVERSATION = ("what would you recommend to me?", "why is the first one on the list?")


@dataclass
class ChatEval:
    """The turns played (``answers[user]``: one :class:`ChatAnswer` per turn)."""

    answers: dict[str, list[ChatAnswer]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        turns = [a for user in self.answers.values() for a in user]
        if not turns:
            raise RagrecError("no chat turns were evaluated")
        return {"chat_kept": sum(a.fallback is None for a in turns) / len(turns), "chat_turns": float(len(turns))}


def evaluate_chat(
    rec: Recommender,
    scenario: str | None = None,
    *,
    split: str = S.VALID,
    users: Sequence[str],
    conversation: Sequence[str] = VALIDATION_CONVERSATION,
    progress: bool = True,
) -> ChatEval:
    """Play ``conversation`` for each of ``users`` (with a held-out ``split`` interaction) over their
    history before it."""
    if split not in (S.VALID, S.TEST):
        raise RagrecError(f"split must be {S.VALID!r} or {S.TEST!r}, got {split!r}")
    sc = rec.scenario(scenario)
    users, histories, _ = eval_target_sets(sc.data, split, users)  # the history before the held-out interaction
    out = ChatEval()
    for user, items in tqdm(list(zip(users, histories)), desc="chat", disable=not progress):
        if not items:
            continue
        session = ChatSession(rec, sc, UserHistory(user, tuple(items)), user_id=None)
        session.show_retrieved()
        out.answers[user] = [session.ask(q) for q in conversation]
    return out
