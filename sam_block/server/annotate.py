"""The click-to-segment page: ``GET /sam_block/annotate`` and the few routes it needs.

The page itself (``static/annotate.html``, ``.js``, ``.css``: package data, no build step,
nothing fetched from another host) talks to the server's ``/sam2/embed_image`` and
``/sam2/segment_image``; this module only serves it, plus:

- ``GET /sam_block/annotate/config``: the SAM 2 versions this server can run (for the
  version picker) and whether "Save" is on;
- ``POST /sam_block/annotate/save``: with ``--save-dir DIR`` only, writes the page's COCO
  file into DIR (the name sanitised, written atomically, never outside DIR). Without
  ``--save-dir`` the route refuses with 403 and the server writes nothing.

Example:
    >>> from fastapi import FastAPI
    >>> from fastapi.testclient import TestClient
    >>> app = FastAPI()
    >>> include_annotate(app)
    >>> client = TestClient(app)
    >>> client.get(PAGE_PATH).headers["content-type"]
    'text/html; charset=utf-8'
    >>> client.post(SAVE_PATH, json={"file_name": "a.json", "coco": {}}).status_code
    403
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sam_block.server.security import PAGE_PATH, STATIC_PREFIX  # public paths of the security layer

CONFIG_PATH = "/sam_block/annotate/config"
SAVE_PATH = "/sam_block/annotate/save"
_STATIC_FILES = {
    "annotate.js": "text/javascript; charset=utf-8",
    "annotate.css": "text/css; charset=utf-8",
}
# Nothing but our own origin: the page must work offline and leak nothing to other hosts.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
MAX_FILE_NAME = 120
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def _static(name: str) -> bytes:
    return resources.files("sam_block.server").joinpath("static", name).read_bytes()


def safe_file_name(name: str) -> str:
    """A file name that can only land inside the save directory: the last path component,
    characters other than ``A-Z a-z 0-9 . _ -`` replaced by ``_``, no leading dot, at most
    120 characters, ending in ``.json``.

    Example:
        >>> safe_file_name("../../etc/passwd")
        'passwd.json'
        >>> safe_file_name("C:\\\\photos\\\\my cat.coco.json")
        'my_cat.coco.json'
        >>> safe_file_name("..")
        'annotations.json'
    """
    base = re.split(r"[\\/]", str(name))[-1]
    base = _UNSAFE_CHARACTERS.sub("_", base).lstrip("._")
    if base.lower().endswith(".json"):
        base = base[: -len(".json")]
    base = base.rstrip("._")[: MAX_FILE_NAME - len(".json")] or "annotations"
    return base + ".json"


def write_inside(directory: Path, file_name: str, payload: bytes) -> Path:
    """Write `payload` as ``directory / safe_file_name(file_name)`` atomically (a temporary
    file in the same directory, then renamed over), refusing any path outside `directory`."""
    directory = Path(directory).resolve()
    target = (directory / safe_file_name(file_name)).resolve()
    if target.parent != directory:  # cannot happen after safe_file_name; checked anyway
        raise ValueError(f"{file_name!r} would be written outside {directory}")
    descriptor, temporary = tempfile.mkstemp(prefix=".saving-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


class CocoFile(BaseModel):
    """What the page's "Save" sends: a COCO instance-segmentation document and a file name."""

    file_name: str = Field(min_length=1, max_length=1000, description="file name for the COCO JSON (sanitised)")
    coco: Dict[str, Any] = Field(description="COCO document with `images`, `annotations` and `categories` lists")


def _check_coco(coco: Dict[str, Any]) -> None:
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise HTTPException(status_code=422, detail=f"coco.{key} must be a list (a COCO document)")


def served_versions() -> List[Dict[str, Any]]:
    """The versions for the page's picker: ``name``, ``ready`` (its checkpoint is here, or
    bundled), ``available`` (ready, or downloadable now) and a ``note`` for those not ready."""
    from sam_block.runtime.checkpoints import checkpoint_path, is_offline
    from sam_block.runtime.variants import available_versions, get_variant

    offline = is_offline()
    versions = []
    for name in available_versions():
        variant = get_variant(name)
        ready = bool(variant.bundled) or checkpoint_path(variant).is_file()
        downloadable = not offline and variant.download_url() is not None
        note = "" if ready else "downloads on first use" if downloadable else "checkpoint missing"
        versions.append({"name": name, "ready": ready, "available": ready or downloadable, "note": note})
    return versions


def default_version(versions: List[Dict[str, Any]]) -> str:
    """The package's default version when this server can run it, else the first it can."""
    from sam_block.runtime.variants import DEFAULT_VERSION

    usable = [v["name"] for v in versions if v["available"]]
    return DEFAULT_VERSION if DEFAULT_VERSION in usable else (usable[0] if usable else DEFAULT_VERSION)


def include_annotate(app: FastAPI, save_dir: Optional[Path] = None) -> None:
    """Add the page's routes to `app`; "Save" writes into `save_dir` (off when None).

    They go ahead of the routes already there: inference's app has catch-all paths
    (``/{dataset_id}/{version_id}``) that would otherwise answer them.
    """
    save_dir = Path(save_dir).expanduser().resolve() if save_dir is not None else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    headers = {**_NO_CACHE, "Content-Security-Policy": _CONTENT_SECURITY_POLICY}
    count = len(app.router.routes)

    @app.get(PAGE_PATH, include_in_schema=False)
    def annotate_page() -> Response:
        return Response(_static("annotate.html"), media_type="text/html; charset=utf-8", headers=headers)

    @app.get(STATIC_PREFIX + "{name}", include_in_schema=False)
    def annotate_static(name: str) -> Response:
        if name not in _STATIC_FILES:
            raise HTTPException(status_code=404, detail=f"no static file {name!r}")
        return Response(_static(name), media_type=_STATIC_FILES[name], headers=_NO_CACHE)

    @app.get(CONFIG_PATH, include_in_schema=False)
    def annotate_config() -> JSONResponse:
        versions = served_versions()
        return JSONResponse(
            {"versions": versions, "default_version": default_version(versions), "save": save_dir is not None},
            headers=_NO_CACHE,
        )

    @app.post(SAVE_PATH, include_in_schema=False)
    def annotate_save(body: CocoFile) -> JSONResponse:
        if save_dir is None:
            raise HTTPException(
                status_code=403,
                detail="saving is off on this server: start it with --save-dir DIR to let the page write there",
            )
        _check_coco(body.coco)
        payload = json.dumps(body.coco, ensure_ascii=False).encode("utf-8")
        target = write_inside(save_dir, body.file_name, payload)
        return JSONResponse({"file_name": target.name, "bytes": len(payload)})

    routes = app.router.routes
    routes[:] = routes[count:] + routes[:count]
