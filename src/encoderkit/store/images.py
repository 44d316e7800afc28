"""Image collections: embed image files with the image tower of an image-text model (CLIP, SigLIP) and store
them in a Collection whose text queries go through the same model's text tower.

Each image becomes one document: id = its path below the folder given (as for text files), text = the file
name (what keyword search and result lists show), metadata = {"path": absolute file path, "thumbnail_path":
a small JPEG under <collection>/thumbs/, "thumbnail": the same thumbnail as a data: URL (the field the web
page shows), "width", "height"}. The collection's meta records modality=image and the image model."""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from encoderkit.store.ingest import IngestReport, _isatty

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
THUMBS = "thumbs"


def iter_image_files(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """([(image file, id)], [(other file, why skipped)]) for the files / folders given (folders recursively,
    hidden files ignored). A missing path is an error."""
    found, skipped = [], []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
            pairs = [(f, (Path(p.name) / f.relative_to(p)).as_posix()) for f in files]
        elif p.is_file():
            pairs = [(p, p.name)]
        else:
            raise FileNotFoundError(f"{p} does not exist")
        for f, doc_id in pairs:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                found.append((f, doc_id))
            else:
                skipped.append((str(f), f"not an image file ({f.suffix or 'no extension'}); "
                                        f"image collections take {', '.join(IMAGE_SUFFIXES)}"))
    return found, skipped


def thumbnail(img: Any, size: int = 128) -> bytes:
    """A JPEG of img shrunk to fit size x size (aspect ratio kept)."""
    t = img.copy()
    t.thumbnail((size, size))
    buf = io.BytesIO()
    t.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def mark_image_collection(collection: Any, image_model: str) -> None:
    """Record in the collection's meta that it holds image vectors of `image_model` (text queries use its text tower)."""
    values = {"modality": "image", "image_model": image_model}
    collection.store.set_meta(values)
    collection.meta.update(values)


def is_image_collection(collection: Any) -> bool:
    return collection.meta.get("modality") == "image"


def ingest_images(collection: Any, paths: str | os.PathLike | Sequence[str | os.PathLike], image_encoder: Any, *,
                  batch_size: int = 32, thumb_size: int = 128, progress: bool | None = None) -> IngestReport:
    """Embed the image files under `paths` with `image_encoder` (an Encoder of modality "image" whose vectors
    live in the collection's space) and upsert them. Files that are not images, or cannot be decoded, are
    reported in `errors` (path, reason) and skipped. Re-running replaces documents with the same id."""
    from PIL import Image, UnidentifiedImageError

    from encoderkit.processors.image import to_rgb

    if getattr(image_encoder, "modality", "text") != "image":
        raise ValueError(f"{getattr(image_encoder, 'name', 'the encoder')} does not embed images; give the image tower "
                         "of a CLIP / SigLIP model (encoderkit.load(path, modality='image'))")
    if int(image_encoder.dim) != collection.dim:
        raise ValueError(f"the image encoder gives {image_encoder.dim}-d vectors; the collection holds {collection.dim}-d")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, skipped = iter_image_files(paths)
    report = IngestReport(files=len(files) + len(skipped))
    for path, why in skipped:
        log.warning("skipping %s: %s", path, why)
        report.errors.append((path, why))
    mark_image_collection(collection, getattr(image_encoder, "name", "") or collection.model)
    thumbs = collection.path / THUMBS
    thumbs.mkdir(exist_ok=True)
    show = progress if progress is not None else (len(files) > batch_size and _isatty())
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="images", unit="image")
    try:
        for s in range(0, len(files), batch_size):
            imgs, ids, metas = [], [], []
            for path, doc_id in files[s:s + batch_size]:
                try:
                    with Image.open(path) as im:
                        im.load()
                        img = to_rgb(im)
                except (UnidentifiedImageError, OSError) as exc:
                    why = f"cannot decode image: {exc}"
                    log.warning("skipping %s: %s", path, why)
                    report.errors.append((str(path), why))
                    continue
                jpeg = thumbnail(img, thumb_size)
                tpath = thumbs / f"{hashlib.sha1(doc_id.encode()).hexdigest()[:20]}.jpg"
                tpath.write_bytes(jpeg)
                imgs.append(img)
                ids.append(doc_id)
                metas.append({"path": str(path.resolve()), "thumbnail_path": str(tpath.resolve()),
                              "thumbnail": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"),
                              "width": img.width, "height": img.height})
            if ids:
                X = image_encoder.encode(imgs, batch_size=batch_size, normalize=collection.metric == "cosine",
                                         progress=False)
                collection.upsert([Path(i).name for i in ids], ids=ids, metadatas=metas, vectors=X)
                report.added += len(ids)
                report.batches += 1
            if bar is not None:
                bar.update(len(files[s:s + batch_size]))
    finally:
        if bar is not None:
            bar.close()
        collection.flush()
    return report


__all__ = ["ingest_images", "iter_image_files", "mark_image_collection", "is_image_collection", "IMAGE_SUFFIXES"]
