"""A run's network as an MLflow PyTorch model (`mlflow models serve` answers REST requests with it), and
its name in the Model Registry.

The model is the bare network followed by a softmax: it takes float32 images x/255 in [0, 1], shaped
(N, C, H, W) as the run's data, and returns the class probabilities, (N, classes). Its code (trainlab's
package, and the package of a `model=custom` network) travels with it, so a server needs only torch.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainlab.errors import fail

log = logging.getLogger(__name__)

# The registered model's tag naming the network its versions are: a name is kept for one network.
NETWORK_TAG = "trainlab.network"
ARTIFACT = "model"
_PACKAGE = Path(__file__).resolve().parents[1]  # src/trainlab: pickled networks import their classes from it


def network_label(model: Mapping[str, Any], image_shape: Sequence[int], num_classes: int) -> str:
    """What a registered name stands for: `mlp on 1×28×28 images into 10 classes` (a `model=custom`
    network by its class's dotted path)."""
    name = model.get("_target_") or model["name"]
    return f"{name} on {'×'.join(map(str, image_shape))} images into {num_classes} classes"


def check_registered_name(client: Any, name: str, label: str) -> None:
    """Refuse `logger.register_model=name` when the registry keeps that name for another network (or for
    a model trainlab did not register); a new name, or one of the same network, is allowed."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:  # RESOURCE_DOES_NOT_EXIST: a new name
        return
    holds = registered.tags.get(NETWORK_TAG, "a model not registered by trainlab")
    if holds != label:
        raise fail(
            "logger.register_model", name, f"a new name or one registered for {label} (it holds {holds})"
        )


def _code_paths(network: Any) -> list[str]:
    """trainlab's package and the top-level package (or module file) of every other class of the network
    but torch's: what unpickling it imports."""
    paths = {str(_PACKAGE)}
    for module in {type(layer).__module__ for layer in network.modules()}:
        top = module.split(".")[0]
        if top not in ("torch", "trainlab"):
            package = importlib.import_module(top)
            file = getattr(package, "__file__", None)
            if file is None:  # a namespace package (a folder without __init__.py)
                paths.add(str(Path(next(iter(package.__path__)))))
            else:
                paths.add(str(Path(file).parent if Path(file).name == "__init__.py" else file))
    return sorted(paths)


@contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (`mlflow.pytorch.log_model`) on `tracking_uri` for this call only:
    `mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI for the whole process, which the next run's
    config (several runs in one process: the Python API) would then read as its own."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(tracking_uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def log_network(
    tracking_uri: str, run_id: str, network: Any, examples: Any, registered_name: str | None, label: str
) -> str:
    """Log `network` (eval mode, on the CPU) with a softmax as the run's MLflow model `model`, with its
    signature and `examples` (float32 x/255, (N, C, H, W)) as input example; register it as
    `registered_name` if given. Returns the model's URI (`models:/<name>/<version>` when registered: what
    `mlflow models serve -m` takes)."""
    import mlflow
    import numpy as np
    import torch

    served = torch.nn.Sequential(network, torch.nn.Softmax(dim=1)).cpu().eval()
    examples = np.ascontiguousarray(examples, dtype=np.float32)
    with torch.no_grad():
        probabilities = served(torch.from_numpy(examples)).numpy()
    quiet = _NotAboutPickle()
    logging.getLogger("mlflow.pytorch").addFilter(quiet)
    try:
        with fluent_tracking_uri(tracking_uri):
            info = _log(served, run_id, examples, probabilities, network, registered_name)
    finally:
        logging.getLogger("mlflow.pytorch").removeFilter(quiet)
    if not registered_name:
        return info.model_uri
    mlflow.MlflowClient(tracking_uri).set_registered_model_tag(registered_name, NETWORK_TAG, label)
    return f"models:/{registered_name}/{info.registered_model_version}"


class _NotAboutPickle(logging.Filter):
    """MLflow warns that a pickled model runs code when loaded: here that code is trainlab's own, shipped
    with the model. Its alternative, pt2 (torch.export), traces every network again (twice the logging
    time of a small MLP here) and refuses networks whose forward branches on data."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


def _log(served: Any, run_id: str, examples: Any, probabilities: Any, network: Any, name: str | None) -> Any:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    return mlflow.pytorch.log_model(
        served,
        name=ARTIFACT,
        run_id=run_id,
        signature=infer_signature(examples, probabilities),
        input_example=examples,
        code_paths=_code_paths(network),
        serialization_format="pickle",
        # Given, not inferred: inferring loads the model in a subprocess (seconds per run).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        registered_model_name=name,
    )
