"""The data a finished run is tested on: its own (as its checkpoint's config says, where they are now), or
another data set of its shape (`data=<name>`), checked like a training run's before anything is read.

`data.root=` / `data.path=` without `data=` move the run's own data: the rest of its data config is kept.
eval.yaml declares those two keys as `???` (not given) so that they can be set without Hydra's `+`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from trainlab.errors import fail
from trainlab.evaluate.finished import Finished

# The keys that say where a data set's files are: a folder (built-in sets, image folders), a file (arrays).
LOCATIONS = ("root", "path")


def given_data(node: DictConfig | None) -> dict[str, Any]:
    """The `data` keys given on the command line or by `data=<name>` (eval.yaml's `???`: not given)."""
    if node is None:
        return {}
    values = OmegaConf.to_container(node, resolve=True)
    return {key: value for key, value in values.items() if not OmegaConf.is_missing(node, key)}


def data_config(node: DictConfig | None, finished: Finished, data_dir: str) -> tuple[DictConfig, bool]:
    """(the data config to test on, checked; whether it is other data than the run's own, which then go
    into a child run). `data_dir` is this machine's `paths.data_dir`."""
    from trainlab.data import DATASETS, check_data

    given = given_data(node)
    chosen = "name" in given  # data=<name>: a data set of its own, not the run's moved
    data = OmegaConf.create(given if chosen else own_data(finished, given, data_dir))
    check_data(data)
    # A built-in set is the same data under its name; a folder, an npz or a DataModule chosen anew is other.
    other = chosen and (data.name != finished.config["data"]["name"] or data.name not in _built_in(DATASETS))
    check_fits(data, finished, chosen, given)
    return data, other


def _built_in(datasets: dict[str, Any]) -> set[str]:
    return {name for name, dataset in datasets.items() if dataset.kind == "built-in"}


def own_data(finished: Finished, moved: dict[str, Any], data_dir: str) -> dict[str, Any]:
    """The run's data config with `moved` (`data.root=…`, `data.path=…`) set. Folders the run kept in its
    `paths.data_dir` that this machine lacks are this machine's `data_dir`'s: a built-in set's files, an
    image folder's cache. Files of its own (an image folder, an npz) that are gone must be given."""
    from trainlab.data import CUSTOM, DATASETS

    own = dict(finished.config["data"])
    kind = DATASETS[own["name"]].kind if own["name"] in DATASETS else CUSTOM
    for key, value in moved.items():
        if key not in own and kind != CUSTOM:  # a DataModule's keys are its constructor's: check_data's
            where = [f"data.{k}" for k in LOCATIONS if k in own]
            raise fail(
                f"data.{key}",
                value,
                f"unset: the run's {own['name']} data are moved by {where[0]}=<where they are now>",
            )
        own[key] = value
    if kind == "built-in" and "root" not in moved and not _exists(own["root"]):
        own["root"] = data_dir
    if kind == "image_folder" and own.get("cache") and not _exists(own["cache"]):
        own["cache"] = str(Path(data_dir) / Path(str(own["cache"])).name)
    for key in LOCATIONS:
        if kind == CUSTOM or key not in own or _exists(own[key]) or (kind == "built-in" and key not in moved):
            continue
        if key in moved:
            thing = "folder" if key == "root" else "file"
            raise fail(f"data.{key}", own[key], f"an existing {thing}: where the run's data are now")
        raise fail(
            f"data.{key}",
            own[key],
            f"where the run's data are on this machine (it read them there; give data.{key}=<where they "
            "are now>)",
        )
    return own


def _exists(path: object) -> bool:
    return path is not None and Path(str(path)).expanduser().exists()


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def check_fits(data: DictConfig, finished: Finished, chosen: bool, given: dict[str, Any]) -> None:
    """The data's images and classes are the run's (its own data, moved: its class names too)."""
    from trainlab.data import DATASETS, describe_data

    found = describe_data(data)
    wanted = (tuple(finished.image_shape), finished.num_classes)
    shape = _shape(finished.image_shape)
    if chosen and (found.image_shape, found.num_classes) != wanted:
        built_in = {name: DATASETS[name].describe(data) for name in _built_in(DATASETS)}
        same = sorted(name for name, (size, names) in built_in.items() if (size, len(names)) == wanted)
        raise fail(
            "data",
            data.name,
            f"a data set of the run's {shape} images in {wanted[1]} classes: " + ", ".join(same),
        )
    if chosen:
        return
    key = next((k for k in LOCATIONS if k in given), None)
    what = (f"data.{key}", given[key]) if key else ("data", data.name)
    if (found.image_shape, found.num_classes) != wanted:
        raise fail(
            *what,
            f"the run's data: {shape} images in {wanted[1]} classes (these are {_shape(found.image_shape)} "
            f"images in {found.num_classes})",
        )
    recorded = finished.hparams.get("class_names")
    if recorded and [str(n) for n in recorded] != list(found.class_names):
        raise fail(
            *what,
            f"the run's data, in its classes {_names(recorded)} (these are {_names(found.class_names)})",
        )


def _names(names: Any, shown: int = 6) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:shown]) + (f", … ({len(names)})" if len(names) > shown else "")
