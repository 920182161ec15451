"""Service dataclasses to response models."""

from __future__ import annotations

from dataclasses import asdict

from recpipe.serving import schemas
from recpipe.serving.service import Recommendations, RecommendedItem


def item_out(item: RecommendedItem) -> schemas.ItemOut:
    return schemas.ItemOut(
        item_id=item.item_id,
        score=item.score,
        rank=item.rank,
        title=item.title,
        categories=item.categories,
        reasons=[schemas.ReasonOut(**asdict(r)) for r in item.reasons],
        source=item.source,
    )


def recommendations_out(rec: Recommendations) -> schemas.RecommendationsOut:
    return schemas.RecommendationsOut(
        user_id=rec.user_id,
        model=rec.model,
        n=rec.n,
        offset=rec.offset,
        items=[item_out(i) for i in rec.items],
        fallback=rec.fallback,
        fresh=rec.fresh,
        known_user=rec.known_user,
        bundle_id=rec.bundle_id,
        unknown_items=rec.unknown_items,
    )
