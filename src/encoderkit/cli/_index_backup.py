"""`encoderkit index backup NAME DEST` and `encoderkit index restore SRC NAME` (store/backup.py): a consistent copy
of an embedded collection while other processes write to it, and its checked restore. For a collection in
PostgreSQL, backup prints the pg_dump / pg_restore steps. Attached to the `index` command by cli/index.py."""
from __future__ import annotations

from typing import Callable

from encoderkit.cli._common import add_json_flag, emit_json


def register_backup(isub, name_help: str, store_flag: Callable, wrap: Callable, opener: Callable,
                    is_pg: Callable) -> None:
    """Add backup / restore to the `index` subparsers; `opener(args)` opens the named collection, `wrap` is
    index.py's error wrapper, `is_pg(args)` says whether the collection is in PostgreSQL."""
    p = isub.add_parser("backup", help="copy a collection to a new folder, consistent while writers run",
                        description="Copy a collection (database and vector indexes, at one consistent point) into "
                                    "a new folder DEST. Other processes may keep writing: they wait while the copy "
                                    "is taken. For a PostgreSQL collection this prints the pg_dump steps.")
    p.add_argument("name", help=name_help)
    p.add_argument("dest", metavar="DEST", help="a new (or empty) folder to write the backup to")
    store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=wrap(lambda args: cmd_backup(args, opener, is_pg)))

    p = isub.add_parser("restore", help="restore a backup folder as a new collection NAME",
                        description="Restore a folder written by `encoderkit index backup` as collection NAME (which "
                                    "must not exist yet). The copy is checked before it is put in place.")
    p.add_argument("src", metavar="SRC", help="the backup folder")
    p.add_argument("name", help="collection name (under --store) to restore as")
    store_flag(p)
    add_json_flag(p)
    p.set_defaults(func=wrap(lambda args: cmd_restore(args, is_pg)))


def cmd_backup(args, opener: Callable, is_pg: Callable) -> int:
    if is_pg(args):
        from encoderkit.store.backup import pg_backup_steps

        col = opener(args)  # the same "no collection" error as every other command
        try:
            steps = pg_backup_steps(col.store, args.dest)
        finally:
            col.close()
        if args.json:
            emit_json({"backend": "postgresql", "steps": steps})
        else:
            print(steps)
        return 0
    col = opener(args)
    try:
        manifest = col.backup(args.dest)
    finally:
        col.close()
    if args.json:
        emit_json({**manifest, "dest": args.dest})
    else:
        print(f"backed up {args.name}: {manifest['documents']:,} documents at generation {manifest['generation']} "
              f"-> {args.dest} (writers waited {manifest['locked_seconds']:.2f} s)")
    return 0


def cmd_restore(args, is_pg: Callable) -> int:
    from encoderkit.store import collection_path
    from encoderkit.store.backup import restore_collection

    if is_pg(args):
        raise ValueError("restore of a PostgreSQL collection is pg_restore's job; `encoderkit index backup NAME DEST "
                         "--store postgresql://...` prints the steps")
    out = restore_collection(args.src, collection_path(args.name, args.store))
    if args.json:
        emit_json(out)
    else:
        print(f"restored {args.name} from {args.src}: {out['documents']:,} documents at generation "
              f"{out['generation']}, check ok -> {out['path']}")
    return 0
