"""`sam-block run`, `segment`, `download` and `describe`."""

from __future__ import annotations

import json
import sys

from sam_block.cli.engine import image_inputs, init_engine
from sam_block.cli.errors import CliError
from sam_block.cli.inputs import (
    UniqueStems,
    bundled_workflow,
    check_param_names,
    count_frames,
    expand_inputs,
    how_to_pass,
    iter_frames,
    load_boxes,
    load_per_image,
    load_workflow,
    match_per_image,
    missing_inputs,
    prepare_inputs,
    require_inputs,
    workflow_params,
)
from sam_block.cli.run import run_frames


def cmd_run(args) -> int:
    """Exit code 0 when every input was processed, 1 when some failed (listed in failed.jsonl);
    usage and setup errors raise :class:`CliError` (exit code 2) before or instead of the work."""
    if args.every < 1:
        raise CliError(f"--every must be 1 or more (got {args.every})")
    definition = load_workflow(args.workflow)
    names = image_inputs(definition)
    if not names:
        raise CliError(f"workflow {args.workflow} has no WorkflowImage input to give the images to")
    inputs = expand_inputs(args.inputs)  # a missing input path: an error before anything else
    params = workflow_params(definition, args.param or [], names, "INPUT")
    ray = getattr(args, "ray", None) is not None
    if not ray and getattr(args, "gpus_per_worker", None) is not None:
        raise CliError("--gpus-per-worker only applies with --ray; add --ray or remove it")
    per_image = load_per_image(args.per_image, names[0]) if getattr(args, "per_image", None) is not None else None
    for key, own in (per_image or {}).items():
        check_param_names(definition, own, f"--per-image {key}:")
        prepare_inputs(definition, own, f"--per-image {key}:")  # a wrong box shape: refused before any work
    missing = missing_inputs(
        definition, names[0], set(params) | ({n for own in per_image.values() for n in own} if per_image else set())
    )
    if missing:
        raise CliError(
            f"the workflow needs input {missing[0]!r}, which is not given: pass it with {how_to_pass(definition, missing[0])}"
        )
    if ray and getattr(args, "api_key", None):
        raise CliError("--api-key is not passed to Ray actors; with --ray set ROBOFLOW_API_KEY where they run instead")
    if ray:  # the same outputs, computed by Ray actors (cli/batch.py)
        from sam_block.cli.batch import RayOptions, run_with_ray

        options = RayOptions(
            address=args.ray,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            progress=args.progress,
            per_image=per_image,
        )
        summary = run_with_ray(definition, inputs, args.out, params, options)
    else:
        engine = init_engine(definition, api_key=getattr(args, "api_key", None))
        frame_params = None
        if per_image is not None:
            stems = _stems(inputs)
            own = match_per_image(per_image, [(path.name, stem) for (path, _), stem in zip(inputs, stems)])
            by_input = {
                stem: prepare_inputs(definition, values, f"--per-image {stem}:") for stem, values in zip(stems, own)
            }

            def frame_params(frame):
                values = by_input.get(frame.input_name, {})
                require_inputs(definition, names[0], {**params, **values}, frame.input_name)
                return values

        frames = iter_frames(inputs, args.every, keep_going=True)
        summary = run_frames(
            engine,
            names[0],
            frames,
            args.out,
            params,
            total=count_frames(inputs, args.every),
            progress=args.progress,
            keep_going=True,
            frame_params=frame_params,
        )
    return _report(summary)


def _stems(inputs) -> list:
    """The output stem of each input file, as iter_frames names them."""
    stem = UniqueStems()
    return [stem(path.stem) for path, _ in inputs]


def _report(summary) -> int:
    """The summary line of a run and its exit code: 0 when nothing failed, else 1."""
    print(f"{summary.frames} image(s), {summary.masks} mask(s); COCO file: {summary.coco}")
    if summary.failed:
        print(
            f"sam-block: {len(summary.failed)} input(s) failed, {summary.frames} done; reasons in {summary.failed_file}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_segment(args) -> int:
    from sam_block.runtime.variants import DEFAULT_VERSION, get_variant

    version = args.model or DEFAULT_VERSION
    get_variant(version)  # an unknown version fails here, before the engine starts
    boxes = load_boxes(args.boxes)
    inputs = expand_inputs(args.images)
    engine = init_engine(bundled_workflow("boxes_to_masks.json"))
    params = {
        "boxes": [boxes],
        "version": version,
        "threshold": args.threshold,
        "multimask_output": not args.single_mask,
    }
    summary = run_frames(
        engine,
        "image",
        iter_frames(inputs, 1),
        args.out,
        params,
        total=count_frames(inputs, 1),
        progress=args.progress,
        json_output="predictions",
    )
    print(f"{summary.frames} image(s), {summary.masks} mask(s); COCO file: {summary.coco}")
    return 0


def cmd_download(args) -> int:
    from sam_block.errors import SamBlockError
    from sam_block.runtime.checkpoints import checkpoint_path, resolve_checkpoint
    from sam_block.runtime.variants import DEFAULT_VERSION, OFFICIAL_VERSIONS, VARIANTS, available_versions, get_variant

    versions = list(OFFICIAL_VERSIONS) if args.all else (args.versions or [DEFAULT_VERSION])
    downloadable = [name for name in available_versions() if get_variant(name).url]
    for name in versions:  # unknown names fail before any download; the choices listed are the downloadable ones
        if name not in VARIANTS:
            raise CliError(f"Unknown SAM 2 version {name!r} to download. Use one of: {', '.join(downloadable)}")
    variants = [get_variant(v) for v in versions]
    for variant in variants:
        path = checkpoint_path(variant)
        if variant.bundled:
            if not path.is_file():
                raise CliError(
                    f"the {variant.name!r} checkpoint should ship with sam_block at {path} but is missing; reinstall sam_block"
                )
            print(f"{variant.name}: bundled with sam_block at {path}, nothing to download")
            continue
        if path.is_file():
            print(f"{variant.name}: already present at {path}")
            continue
        try:
            resolve_checkpoint(variant, progress=args.progress)  # None: a bar only on a terminal
        except SamBlockError as error:
            raise CliError(str(error)) from error
        print(f"{variant.name}: downloaded to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_describe(args) -> int:
    from sam_block.manifests import describe_blocks

    print(json.dumps(describe_blocks(), indent=2, sort_keys=True, ensure_ascii=False))
    return 0
