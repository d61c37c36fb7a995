"""The operator's model registry: the file named by ``SAM_BLOCK_MODELS`` (YAML or JSON).

::

    my_sam:                                    # the name a workflow gives as `version`
      checkpoint: /models/sam2_medical.pt      # a file (relative: to this file's folder),
                                               # https://HOST/FILE.pt, or hf://OWNER/REPO/FILE
      config: configs/sam2.1/sam2.1_hiera_t.yaml  # inside the sam2 package, or a YAML file
      sha256: 9f86d0...                        # optional: the file must have this digest

Only the operator writes this file; a request can name an entry, never a path or a URL.
The file is read on first use and again whenever it changes; a broken file is one
:class:`RegistryError` naming the file and the entry. This module only reads the file:
:mod:`sam_block.runtime.variants` turns the entries into runnable variants.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from sam_block.errors import SamBlockError

MODELS_ENV = "SAM_BLOCK_MODELS"
KEYS = ("checkpoint", "config", "sha256")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
HF_SCHEME = "hf://"


class RegistryError(SamBlockError, ValueError):
    """The operator's ``SAM_BLOCK_MODELS`` file cannot be used (the server's problem, not the request's)."""


@dataclass(frozen=True)
class RegisteredModel:
    """One entry of the registry, checked and with its paths made absolute.

    Exactly one of `path` (a local file), `url` (downloaded into the checkpoint directory
    under `filename`) and `hf_repo` (`filename` in that Hugging Face repository) is set.
    """

    name: str
    config: str
    filename: str
    registry: str
    url: Optional[str] = None
    path: Optional[str] = None
    hf_repo: Optional[str] = None
    sha256: Optional[str] = None


_cache: dict = {}
_lock = threading.Lock()


def registry_file() -> Optional[Path]:
    """The registry file ``SAM_BLOCK_MODELS`` names (relative: to the working directory), or None."""
    value = os.environ.get(MODELS_ENV, "").strip()
    return Path(value).expanduser().absolute() if value else None


def registered_models() -> List[RegisteredModel]:
    """The entries of the registry file, in file order; ``[]`` when ``SAM_BLOCK_MODELS`` is unset.

    Read again only when the file changes (size or modification time).

    Raises:
        RegistryError: the file is missing or unreadable, not YAML/JSON, not a mapping of
            names to entries, or an entry is wrong (unknown key, missing checkpoint file...).
    """
    path = registry_file()
    if path is None:
        return []
    try:
        stat = path.stat()
    except OSError as error:
        raise RegistryError(
            f"{MODELS_ENV}={os.environ[MODELS_ENV]!r} names a registry file that cannot be read: "
            f"{error.strerror or error}. Create it, or unset {MODELS_ENV}."
        ) from None
    key: Tuple = (str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if _cache.get("key") != key:
            _cache["models"] = parse_registry(path)
            _cache["key"] = key
        return _cache["models"]


def parse_registry(path: Path) -> List[RegisteredModel]:
    """Read and check the registry file at `path` (see the module's docstring for its format)."""
    text = _read(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            import yaml

            data = yaml.safe_load(text)  # safe: plain data only, no Python objects
    except Exception as error:  # yaml.YAMLError / json.JSONDecodeError: both say where
        detail = " ".join(str(error).split())
        raise RegistryError(
            f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {detail}"
        ) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise RegistryError(
            f"{path} must map model names to entries ({{name: {{checkpoint: ..., config: ...}}}}), "
            f"not a {type(data).__name__}"
        )
    return [_entry(path, name, fields) for name, fields in data.items()]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryError(f"The registry file {path} ({MODELS_ENV}) cannot be read: {error}") from None


def _entry(path: Path, name, fields) -> RegisteredModel:
    def fail(problem: str) -> RegistryError:
        return RegistryError(f"{path}: entry {name!r}: {problem}")

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise fail(
            "a model name is letters, digits, '.', '_' and '-' (optionally OWNER/NAME), starting with a letter or digit"
        )
    if not isinstance(fields, dict):
        raise fail(f"must be a mapping with keys checkpoint and config (sha256 optional), not {fields!r}")
    unknown = sorted(map(str, set(fields) - set(KEYS)))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; the keys are {', '.join(KEYS)}")
    for required in ("checkpoint", "config"):
        if not isinstance(fields.get(required), str) or not fields[required].strip():
            raise fail(f"missing {required!r} (a string)")
    sha256 = fields.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and SHA256_PATTERN.fullmatch(sha256.strip())):
        raise fail(f"sha256 must be 64 hexadecimal digits, not {sha256!r}")
    sha256 = sha256.strip().lower() if sha256 else None
    base = path.parent
    config = _config(fields["config"].strip(), base, fail)
    checkpoint = fields["checkpoint"].strip()
    common = dict(name=name, config=config, registry=str(path), sha256=sha256)
    if checkpoint.startswith(HF_SCHEME):
        parts = checkpoint[len(HF_SCHEME) :].split("/")
        if len(parts) < 3 or not all(parts):
            raise fail(f"checkpoint {checkpoint!r}: write hf://OWNER/REPO/FILE")
        return RegisteredModel(**common, hf_repo="/".join(parts[:2]), filename="/".join(parts[2:]))
    scheme = urllib.parse.urlsplit(checkpoint).scheme
    if scheme in ("http", "https"):
        file_name = Path(urllib.parse.urlsplit(checkpoint).path).name
        if not file_name:
            raise fail(f"checkpoint URL {checkpoint!r} does not end with a file name")
        return RegisteredModel(**common, url=checkpoint, filename=f"registered/{name}/{file_name}")
    if "://" in checkpoint:
        raise fail(f"checkpoint {checkpoint!r}: only a file path, https://... or hf://OWNER/REPO/FILE")
    file = (base / Path(checkpoint).expanduser()).absolute()
    if not file.is_file():
        raise fail(f"the checkpoint file {file} does not exist")
    return RegisteredModel(**common, path=str(file), filename=file.name)


def _config(config: str, base: Path, fail) -> str:
    """A config inside the sam2 package stays relative (``configs/...``); a file becomes absolute."""
    if not Path(config).is_absolute():
        resource = importlib.resources.files("sam2") / config
        if config.startswith("configs/") and resource.is_file():
            return config
    file = (base / Path(config).expanduser()).absolute()
    if file.is_file():
        return str(file)
    raise fail(
        f"config {config!r} is neither a config of the sam2 package (e.g. configs/sam2.1/sam2.1_hiera_t.yaml) "
        f"nor a file ({file} does not exist)"
    )
