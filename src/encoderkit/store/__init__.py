"""encoderkit.store: persistent collections of documents searchable by vector, keyword (BM25) or both."""
from encoderkit.store.collection import Collection, Hit, collection_path, content_hash
from encoderkit.store.ingest import IngestReport

__all__ = ["Collection", "Hit", "IngestReport", "collection_path", "content_hash"]
