"""The Workflows engine, with the plugin enabled, compiled from a definition."""

from __future__ import annotations

from typing import List, Optional

from sam_block.cli.errors import CliError, root_message
from sam_block.plugin import enable_plugin

IMAGE_INPUT_TYPES = {"WorkflowImage", "InferenceImage"}


def init_engine(definition: dict, init_parameters: Optional[dict] = None):
    """Compile `definition` with the real ``ExecutionEngine`` (sam_block enabled)."""
    enable_plugin()
    from roboflow_workflows.execution_engine.core import ExecutionEngine

    try:
        return ExecutionEngine.init(workflow_definition=definition, init_parameters=init_parameters or {})
    except Exception as error:
        raise CliError(f"the workflow does not compile: {root_message(error)}") from error


def image_inputs(definition: dict) -> List[str]:
    """Names of the workflow's image inputs, in order."""
    return [i["name"] for i in definition.get("inputs", []) if isinstance(i, dict) and i.get("type") in IMAGE_INPUT_TYPES]
