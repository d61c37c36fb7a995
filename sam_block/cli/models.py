"""`sam-block models`: every version a workflow may name, its config, its file and whether it is here."""

from __future__ import annotations

from typing import List


def model_rows() -> List[dict]:
    """One row per version (built-in, then registered): name, config, where it comes from,
    its file (or where it would be), and whether that file is on this machine now.

    Reads no network: Hugging Face files are looked up in huggingface_hub's cache only.
    """
    from sam_block.runtime.checkpoints import checkpoint_path, local_checkpoint
    from sam_block.runtime.variants import available_versions, get_variant

    rows = []
    for name in available_versions():
        variant = get_variant(name)
        present = local_checkpoint(variant)
        if present is not None:
            file = str(present)
        elif variant.hf_repo:
            file = f"hf://{variant.hf_repo}/{variant.filename}"
        elif variant.url and variant.registry:
            file = f"{checkpoint_path(variant)} (from {variant.url})"
        else:
            file = str(checkpoint_path(variant))
        where = variant.origin
        if variant.registry:
            source = "HF cache" if variant.hf_repo else ("checkpoint dir" if variant.url else "file")
            where = f"registry {variant.registry} ({source})"
        rows.append(
            {"version": name, "config": variant.config, "where": where, "file": file, "present": present is not None}
        )
    return rows


def cmd_models(args) -> int:
    import json

    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = {"version": "VERSION", "config": "CONFIG", "where": "WHERE", "present": "PRESENT", "file": "FILE"}
    table = [header] + [{**row, "present": "yes" if row["present"] else "no"} for row in rows]
    columns = ["version", "config", "where", "present"]
    widths = {c: max(len(str(r[c])) for r in table) for c in columns}
    for row in table:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns) + "  " + row["file"])
    return 0
