"""Feedback into a recommender: replay at start-up, and ``ragrec retrain``.

:func:`replay` applies stored feedback that the serving version does not hold yet (new items,
then interactions, in the order they were acknowledged) to a loaded recommender.
:func:`retrain` rebuilds every scenario's retriever from its data plus the stored feedback with
the same encoder settings (fitted on everything known: train, validation and feedback; the
held-out test split stays out), writes a new version folder atomically and publishes it; a
running service loads it in the background and switches between two requests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from ragrec import schema as S
from ragrec.serve.store import Deployment, FeedbackStore, Interaction, StoredItem, Version

__all__ = ["replay", "retrain", "ReplayReport"]


@dataclass
class ReplayReport:
    """What :func:`replay` applied; ``skipped`` says what it could not (e.g. a scenario removed)."""

    items: int = 0
    interactions: int = 0
    skipped: list[str] = field(default_factory=list)
    items_through: int = 0  # the newest stored ids read: a later replay continues after them
    interactions_through: int = 0


def replay(rec, store: FeedbackStore, version: Version) -> ReplayReport:
    """Apply ``store``'s feedback newer than ``version`` to ``rec`` (a :class:`~ragrec.inference.Recommender`)."""
    report = ReplayReport(items_through=version.items_through, interactions_through=version.interactions_through)
    items: dict[str, list[StoredItem]] = defaultdict(list)
    for row in store.items(after=version.items_through):
        items[row.scenario].append(row)
        report.items_through = row.id
    for scenario, rows in items.items():
        if scenario not in rec.scenarios:
            report.skipped.append(f"{len(rows)} new items of scenario {scenario!r}, which this version lacks")
            continue
        sc = rec.scenarios[scenario]
        fresh = [r.item for r in rows if r.item.item_id not in sc.catalog]
        if fresh:
            sc.add_items(fresh)
        report.items += len(fresh)
    by_user: dict[tuple[str, str], list[Interaction]] = defaultdict(list)
    for row in store.interactions(after=version.interactions_through):
        by_user[(row.scenario, row.user_id)].append(row)
        report.interactions_through = row.id
    for (scenario, user), rows in by_user.items():
        sc = rec.scenarios.get(scenario)
        known = [r for r in rows if sc is not None and r.item_id in sc.catalog]
        if len(known) < len(rows):
            report.skipped.append(f"{len(rows) - len(known)} interactions of a user in {scenario!r}: "
                                  "scenario or item missing in this version")  # fmt: skip
        if known:
            sc.add_interactions(user, [r.item_id for r in known], [r.timestamp for r in known],
                                [r.rating for r in known])  # fmt: skip
            report.interactions += len(known)
    return report


def _with_feedback(data, items: list[StoredItem], interactions: list[Interaction]):
    """``data`` plus new catalog items and feedback interactions (in the train split)."""
    if not items and not interactions:
        return data
    item_frame = data.items_frame()
    if items:
        new = pd.DataFrame([{S.ITEM_ID: r.item.item_id, S.TITLE: r.item.title, S.YEAR: r.item.year,
                             S.CATEGORIES: list(r.item.categories) or None, S.BRAND: r.item.brand,
                             S.DESCRIPTION: r.item.description} for r in items])  # fmt: skip
        new = new[~new[S.ITEM_ID].isin(item_frame[S.ITEM_ID])]
        item_frame = pd.concat([item_frame, new], ignore_index=True)
    inter = data.interactions_frame()
    if interactions:
        rows = pd.DataFrame({S.USER_ID: [r.user_id for r in interactions], S.ITEM_ID: [r.item_id for r in interactions],
                             S.TIMESTAMP: [r.timestamp for r in interactions],
                             S.RATING: [r.rating for r in interactions]})  # fmt: skip
        rows[S.SCENARIO] = inter[S.SCENARIO].iloc[0] if len(inter) else S.DEFAULT_SCENARIO
        if S.SPLIT in inter:
            rows[S.SPLIT] = S.TRAIN
        inter = pd.concat([inter, rows], ignore_index=True)
    return data.replace(inter, items=item_frame, info_update={"feedback_interactions": len(interactions),
                                                               "feedback_items": len(items)})  # fmt: skip


def retrain(
    deployment: Deployment, *, embedder=None, progress: bool = False, log: Callable[[str], None] = lambda s: None
) -> Version:
    """Rebuild the serving version's retrievers with the stored feedback; write and publish the
    new version (see module docstring). Adapters, templates, fusion and rerankers are carried over."""
    from ragrec.inference import Scenario
    from ragrec.inference.persistence import load_parts, save_recommender
    from ragrec.pipeline import refit_encoder
    from ragrec.retrieval import Retriever

    current = deployment.current()
    config, scenarios = load_parts(current.path, embedder=embedder)
    store = deployment.open_store()
    try:
        last_interaction, last_item = store.last_ids()
        items = [r for r in store.items(after=current.items_through) if r.id <= last_item]
        interactions = [r for r in store.interactions(after=current.interactions_through) if r.id <= last_interaction]
    finally:
        store.close()
    rebuilt = []
    for sc in scenarios:
        mine_items = [r for r in items if r.scenario == sc.name]
        mine = [r for r in interactions if r.scenario == sc.name]
        catalog = set(sc.data.item_ids()) | {r.item.item_id for r in mine_items}
        mine = [r for r in mine if r.item_id in catalog]
        log(f"{sc.name}: {len(mine)} feedback interactions, {len(mine_items)} new items; refitting "
            f"the {sc.retriever.encoder.kind} retriever")  # fmt: skip
        data = _with_feedback(sc.data, mine_items, mine)
        encoder = refit_encoder(sc.retriever.encoder, data, embedder=embedder, progress=progress)
        retriever = Retriever.build(encoder, data, factory=sc.retriever.index.factory, scenario=sc.retriever.scenario,
                                    search_params=sc.retriever.index.params or None)  # fmt: skip
        text = sc.text
        if text is not None and mine_items:
            from ragrec.data.text import render_item_text

            text.add_items({r.item.item_id: render_item_text(r.item) for r in mine_items})
        rebuilt.append(Scenario(sc.config, data, retriever, text, sc.templates, sc.adapter, sc.reranker))
    name, folder = deployment.next_version_path()
    save_recommender(folder, rebuilt, config)
    version = Version(name, folder, last_interaction, last_item)
    deployment.publish(version)
    log(f"published {name} ({folder}); feedback through interaction {last_interaction}, item {last_item}")
    return version
