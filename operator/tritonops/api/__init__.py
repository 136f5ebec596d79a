"""The ``ModelDeployment`` API (``tritonops.io/v1alpha1``): schema, CRD generation and typed views.

``schema_*`` modules are the single source of truth of the OpenAPI schema and its CEL rules;
:mod:`tritonops.api.crd` assembles the CustomResourceDefinition written to ``crds/``.
"""

GROUP = "tritonops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md", "mdep")
CRD_NAME = f"{PLURAL}.{GROUP}"
# <name>-<10-char revision hash> must fit a 63-character label value.
MAX_NAME_LENGTH = 45
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
