"""The `version` field both steps declare: a built-in name (offered as a list to no-code
builders), a name the operator registered in ``SAM_BLOCK_MODELS``, or a selector.

The names come from :mod:`sam_block.runtime.variants`, the one list of them. A literal that
is neither built in nor registered (a path, a URL, another Hugging Face repository) fails
the manifest, naming the available versions; a selector's value is checked at run time
by the same :func:`~sam_block.runtime.variants.get_variant`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import AfterValidator, WithJsonSchema

from roboflow_workflows.execution_engine.entities.types import STRING_KIND, Selector
from sam_block.runtime.registry import MODELS_ENV
from sam_block.runtime.variants import BUILTIN_VERSIONS, DEFAULT_VERSION, get_variant


def _known(value: str) -> str:
    if value.startswith("$"):  # a selector, validated as one by the union's other member
        raise ValueError(f"{value!r} is not a valid selector ($inputs.NAME or $steps.STEP.OUTPUT)")
    get_variant(value)  # UnknownVersionError is a ValueError: pydantic reports its message
    return value


# One validator for every name (so that a bad one gets one message listing them all); the
# schema offers the built-in names as a list and says that registered names are accepted too.
ModelName = Annotated[
    str,
    AfterValidator(_known),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(BUILTIN_VERSIONS), "title": "Built-in model"},
                {
                    "type": "string",
                    "title": "Registered model",
                    "description": f"the name of a model the server's operator registered in {MODELS_ENV}",
                },
            ]
        }
    ),
]
VersionField = Union[ModelName, Selector(kind=[STRING_KIND])]
VERSION_DEFAULT = DEFAULT_VERSION
VERSION_EXAMPLES = [DEFAULT_VERSION, "facebook/sam2.1-hiera-tiny", "$inputs.sam_version"]
