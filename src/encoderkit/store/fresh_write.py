"""The last step of an ingest batch: write the documents that are still new or changed, deciding that in the same
transaction as the write (under the database's write lock), so two processes ingesting the same file at once each
report what they really wrote; the other's documents count as unchanged or duplicates."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from encoderkit.store.records import content_hash


def write_fresh(collection: Any, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict],
                vectors: np.ndarray) -> tuple[list[int], int, int]:
    """Upsert the documents whose id does not already hold the same text and whose text no other id holds.
    Returns (positions written, unchanged: same id and text found, duplicates: same text under another id)."""
    store = collection.store
    hashes = [content_hash(t) for t in texts]
    with collection._lock, store.transaction():  # SQLite: BEGIN IMMEDIATE takes the write lock here
        lock = getattr(store, "_lock", None)
        if lock is not None:  # PostgreSQL: one writer of this collection at a time between the check and the write
            lock(f"encoderkit_ingest:{getattr(store, 'table_name', '')}")
        have = store.hashes_by_ids(list(ids))
        taken = store.existing_hashes([h for i, h in zip(ids, hashes) if have.get(i) != h])
        keep, unchanged, duplicates = [], 0, 0
        for n, (i, h) in enumerate(zip(ids, hashes)):
            if have.get(i) == h:
                unchanged += 1
            elif h in taken and i not in have:
                duplicates += 1
            else:
                keep.append(n)
        if keep:
            collection.upsert([texts[n] for n in keep], ids=[ids[n] for n in keep],
                              metadatas=[metadatas[n] for n in keep], vectors=np.asarray(vectors)[keep])
    return keep, unchanged, duplicates
