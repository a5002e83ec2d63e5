"""Constrained generation: the model writes item titles, and can only write titles that exist.

Decoding goes through ``prefix_allowed_tokens_fn``: a trie over the token sequences of the
allowed titles (candidates or the whole catalog) says which tokens may come next. After a
complete title the model may write the separator (newline) to start another, or end. A title
is mapped back to its item by its trie path, never by matching decoded text, so every
recommendation is a catalog item by construction; a title already written is not offered again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ragrec.errors import RagrecError
from ragrec.inference.backends import Decoding
from ragrec.inference.runner import PromptRunner
from ragrec.prompts import chat_text, history_block, sanitize
from ragrec.types import Item

__all__ = ["TitleTrie", "ConstrainedGenerator", "GeneratedList"]


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    item_ids: list[str] = field(default_factory=list)  # items whose title ends here
    titles: int = 0  # distinct titles ending at or below this node


class TitleTrie:
    """Token-id trie of item titles. Items sharing a title share its terminal node."""

    def __init__(self, tokenizer, items: Sequence[Item], max_title_chars: int = 80) -> None:
        self.root = _Node()
        self.size = 0
        for item in items:
            title = sanitize(item.title, max_title_chars)
            if not title:
                continue
            ids = tokenizer.encode(title, add_special_tokens=False)
            node = self.root
            for t in ids:
                node = node.children.setdefault(t, _Node())
            node.item_ids.append(item.item_id)
            self.size += 1
        if not self.size:
            raise RagrecError("no item with a title to generate from")
        order, stack = [], [self.root]  # count titles below each node, children before parents
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children.values())
        for node in reversed(order):
            node.titles = bool(node.item_ids) + sum(c.titles for c in node.children.values())

    def walk(self, tokens: Sequence[int]) -> _Node | None:
        node = self.root
        for t in tokens:
            node = node.children.get(t)
            if node is None:
                return None
        return node


@dataclass(frozen=True)
class GeneratedList:
    """Items the model wrote, in order, with the raw text for inspection."""

    item_ids: tuple[str, ...]
    text: str


class ConstrainedGenerator(PromptRunner):
    """Generates up to ``n`` titles from a trie with the ``generate`` template (greedy)."""

    output_kind = "text"

    def setup(self) -> None:
        loaded = self.loaded
        # Titles are separated by a newline (one per line), or by ';' / '|' where the tokenizer
        # has no single newline token.
        for text in ("\n", ";", "|"):
            sep = loaded.single_token_id(text)
            if sep is not None:
                self.sep, self.sep_text = sep, text
                break
        else:
            raise RagrecError("the tokenizer has no single-token separator (newline, ';' or '|') for titles")
        self.eos = loaded.tokenizer.eos_token_id

    def _allowed(
        self, trie: TitleTrie, generated: list[int], n: int, excluded: frozenset[tuple[int, ...]] = frozenset()
    ) -> list[int]:
        # Split what was generated into finished titles and the title in progress.
        parts, current = [], []
        for t in generated:
            if t == self.sep:
                parts.append(current)
                current = []
            else:
                current.append(t)
        done = [p for p in parts if p]
        if len(done) >= n:
            return [self.eos]
        node = trie.walk(current)
        if node is None:  # cannot happen under the constraint; end safely
            return [self.eos]
        written = {tuple(p) for p in done} | excluded
        # A branch stays open while it holds a title not yet written (written titles are few).
        depth = len(current)
        below: dict[int, int] = {}
        for p in written:
            if len(p) > depth and list(p[:depth]) == current:
                below[p[depth]] = below.get(p[depth], 0) + 1
        allowed = [t for t, child in node.children.items() if child.titles > below.get(t, 0)]
        if node.item_ids and tuple(current) not in written and current:
            allowed += [self.sep, self.eos]
        return allowed or [self.eos]

    def generate(
        self,
        history: Sequence[Item],
        allowed: Sequence[Item] | TitleTrie,
        *,
        n: int = 5,
        item_noun: str = "item",
        exclude: Sequence[Item] = (),
    ) -> GeneratedList:
        """Up to ``n`` distinct items from ``allowed`` (titles decoded under the trie constraint).

        ``allowed`` is a list of items, or a :class:`TitleTrie` built once over them (a catalog
        trie is worth keeping: building it tokenizes every title). Titles of ``exclude`` (e.g. the
        user's history) are never written, as if already written."""
        return self.generate_many([history], allowed, n=n, item_noun=item_noun, excludes=[exclude])[0]

    def generate_many(
        self,
        histories: Sequence[Sequence[Item]],
        allowed: Sequence[Item] | TitleTrie,
        *,
        n: int = 5,
        item_noun: str = "item",
        excludes: Sequence[Sequence[Item]] | None = None,
    ) -> list[GeneratedList]:
        """:meth:`generate` for several users in one batched decode on the backend (each row keeps
        its own constraint and exclusions); the same lists as one call per user."""
        if n < 1:
            raise RagrecError(f"n must be >= 1, got {n}")
        excludes = list(excludes) if excludes is not None else [()] * len(histories)
        if len(excludes) != len(histories):
            raise RagrecError(f"{len(excludes)} exclusion lists for {len(histories)} histories")
        if not histories:
            return []
        tok = self.loaded.tokenizer
        trie = allowed if isinstance(allowed, TitleTrie) else TitleTrie(tok, allowed, self.budget.max_item_chars)
        prompts = [
            chat_text(
                tok,
                self.template.render({"item_noun": item_noun, "history": history_block(h, self.budget), "n": str(n)}),
            )  # fmt: skip
            for h in histories
        ]
        excluded = [
            frozenset(
                tuple(tok.encode(sanitize(i.title, self.budget.max_item_chars), add_special_tokens=False))
                for i in ex
                if i.title
            )
            for ex in excludes
        ]
        max_new = min(self.template.output.max_new_tokens * max(1, n), 64 * n)
        decoding = Decoding(max_new, allowed=lambda row, ids: self._allowed(trie, ids, n, excluded[row]),
                            eos_token_id=self.eos)  # fmt: skip
        out = self.backend.generate(prompts, decoding)
        return [self._items(trie, ids, n) for ids in out]

    def _items(self, trie: TitleTrie, generated: list[int], n: int) -> GeneratedList:
        tok = self.loaded.tokenizer
        items: list[str] = []
        current: list[int] = []
        for t in [*generated, self.sep]:
            if t in (self.sep, self.eos):
                node = trie.walk(current) if current else None
                if node is not None and node.item_ids:
                    items.extend(i for i in node.item_ids if i not in items)
                current = []
                if t == self.eos:
                    break
            else:
                current.append(t)
        return GeneratedList(tuple(items[:n]), tok.decode(generated, skip_special_tokens=True))
