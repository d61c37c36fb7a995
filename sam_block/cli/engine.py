"""The Workflows engine, with the plugin enabled, compiled from a definition.

Our steps need no init parameters. Inference's own model blocks (the Roboflow detectors our
step follows) need ``workflows_core.model_manager`` and ``workflows_core.api_key``: the CLI
passes them as inference's own CLI and ``InferencePipeline.init_with_workflow`` do, building
the model manager only when a step asks for one (its import alone costs seconds).
"""

from __future__ import annotations

import os
import typing
from typing import Any, Dict, List, Optional

from sam_block.cli.errors import CliError, SetupError, root_message
from sam_block.plugin import enable_plugin

IMAGE_INPUT_TYPES = {"WorkflowImage", "InferenceImage"}
API_KEY_ENV = ("ROBOFLOW_API_KEY", "API_KEY")  # inference's names, in its order (inference.core.env)
MODEL_MANAGER = "workflows_core.model_manager"
API_KEY = "workflows_core.api_key"


def init_engine(definition: dict, init_parameters: Optional[dict] = None, api_key: Optional[str] = None):
    """Compile `definition` with the real ``ExecutionEngine`` (sam_block enabled).

    `api_key` (else ``$ROBOFLOW_API_KEY``) and, when a step needs one, a model manager are
    given to the engine (see :func:`engine_init_parameters`); `init_parameters` win over both.
    """
    enable_plugin()
    from roboflow_workflows.execution_engine.core import ExecutionEngine

    parameters = {**engine_init_parameters(definition, api_key), **(init_parameters or {})}
    try:
        engine = ExecutionEngine.init(workflow_definition=definition, init_parameters=parameters)
    except Exception as error:
        raise CliError(f"the workflow does not compile: {root_message(error)}") from error
    roboflow_steps = steps_needing(definition, "model_manager", "api_key")
    return (
        RoboflowStepsEngine(engine, definition, roboflow_steps, parameters.get(API_KEY)) if roboflow_steps else engine
    )


def engine_init_parameters(definition: dict, api_key: Optional[str] = None) -> Dict[str, Any]:
    """``workflows_core.api_key`` (`api_key`, else ``$ROBOFLOW_API_KEY``, else ``$API_KEY``; absent
    when none) and, only when a step of `definition` needs it, ``workflows_core.model_manager``."""
    parameters: Dict[str, Any] = {}
    key = api_key or next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)
    if key:
        parameters[API_KEY] = key
    if steps_needing(definition, "model_manager"):
        parameters[MODEL_MANAGER] = roboflow_model_manager()
    return parameters


def roboflow_model_manager():
    """The model manager inference's CLI builds (a registry of Roboflow model types, at most
    ``MAX_ACTIVE_MODELS`` loaded), as the engine's ``ModelsProvider``.

    A plain ``ModelManager``, not inference's ``BackgroundTaskActiveLearningManager``: that one
    uploads images to the Roboflow project when the project has active learning enabled, which
    a command run on local files should never do behind the user's back.
    """
    from inference.core.env import MAX_ACTIVE_MODELS
    from inference.core.interfaces.workflows_models_provider import ModelManagerModelsProvider
    from inference.core.managers.base import ModelManager
    from inference.core.managers.decorators.fixed_size_cache import WithFixedSizeCache
    from inference.core.registries.roboflow import RoboflowModelRegistry
    from inference.models.utils import ROBOFLOW_MODEL_TYPES

    manager = WithFixedSizeCache(
        ModelManager(model_registry=RoboflowModelRegistry(ROBOFLOW_MODEL_TYPES)), max_size=MAX_ACTIVE_MODELS
    )
    return ModelManagerModelsProvider(manager)


def steps_needing(definition: dict, *init_parameters: str) -> Dict[str, dict]:
    """``{step name: step}`` of the steps whose block asks for any of `init_parameters`."""
    enable_plugin()
    from roboflow_workflows.execution_engine.introspection.blocks_loader import load_workflow_blocks

    wanted = set(init_parameters)
    needs: Dict[str, bool] = {}
    for block in load_workflow_blocks():  # cached by the engine after the first call
        asks = bool(wanted & set(block.block_class.get_init_parameters()))
        for type_name in typing.get_args(
            block.manifest_class.model_fields["type"].annotation
        ):  # the type and its aliases
            needs[type_name] = asks
    steps = [s for s in definition.get("steps", []) if isinstance(s, dict)]
    return {str(s.get("name")): s for s in steps if needs.get(s.get("type"), False)}


class RoboflowStepsEngine:
    """The compiled engine of a workflow with steps that call Roboflow's API (inference's model
    blocks): when such a call fails (offline, no or a wrong API key, unknown model) the error is
    one line naming the step, the model and what it needs. Everything else passes through."""

    def __init__(self, engine, definition: dict, steps: Dict[str, dict], api_key: Optional[str]) -> None:
        self._engine, self._definition, self._steps, self._api_key = engine, definition, steps, api_key

    def run(self, runtime_parameters: Dict[str, Any], *args, **kwargs):
        try:
            return self._engine.run(runtime_parameters, *args, **kwargs)
        except Exception as error:
            message = self.explain(error, runtime_parameters)
            if message is None:
                raise
            raise SetupError(message) from error

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def explain(self, error: BaseException, runtime_parameters: Dict[str, Any]) -> Optional[str]:
        """One line for a failed call to Roboflow's API inside `error`'s chain; None for other errors."""
        from roboflow_workflows.prototypes.platform_errors import RoboflowAPIRequestError

        cause, step_name = _find_cause(error, RoboflowAPIRequestError)
        if cause is None:
            return None
        step_name = step_name if step_name in self._steps else next(iter(self._steps))
        step = self._steps[step_name]
        model = self.model_id(step, runtime_parameters)
        what = f"model {model!r}" if model is not None else "it"
        reason = " ".join(str(cause).split()).rstrip(".") or type(cause).__name__
        key = "one is given" if self._api_key else f"none is set: pass --api-key KEY or set {API_KEY_ENV[0]}"
        return (
            f"step {step_name!r} ({step.get('type')}) could not load {what} from the Roboflow API "
            f"({reason}); "
            f"Roboflow models need network access to api.roboflow.com and an API key ({key})"
        )

    def model_id(self, step: dict, runtime_parameters: Dict[str, Any]) -> Optional[str]:
        """The step's ``model_id``: a literal, or the value (else the default) of the input it selects."""
        value = step.get("model_id")
        if not isinstance(value, str) or not value.startswith("$inputs."):
            return value
        name = value[len("$inputs.") :]
        if name in runtime_parameters:
            return runtime_parameters[name]
        declared = [i for i in self._definition.get("inputs", []) if isinstance(i, dict) and i.get("name") == name]
        return declared[0].get("default_value", value) if declared else value


def _find_cause(error: BaseException, kind: type):
    """The first exception of `kind` down `error`'s chain, and the name of the step that raised it."""
    step_name, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        block_id = getattr(error, "block_id", None)
        if isinstance(block_id, str) and step_name is None:
            step_name = block_id.rsplit(".", 1)[-1]
        if isinstance(error, kind):
            return error, step_name
        error = getattr(error, "inner_error", None) or error.__cause__ or error.__context__
    return None, step_name


def image_inputs(definition: dict) -> List[str]:
    """Names of the workflow's image inputs, in order."""
    return [
        i["name"] for i in definition.get("inputs", []) if isinstance(i, dict) and i.get("type") in IMAGE_INPUT_TYPES
    ]
