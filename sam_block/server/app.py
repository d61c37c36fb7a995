"""Serve inference's own HTTP API with the sam_block plugin enabled, safely by default.

    python -m sam_block.serve --port 9001          # http://127.0.0.1:9001
    sam-block serve --port 9001                    # the same server and options (add_serve_arguments)

This builds the same FastAPI app as inference's Docker images
(``HttpInterface(model_manager).app``) and serves it with uvicorn, with three differences:
``WORKFLOWS_PLUGINS`` is made to include ``sam_block``; the server binds to loopback unless
``--host`` says otherwise; and the app is wrapped in :class:`sam_block.server.security.SecurityMiddleware`
(see that module: Host allow-list, Origin check, optional Bearer token, no custom Python). Every
workflow endpoint (``/workflows/run``, ``/workflows/blocks/describe``, ...) can then use
``sam_block/segment_anything_2@v1``.

Safe defaults, only where the operator has not set inference's variables (in the environment,
or in the ``.env`` of ``--working-dir``, which inference also reads):

- ``ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS`` (inference's default: true) is set to ``False``
  before inference is imported; ``--allow-custom-python`` sets it to ``True``.
- ``ALLOW_ORIGINS`` (inference's default: ``*``, with credentials) is set to the server's own
  origins plus every ``--allow-origin ORIGIN``.
- Served ``Host`` names: the bound address, ``localhost``, ``127.0.0.1``, ``[::1]`` and every
  ``--allow-host NAME``.
- A non-loopback ``--host`` needs a token: ``--token VALUE``, ``SAM_BLOCK_TOKEN``, or ``--token``
  alone (one is generated and printed), unless ``--no-token``.

Each decision is printed at start, one line each.

Routes of our own
-----------------
Routes the engine cannot serve (``/sam2/*``, the click-to-segment page) live in their own
modules under ``sam_block/server/``, each exposing ``router`` (a ``fastapi.APIRouter``). List the
module in :data:`ROUTER_MODULES`: :func:`build_app` includes each router and moves its routes in
front of inference's, so inference's catch-all routes (``/{dataset_id}/{version_id}``) and its
own ``/sam2/*`` do not shadow them. A module whose routes need options (a save directory, say)
exposes an ``install(app, ...)`` instead, called in :func:`build_app` at the line marked
"routes of our own" (it must put its routes in front the same way). The security middleware wraps
the app's router, so every route is covered with no further code, whenever it was added before
the server starts; a page whose GET should accept ``?token=`` is added to
``SecurityPolicy.token_query_paths`` (``security.PAGE_PATH`` already is). See the page contract
in :mod:`sam_block.server.security`.

Needs inference's HTTP dependencies: ``pip install "sam_block[serve]"``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from sam_block.arguments import OneLineErrorParser, add_precision_argument, apply_precision
from sam_block.plugin import enable_plugin
from sam_block.server.security import (
    ANY,
    LOOPBACK_NAMES,
    PAGE_PATH,
    SecurityMiddleware,
    SecurityPolicy,
    bound_origins,
    host_name,
    is_loopback,
)

MODULE = "sam_block.serve"  # `python -m sam_block.serve`; also the prefix of its lines
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001
TOKEN_VARIABLE = "SAM_BLOCK_TOKEN"
CUSTOM_PYTHON_VARIABLE = "ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS"  # read by inference.core.env at import
CUSTOM_PYTHON_MODE_VARIABLE = "WORKFLOWS_CUSTOM_PYTHON_EXECUTION_MODE"  # "modal": run it in Modal's sandboxes
ORIGINS_VARIABLE = "ALLOW_ORIGINS"  # read by inference.core.env at import; comma-separated
# Modules under sam_block/server/ whose `router` build_app includes (in front of inference's routes).
ROUTER_MODULES: Tuple[str, ...] = ()
# HttpInterface mounts these folders of inference's web UI relative to the working
# directory (they exist in inference's Docker images, not in its wheel).
_LANDING_DIRS = ("inference/landing/out/static", "inference/landing/out/_next/static")
# Relative paths in these variables are made absolute before leaving the caller's directory.
_PATH_VARIABLES = ("SAM_BLOCK_CHECKPOINT_DIR", "MODEL_CACHE_DIR", "SAM_BLOCK_MODELS")
_GENERATE = object()  # `--token` given without a value
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")


class StartRefused(Exception):
    """The server will not start; the message is one line naming the fix."""


@dataclass(frozen=True)
class ServerSecurity:
    """What the command line and the operator's environment decided, before inference is imported."""

    policy: SecurityPolicy
    environment: Dict[str, str]  # inference's variables to set (only those the operator did not set)
    lines: Tuple[str, ...]  # printed at start
    custom_python_source: str = "the default"  # who decided inference's ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS


def operator_variables(working_dir: Optional[Path], environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """inference's variables as the operator set them: the environment, then the ``.env`` inference reads.

    inference calls ``load_dotenv(os.getcwd() + "/.env")`` (which never overrides the environment)
    after we moved into the working directory, so a ``.env`` there is the operator's too.
    """
    found = {}
    if working_dir is not None and (Path(working_dir) / ".env").is_file():
        from dotenv import dotenv_values

        found.update({k: v for k, v in dotenv_values(Path(working_dir) / ".env").items() if v is not None})
    found.update(environ)
    return found


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return DEFAULT_HOST
    return f"[{host}]" if ":" in host else host


def resolve_security(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_custom_python: bool = False,
    allow_origins: Sequence[str] = (),
    allow_hosts: Sequence[str] = (),
    token=None,
    no_token: bool = False,
    operator: Optional[Mapping[str, str]] = None,
) -> ServerSecurity:
    """Decide the policy; raises :class:`StartRefused` (one line) when the server must not start."""
    operator = dict(os.environ if operator is None else operator)
    environment: Dict[str, str] = {}
    lines = []

    names = dict.fromkeys([host_name(host), *LOOPBACK_NAMES, *(host_name(n) if n != ANY else ANY for n in allow_hosts)])
    names.pop("", None)
    if ANY in names:
        lines.append("Host: any name is served (--allow-host '*'): DNS rebinding is not blocked")
    else:
        lines.append(f"Host: served for {', '.join(names)} (add a name with --allow-host NAME)")

    origins = []
    for origin in allow_origins:
        value = origin.strip().lower().rstrip("/")
        if value != ANY and not _ORIGIN.match(value):
            raise StartRefused(
                f"--allow-origin {origin!r} is not an origin: write it as scheme://host[:port], e.g. https://app.example.com"
            )
        origins.append(value)
    own = bound_origins(names, port)
    if ORIGINS_VARIABLE in operator:
        theirs = [o.strip().lower().rstrip("/") for o in operator[ORIGINS_VARIABLE].split(",") if o.strip()]
        allowed = [*own, *theirs, *origins]
        if origins:
            environment[ORIGINS_VARIABLE] = ",".join(dict.fromkeys([*theirs, *origins]))
        lines.append(
            f"CORS: origins from {ORIGINS_VARIABLE} (set by the operator): {', '.join(theirs) or 'none'}"
            + (f", plus --allow-origin {', '.join(origins)}" if origins else "")
        )
    else:
        allowed = [*own, *origins]
        environment[ORIGINS_VARIABLE] = ",".join(dict.fromkeys(allowed))
        hint = (
            f" and --allow-origin {', '.join(origins)}"
            if origins
            else " (allow a site's page with --allow-origin ORIGIN)"
        )
        lines.append("CORS: only this server's own origin" + hint)
    if ANY in allowed:
        lines.append("CORS: any origin is allowed: every web page you visit can call this server")

    if allow_custom_python:
        environment[CUSTOM_PYTHON_VARIABLE] = "True"
        custom_python_source = "--allow-custom-python"
    elif CUSTOM_PYTHON_VARIABLE in operator:
        custom_python_source = f"{CUSTOM_PYTHON_VARIABLE}={operator[CUSTOM_PYTHON_VARIABLE]} set by the operator"
    else:
        environment[CUSTOM_PYTHON_VARIABLE] = "False"
        custom_python_source = "the default; --allow-custom-python turns it on"

    given = operator.get(TOKEN_VARIABLE) or None
    if no_token:
        value = None
        lines.append(
            "token: none (--no-token)"
            + (f"; {TOKEN_VARIABLE} ignored" if given else "")
            + ("" if is_loopback(host) else f": anyone who can reach {host}:{port} can use this server")
        )
    elif token is _GENERATE:
        value = secrets.token_urlsafe(24)
        lines.append(f"token: generated: {value}")
    elif token is not None:
        if not token.strip():
            raise StartRefused("--token is empty: give a value, or --token alone to have one generated")
        value = token.strip()
        lines.append("token: from --token")
    elif given:
        value = given.strip()
        lines.append(f"token: from {TOKEN_VARIABLE}")
    elif not is_loopback(host):
        raise StartRefused(
            f"refusing to serve {host} (not loopback) without a token: pass --token to have one generated and "
            f"printed, --token VALUE or {TOKEN_VARIABLE}=VALUE, or --no-token to serve it to anyone who can reach it"
        )
    else:
        value = None
        lines.append("token: none (loopback; --token requires one)")
    if value is not None:
        lines.append("token: send 'Authorization: Bearer <token>' on every request but /info")

    policy = SecurityPolicy(
        allowed_hosts=frozenset(names),
        allowed_origins=frozenset(allowed),
        token=value,
        allow_custom_python=allow_custom_python,  # updated from inference's own value once it is imported
    )
    return ServerSecurity(policy, environment, tuple(lines), custom_python_source)


def _enter_working_dir(working_dir: Optional[Path]) -> Path:
    """Make relative path variables absolute and move into a directory with the UI folders."""
    for name in _PATH_VARIABLES:
        value = os.environ.get(name)
        if value:
            os.environ[name] = str(Path(value).expanduser().resolve())
    working_dir = Path(working_dir) if working_dir else Path(tempfile.mkdtemp(prefix="sam_block_serve_"))
    for relative in _LANDING_DIRS:
        (working_dir / relative).mkdir(parents=True, exist_ok=True)
    os.chdir(working_dir)
    return working_dir


def _effective_custom_python(security: ServerSecurity) -> bool:
    """inference's own setting, once imported; refuses to start if it is on though nobody asked for it."""
    from roboflow_workflows import environment

    local = bool(environment.ALLOW_CUSTOM_PYTHON_EXECUTION_IN_WORKFLOWS)
    modal = environment.WORKFLOWS_CUSTOM_PYTHON_EXECUTION_MODE == "modal"
    wanted = security.environment.get(CUSTOM_PYTHON_VARIABLE)
    if wanted == "False" and local:
        raise StartRefused(
            f"inference was configured before the server could set {CUSTOM_PYTHON_VARIABLE}=False (it is on): "
            f"start the server in a fresh process, or set {CUSTOM_PYTHON_VARIABLE}=False yourself"
        )
    return local or modal


def include_routers(app, modules: Iterable[str]) -> None:
    """Include each module's ``router`` and move its routes in front of inference's routes."""
    for name in modules:
        # the router's own routes, not app.include_router: FastAPI 0.141 adds that as one path-less
        # `_IncludedRouter` entry, on which inference's prometheus middleware fails (every request a 500)
        app.router.routes[0:0] = list(importlib.import_module(name).router.routes)


def build_app(
    working_dir: Optional[Path] = None, security: Optional[ServerSecurity] = None, routers=None,
    save_dir: Optional[Path] = None,
):  # fmt: skip
    """inference's HTTP app (as in its Docker images) with the plugin, our routes and the security layer.

    ``security`` defaults to :func:`resolve_security` for loopback on the default port;
    ``routers`` to :data:`ROUTER_MODULES`; ``save_dir``: where the click-to-segment page's "Save"
    writes (None: it is off and the server writes nothing).
    """
    save_dir = Path(save_dir).expanduser().resolve() if save_dir is not None else None  # before the chdir
    security = security or resolve_security()
    enable_plugin()
    os.environ.update(security.environment)
    _enter_working_dir(working_dir)
    from inference.core.env import MAX_ACTIVE_MODELS  # the HTTP app and model manager live in inference
    from inference.core.interfaces.http.http_api import HttpInterface
    from inference.core.managers.base import ModelManager
    from inference.core.managers.decorators.fixed_size_cache import WithFixedSizeCache
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    allow_custom_python = _effective_custom_python(security)
    model_manager = WithFixedSizeCache(
        ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES)),
        max_size=MAX_ACTIVE_MODELS,
    )
    app = HttpInterface(model_manager).app
    # routes of our own: modules with a `router` (ROUTER_MODULES), then modules' install(app, ...) calls
    include_routers(app, ROUTER_MODULES if routers is None else routers)
    from sam_block.server import sam2_api  # /sam2/embed_image, /sam2/segment_image: replace inference's

    sam2_api.install(app)
    from sam_block.server import annotate  # GET /sam_block/annotate, its config and --save-dir's "Save"

    annotate.include_annotate(app, save_dir=save_dir)
    policy = replace(security.policy, allow_custom_python=allow_custom_python)
    app.add_middleware(SecurityMiddleware, policy=policy)  # added last: the outermost layer, around every route
    app.state.sam_block_policy = policy
    return app


def _has_route(app, path: str) -> bool:
    return any(getattr(route, "path", None) == path for route in app.router.routes)


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``python -m sam_block.serve`` and ``sam-block serve`` (one definition for both)."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    parser.add_argument(
        "--working-dir", type=Path, default=None, help="directory to run in (default: a new temporary one)"
    )
    add_precision_argument(parser)
    security = parser.add_argument_group("security (see the README's Security section)")
    security.add_argument(
        "--allow-custom-python",
        action="store_true",
        help="run workflows' custom Python blocks (dynamic_blocks_definitions) on this machine",
    )
    security.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN (scheme://host[:port]) call the server; repeatable",
    )
    security.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME (e.g. the machine's LAN name); repeatable",
    )
    tokens = security.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        nargs="?",
        const=_GENERATE,
        default=None,
        metavar="VALUE",
        help=f"require 'Authorization: Bearer VALUE' (alone: generate one and print it; "
        f"or set {TOKEN_VARIABLE}); needed for a non-loopback --host",
    )
    tokens.add_argument("--no-token", action="store_true", help="serve a non-loopback --host without a token")
    parser.add_argument(
        "--save-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="let the click-to-segment page's Save button write COCO files into DIR (default: the server writes nothing)",
    )
    return parser  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=f"python -m {MODULE}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.error_name = MODULE
    return add_serve_arguments(parser)


def check_registry() -> None:
    """Read the operator's ``SAM_BLOCK_MODELS`` now: a broken file stops the start (one line naming the
    file and the entry) instead of failing requests later."""
    from sam_block.runtime.registry import RegistryError
    from sam_block.runtime.variants import available_versions

    try:
        available_versions()  # parses every entry, checks local checkpoint files, configs, name clashes
    except RegistryError as error:
        raise StartRefused(" ".join(str(error).split())) from None


def main(argv=None) -> int:
    """``python -m sam_block.serve [OPTIONS]``."""
    return serve(_parser().parse_args(argv))


def serve(args: argparse.Namespace, name: str = MODULE) -> int:
    """Start the server the parsed options (:func:`add_serve_arguments`) describe; `name` prefixes
    every line printed (``sam_block.serve`` or ``sam-block serve``). Exit code 2 when it refuses."""
    try:
        import uvicorn
    except ImportError:
        print(f'{name}: inference\'s HTTP server needs uvicorn: pip install "sam_block[serve]"', file=sys.stderr)
        return 2
    apply_precision(args)  # before any model is built
    try:
        security = resolve_security(
            args.host, args.port, args.allow_custom_python, args.allow_origin, args.allow_host, args.token,
            args.no_token, operator_variables(args.working_dir),
        )  # fmt: skip
        check_registry()
        app = build_app(args.working_dir, security, save_dir=args.save_dir)
    except StartRefused as refused:
        print(f"{name}: {refused}", file=sys.stderr)
        return 2
    base = f"http://{_display_host(args.host)}:{args.port}"
    policy = app.state.sam_block_policy
    custom_python = (
        "ON: any client that can reach the server can run code on this machine" if policy.allow_custom_python else "off"
    )
    lines = [
        f"serving {base} (bound to {args.host})",
        *security.lines,
        f"custom Python in workflows: {custom_python} ({security.custom_python_source})",
    ]
    token = policy.token
    if _has_route(app, PAGE_PATH):
        lines.append(f"page: {base}{PAGE_PATH}" + (f"?token={token}" if token else ""))
    for line in lines:
        print(f"{name}: {line}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
