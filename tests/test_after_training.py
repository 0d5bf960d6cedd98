"""After training, end to end: `src/eval.py` and `src/predict.py` in a subprocess on a real tiny run and
its SQLite MLflow store, the registered model served by `mlflow models serve` on 127.0.0.1, and each
mistake as one line and exit status 2."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, cli_env, mlflow_runs, synthetic, write_mnist

SRC = REPO / "src"


def app(
    script: str, *args: str, root: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python src/<script>.py paths.root_dir=<root> ARGS`, as a user runs it (`env`: variables set)."""
    cmd = [sys.executable, str(SRC / f"{script}.py"), f"paths.root_dir={root}", *args]
    result = subprocess.run(
        cmd, capture_output=True, text=True, env=cli_env(**(env or {})), timeout=300, cwd=root
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture
def in_process(monkeypatch):
    """Compose `conf/<app>.yaml` with overrides as `src/<app>.py` does, and call its function here: the
    CLI's subprocess costs ~10 s of imports, and its one-line errors are `error: ` + these messages."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trainlab.evaluate.evaluation import evaluate
    from trainlab.evaluate.prediction import predict

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    apps = {"eval": evaluate, "predict": predict}

    def call(name: str, *overrides: str, root: Path):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = hydra_compose(name, overrides=[f"paths.root_dir={root}", *overrides])
        return apps[name](cfg)

    yield call
    GlobalHydra.instance().clear()


def refused(call, *args, **kwargs) -> str:
    """The one-line message of the ConfigError that `call` raises."""
    from trainlab.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    return f"error: {caught.value}"


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """One tiny MNIST run whose network is registered as `digits`: (project folder, MLflow run id)."""
    root = tmp_path_factory.mktemp("trained")
    write_mnist(root / "data")
    result = app("train", *TINY, "logger.register_model=digits", root=root)
    assert "MLflow model models:/digits/1\n" in result.stdout + result.stderr  # what `serve -m` takes
    [run] = mlflow_runs(root)
    return root, run.info.run_id


def best_checkpoint(root: Path) -> Path:
    [path] = root.glob("outputs/*/*/checkpoints/best.ckpt")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def csv_written(result: subprocess.CompletedProcess) -> Path:
    return Path(result.stdout.strip().splitlines()[-1].rpartition(": ")[2])


def test_eval_by_run_id_scores_the_best_checkpoint_into_the_same_run(trained):
    root, run_id = trained
    result = app("eval", f"run_id={run_id}", root=root)
    run = client(root).get_run(run_id)
    metrics = run.data.metrics
    # The same network on the same test images as the run's own test: the same numbers.
    assert metrics["eval/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert metrics["eval/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert {f"eval/class_acc/{c}" for c in range(10)} <= metrics.keys()
    assert run.data.tags["eval.checkpoint"].startswith(f"run_id={run_id} (best.ckpt, epoch 0")
    assert run.data.tags["eval.data"] == "mnist (mnist)"
    artifacts = {a.path for a in client(root).list_artifacts(run_id, "eval")}
    assert {"eval/confusion_matrix.png", "eval/mistakes.png", "eval/per_class.txt"} <= artifacts
    assert "class" in result.stdout and "accuracy" in result.stdout and "\nall " in result.stdout
    assert len(mlflow_runs(root)) == 1  # no run of its own


def test_eval_by_checkpoint_records_in_the_run_its_folder_names(trained):
    root, run_id = trained
    before = len(client(root).get_metric_history(run_id, "eval/acc"))
    app("eval", f"ckpt_path={best_checkpoint(root)}", "mistakes=0", root=root)
    assert len(client(root).get_metric_history(run_id, "eval/acc")) == before + 1
    assert client(root).get_run(run_id).data.tags["eval.checkpoint"].startswith("ckpt_path=")


def test_eval_on_another_data_set_of_the_same_shape_goes_into_a_child_run(trained, tmp_path, in_process):
    root, run_id = trained
    write_mnist(root / "data", folder="FashionMNIST")
    overrides = ("data=fashion_mnist", "data.system_copy=null", f"paths.output_dir={tmp_path}")
    in_process("eval", f"run_id={run_id}", *overrides, root=root)
    [child] = [r for r in mlflow_runs(root) if r.info.run_id != run_id]
    assert child.data.tags["mlflow.parentRunId"] == run_id
    assert child.data.tags["eval.data"] == "fashion_mnist (fashion_mnist)"
    assert child.info.status == "FINISHED" and "eval/acc" in child.data.metrics


def test_a_run_without_a_checkpoint_artifact_is_evaluated_from_its_run_folder(tmp_path, in_process):
    write_mnist(tmp_path / "data")
    app("train", *TINY, "logger.log_checkpoint=false", "logger.log_model=false", root=tmp_path)
    [run] = mlflow_runs(tmp_path)
    artifacts = [a.path for a in client(tmp_path).list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts and not [a for a in artifacts if a.startswith(("checkpoints", "model"))]
    in_process(
        "eval", f"run_id={run.info.run_id}", "mistakes=0", f"paths.output_dir={tmp_path}", root=tmp_path
    )
    assert "eval/acc" in client(tmp_path).get_run(run.info.run_id).data.metrics


def write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"digit_{i}.png" for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image).save(path)
    return paths


def test_predict_reads_images_a_folder_npz_and_idx_alike(trained, tmp_path, in_process):
    from PIL import Image

    from trainlab.data.sources import _read_idx

    root, run_id = trained
    idx = root / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images = _read_idx(idx)[:4].numpy()
    np.savez(tmp_path / "four.npz", images=images[:, None])  # N×1×28×28
    pngs = write_pngs(tmp_path / "pngs", images)
    # A colour image twice the size: converted to grey and resized, as the run's data are.
    Image.fromarray(np.repeat(images[0], 2, 0).repeat(2, 1)).convert("RGB").save(tmp_path / "big.png")
    cli = app("predict", f"run_id={run_id}", f"input={tmp_path / 'pngs'}", root=root)
    by_png = read_csv(csv_written(cli))
    outputs = {}
    for name, source in (("idx", idx), ("npz", tmp_path / "four.npz"), ("big", tmp_path / "big.png")):
        outputs[name] = read_csv(
            in_process(
                "predict", f"run_id={run_id}", f"input={source}", f"output={tmp_path / name}.csv", root=root
            )
        )

    assert [r["input"] for r in by_png] == [str(p) for p in pngs]
    assert f"{pngs[0]}: " in cli.stdout  # a short result is printed as well
    assert len(outputs["idx"]) == 100 and outputs["idx"][0]["input"] == f"{idx}[0]"
    classes = [str(c) for c in range(10)]
    for a, b, c in zip(outputs["idx"][:4], outputs["npz"], by_png, strict=True):
        assert a["predicted"] == b["predicted"] == c["predicted"]
        assert (
            [float(a[k]) for k in classes] == [float(b[k]) for k in classes] == [float(c[k]) for k in classes]
        )
        assert sum(float(a[k]) for k in classes) == pytest.approx(1, abs=1e-4)
        assert a["predicted"] == max(classes, key=lambda k: float(a[k]))
    assert outputs["big"][0]["predicted"] == by_png[0]["predicted"]


def test_predict_names_classes_where_the_checkpoint_has_them(trained, tmp_path, in_process):
    root, _ = trained
    state = torch.load(best_checkpoint(root), weights_only=True)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    state["hyper_parameters"]["class_names"] = names
    torch.save(state, tmp_path / "named.ckpt")
    idx = root / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    rows = read_csv(
        in_process(
            "predict",
            f"ckpt_path={tmp_path / 'named.ckpt'}",
            f"input={idx}",
            f"output={tmp_path / 'p.csv'}",
            root=root,
        )
    )
    assert list(rows[0])[3:] == names and rows[0]["predicted"] in names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_registered_model_served_by_mlflow_answers_as_predict_does(trained, tmp_path):
    """`mlflow models serve -m models:/digits/1 --env-manager local` for real, on a free port of
    127.0.0.1; MLflow starts the server with `uvicorn` from PATH: a shim runs this interpreter's."""
    root, run_id = trained
    version = client(root).get_model_version("digits", "1")
    assert version.run_id == run_id
    idx = root / "data" / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    expected = read_csv(csv_written(app("predict", f"run_id={run_id}", f"input={idx}", root=root)))[:5]

    shim = tmp_path / "bin" / "uvicorn"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    shim.chmod(0o755)
    port = free_port()
    env = cli_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlruns/mlflow.db", PATH=f"{shim.parent}:{os.environ['PATH']}"
    )
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits/1"]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [*command, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,  # its own process group: the uvicorn it starts goes with it
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no answer in 120 s"
                time.sleep(0.5)
        from trainlab.data.sources import _read_idx

        images = _read_idx(idx)[:5].numpy()[:, None].astype(np.float32) / 255  # x/255, N×C×H×W
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    classes = [str(c) for c in range(10)]
    for row, probabilities in zip(expected, answer, strict=True):
        assert probabilities == pytest.approx([float(row[k]) for k in classes], abs=1e-5)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> tuple[Path, str]:
    """A run that diverged in its first step: FAILED, no checkpoint."""
    root = tmp_path_factory.mktemp("failed")
    write_mnist(root / "data")
    app("train", *TINY, "optimizer.lr=1e12", "init=normal", "init.std=100", root=root, check=False)
    [run] = mlflow_runs(root)
    return root, run.info.run_id


def test_a_run_that_failed_before_its_first_checkpoint_is_refused(failed_run):
    root, run_id = failed_run
    line = last_line(app("eval", f"run_id={run_id}", root=root, check=False))
    assert line.startswith(
        f"error: run_id='{run_id}': must be a run with a checkpoint (this FAILED run has no"
    )
    assert "Diverged" in line


def test_an_unknown_run_id_is_refused_in_one_line(trained):
    root, _ = trained
    line = last_line(app("predict", "run_id=0123456789abcdef", "input=x.png", root=root, check=False))
    assert line.startswith(
        f"error: run_id='0123456789abcdef': must be the id of a run in sqlite:///{root}/mlruns"
    )


def test_a_checkpoint_of_another_model_is_refused(trained, tmp_path, in_process):
    root, _ = trained
    state = torch.load(best_checkpoint(root), weights_only=True)
    state["hyper_parameters"]["config"]["model"]["hidden"] = [7]  # its weights are of a 4-layer MLP
    torch.save(state, tmp_path / "other.ckpt")
    line = refused(in_process, "eval", f"ckpt_path={tmp_path / 'other.ckpt'}", root=root)
    assert line.startswith(
        f"error: ckpt_path='{tmp_path / 'other.ckpt'}': must be a checkpoint whose weights fit its config's "
        "network (another model: Error(s) in loading state_dict for MLP"
    )
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "lightning.ckpt")
    line = refused(in_process, "eval", f"ckpt_path={tmp_path / 'lightning.ckpt'}", root=root)
    assert line.endswith(
        "must be a checkpoint of a trainlab run (this one holds no trainlab config: another model)"
    )


def test_an_array_of_another_shape_than_the_runs_images_is_refused(trained, tmp_path, in_process):
    root, run_id = trained
    np.savez(tmp_path / "colour.npz", images=np.zeros((2, 3, 32, 32), np.uint8))
    line = refused(in_process, "predict", f"run_id={run_id}", f"input={tmp_path / 'colour.npz'}", root=root)
    assert line == (
        f"error: input='{tmp_path / 'colour.npz'}': must be images of the run's shape, N×1×28×28 or "
        "N×28×28×1 or N×28×28 (it holds 2×3×32×32)"
    )


def test_an_image_of_another_size_is_refused_without_resize(trained, tmp_path, in_process):
    root, run_id = trained
    write_pngs(tmp_path, np.zeros((1, 20, 20), np.uint8))
    path = tmp_path / "digit_0.png"
    line = refused(in_process, "predict", f"run_id={run_id}", f"input={path}", "resize=false", root=root)
    assert line == (
        f"error: input='{path}': must be an image of the run's 28×28 pixels (it has 20×20; "
        "resize=true scales it)"
    )


def test_other_data_of_another_shape_is_refused(trained, in_process):
    root, run_id = trained
    line = refused(in_process, "eval", f"run_id={run_id}", "data=cifar10", root=root)
    assert line == (
        "error: data='cifar10': must be a data set of the run's 1×28×28 images in 10 classes: "
        "fashion_mnist, mnist"
    )


def test_a_registered_name_of_another_network_stops_training_before_any_run(trained):
    root, _ = trained
    runs = len(mlflow_runs(root))
    line = last_line(
        app("train", *TINY, "model=simple_cnn", "logger.register_model=digits", root=root, check=False)
    )
    assert line == (
        "error: logger.register_model='digits': must be a new name or one registered for simple_cnn on "
        "1×28×28 images into 10 classes (it holds mlp on 1×28×28 images into 10 classes)"
    )
    assert len(mlflow_runs(root)) == runs


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["logger.log_model=maybe"],
            "logger.log_model='maybe': must be null (on for a single run, off in a sweep), true or false",
        ),
        (
            ["logger.log_model=false", "logger.register_model=digits"],
            "logger.register_model='digits': must be null when logger.log_model=false "
            "(it registers the logged model)",
        ),
    ],
)
def test_model_logging_keys_are_checked_with_the_config(compose, overrides, line):
    from trainlab.errors import ConfigError
    from trainlab.tracking.tracker import check_logger

    with pytest.raises(ConfigError) as caught:
        check_logger(compose(*overrides).logger)
    assert str(caught.value) == line


def test_sweep_trials_log_no_model_unless_asked(compose):
    from trainlab.tracking.tracker import logs_model

    default = compose().logger
    assert logs_model(default, sweep=False) and not logs_model(default, sweep=True)
    assert logs_model(compose("logger.log_model=true").logger, sweep=True)
    assert logs_model(compose("logger.register_model=digits").logger, sweep=True)
    assert not logs_model(compose("logger.log_model=false").logger, sweep=False)


def page_commands() -> list[tuple[str, list[str]]]:
    """(app, overrides) of every `python src/<app>.py …` line of docs/after-training.md, placeholders
    filled in."""
    import re
    import shlex

    text = (REPO / "docs" / "after-training.md").read_text()
    found = []
    for line in re.findall(r"^python src/(\w+)\.py(.*?)(?:\s+#.*)?$", text, flags=re.MULTILINE):
        app_name, rest = line
        rest = rest.replace("TRIAL_RUN_ID", "0" * 32).replace("RUN_ID", "0" * 32)
        found.append((app_name, shlex.split(rest.replace("DATE/TIME", "2026-01-01/00-00-00"))))
    return found


def test_every_command_of_the_page_composes_and_validates(compose):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trainlab.config import validate
    from trainlab.evaluate.evaluation import RULES as EVAL_RULES
    from trainlab.evaluate.prediction import RULES as PREDICT_RULES
    from trainlab.rules import check_rules
    from trainlab.tracking.tracker import check_logger

    commands = page_commands()
    assert {name for name, _ in commands} == {"train", "eval", "predict"} and len(commands) >= 9
    for name, overrides in commands:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = hydra_compose(name, overrides=overrides)
        if name == "train":
            validate(cfg)
        else:
            check_rules(cfg, EVAL_RULES if name == "eval" else PREDICT_RULES)
            check_logger(cfg.logger)
            assert (cfg.run_id is None) != (cfg.ckpt_path is None), overrides
    GlobalHydra.instance().clear()


def test_a_population_registers_each_members_model_and_eval_finds_a_member_by_run_id(
    run_cli, mnist_root, tmp_path, in_process
):
    run_cli("-m", *TINY, "optimizer.lr=0.05,0.1", "hydra.sweeper.population=2", "logger.register_model=pair")
    [job] = tmp_path.glob("multirun/*/*/population.json")
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.data.tags["population.job"] for r in runs} == {job.parent.name}
    versions = client(tmp_path).search_model_versions("name='pair'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
    member = runs[0].info.run_id  # its best.ckpt is in its member folder, not among its artifacts
    values = in_process(
        "eval", f"run_id={member}", "mistakes=0", f"paths.output_dir={tmp_path / 'eval'}", root=tmp_path
    )
    assert client(tmp_path).get_run(member).data.metrics["eval/acc"] == values["eval/acc"]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            [],
            "error: run_id=None: must be an MLflow run id, or else ckpt_path=<a .ckpt file> (one of the two)",
        ),
        (
            ["run_id=abc", "ckpt_path=best.ckpt"],
            "error: run_id='abc': must be an MLflow run id, or else ckpt_path=<a .ckpt file> "
            "(one of the two)",
        ),
        (
            ["run_id=abc", "logger=none"],
            "error: logger='none': must be mlflow to find a run by its id (or give ckpt_path=...)",
        ),
        (
            ["run_id=abc", "mistakes=-1"],
            "error: mistakes=-1: must be an integer >= 0 (how many wrong images to show)",
        ),
    ],
)
def test_eval_takes_one_run_and_looks_a_run_id_up_in_mlflow(in_process, tmp_path, overrides, line):
    assert refused(in_process, "eval", *overrides, root=tmp_path) == line
    assert not (tmp_path / "mlruns").exists()


def test_a_run_whose_data_folder_is_gone_is_evaluated_on_this_machines_data(trained, tmp_path, in_process):
    root, run_id = trained
    state = torch.load(best_checkpoint(root), weights_only=True)
    state["hyper_parameters"]["config"]["data"]["root"] = "/trained/elsewhere/data"
    torch.save(state, tmp_path / "moved.ckpt")
    moved = f"ckpt_path={tmp_path / 'moved.ckpt'}"
    values = in_process("eval", moved, "mistakes=0", f"paths.output_dir={tmp_path}", root=root)
    assert values["eval/acc"] == pytest.approx(
        client(root).get_run(run_id).data.metrics["test/acc"], abs=1e-6
    )


def test_a_custom_networks_code_travels_with_its_model(tmp_path, monkeypatch):
    """`model=custom` imports the user's class from the folder they run in; the served model carries
    that code, so a server started elsewhere loads it."""
    from trainlab.tracking.model import log_network

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    from omegaconf import OmegaConf
    from user_models.nets import TinyConvNet

    network = TinyConvNet((1, 28, 28), 10, OmegaConf.create({"name": "none"}), width=4).eval()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = MlflowClient(uri)
    experiment = store.create_experiment("custom", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = store.create_run(experiment).info.run_id
    examples = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    model_uri = log_network(uri, run_id, network, examples, None, "user_models.nets.TinyConvNet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    load = (
        "import sys, mlflow.pytorch, torch; "
        "print(mlflow.pytorch.load_model(sys.argv[1])(torch.ones(1, 1, 28, 28))[0].tolist())"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load, model_uri],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=cli_env(MLFLOW_TRACKING_URI=uri),
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    with torch.no_grad():
        expected = network(torch.ones(1, 1, 28, 28)).softmax(1)[0]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == pytest.approx(expected.tolist(), abs=1e-6)


# --- every kind of data, moved data, and the child run's end ------------------------------------------------

USER_CODE = {"PYTHONPATH": str(REPO / "tests")}  # tests/user_data, importable as a user's own code is
STRIPES = ["data=custom", "data._target_=user_data.modules.Stripes", "+data.size=8", "model=cnn"]


def eval_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def eval_artifacts(root: Path, run_id: str) -> set[str]:
    return {a.path for a in client(root).list_artifacts(run_id, "eval")}


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory) -> tuple[Path, str]:
    """One tiny run on the tests' own LightningDataModule (tests/user_data/modules.py: Stripes)."""
    root = tmp_path_factory.mktemp("custom")
    app("train", *TINY, *STRIPES, root=root, env=USER_CODE)
    [run] = mlflow_runs(root)
    return root, run.info.run_id


def test_eval_of_a_run_on_a_users_datamodule_tests_it_through_its_own_setup_and_test_loader(custom_run):
    root, run_id = custom_run
    result = app("eval", f"run_id={run_id}", "mistakes=4", root=root, env=USER_CODE)
    metrics = client(root).get_run(run_id).data.metrics
    assert metrics["eval/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)  # what trainer.test saw
    assert {"eval/class_acc/rows", "eval/class_acc/columns"} <= metrics.keys()
    assert "\nrows " in result.stdout and "\ncolumns " in result.stdout and "\nall " in result.stdout
    assert "on custom (user_data.modules.Stripes), 64 test images" in result.stdout
    assert {"eval/confusion_matrix.png", "eval/mistakes.png", "eval/per_class.txt"} <= eval_artifacts(
        root, run_id
    )


@pytest.fixture
def user_code(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))


def child_runs(root: Path, parent: str) -> list:
    return [r for r in mlflow_runs(root) if r.data.tags.get("mlflow.parentRunId") == parent]


def test_eval_on_another_datamodule_records_into_a_child_run_that_ends_finished(
    custom_run, tmp_path, in_process, user_code
):
    root, run_id = custom_run
    before = {r.info.run_id for r in child_runs(root, run_id)}
    other = ["data=custom", "data._target_=user_data.modules.ShapeFromFirstBatch", "+data.size=8"]
    values = in_process("eval", f"run_id={run_id}", *other, f"paths.output_dir={tmp_path}", root=root)
    [child] = [r for r in child_runs(root, run_id) if r.info.run_id not in before]
    assert child.info.status == "FINISHED" and child.info.run_name == "eval data=custom"
    assert child.data.metrics["eval/acc"] == values["eval/acc"]
    assert child.data.tags["eval.data"] == "custom (user_data.modules.ShapeFromFirstBatch)"
    assert {"eval/confusion_matrix.png", "eval/mistakes.png"} <= eval_artifacts(root, child.info.run_id)


def test_a_child_run_whose_evaluation_fails_midway_ends_failed_with_the_reason(
    custom_run, tmp_path, in_process, user_code
):
    root, run_id = custom_run
    before = {r.info.run_id for r in child_runs(root, run_id)}
    lost = ["data=custom", "data._target_=user_data.modules.LostTestSplit", "+data.size=8"]
    with pytest.raises(OSError, match="disk is gone"):
        in_process("eval", f"run_id={run_id}", *lost, f"paths.output_dir={tmp_path}", root=root)
    [child] = [r for r in child_runs(root, run_id) if r.info.run_id not in before]
    assert child.info.status == "FAILED"
    assert child.data.tags["failure_reason"] == "OSError: the test images' disk is gone"


def test_a_child_run_interrupted_by_ctrl_c_ends_killed(
    custom_run, tmp_path, in_process, user_code, monkeypatch
):
    from trainlab.evaluate import evaluation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "run_network", interrupted)
    root, run_id = custom_run
    before = {r.info.run_id for r in child_runs(root, run_id)}
    other = ["data=custom", "data._target_=user_data.modules.Stripes", "+data.size=8"]
    with pytest.raises(KeyboardInterrupt):
        in_process("eval", f"run_id={run_id}", *other, f"paths.output_dir={tmp_path}", root=root)
    [child] = [r for r in child_runs(root, run_id) if r.info.run_id not in before]
    assert child.info.status == "KILLED"


def move(path: Path, to: Path) -> Path:
    path.rename(to)
    return to


@pytest.mark.parametrize("kind", ["image_folder", "arrays"])
def test_eval_finds_a_runs_own_data_where_they_moved_and_names_the_key_that_moves_them(
    kind, tmp_path, in_process, capsys
):
    if kind == "image_folder":
        classes = ("cat", "dog", "fish")
        data = synthetic.write_image_folder(tmp_path / "pets", 8, size=8, classes=classes)
        key, train = "root", ["data=image_folder", f"data.root={data}", "model=cnn"]
    else:
        from test_own_data import npz_of

        classes = ("0", "1", "2", "3")
        data = tmp_path / "course.npz"
        np.savez(data, **npz_of("NHWC"))
        key, train = "path", ["data=arrays", f"data.path={data}", "data.batch_size=16"]
    app("train", *TINY, *train, root=tmp_path)
    [run] = mlflow_runs(tmp_path)
    run_id, output = run.info.run_id, tmp_path / "eval"
    moved = move(data, tmp_path / f"moved{data.suffix}")

    assert refused(in_process, "eval", f"run_id={run_id}", root=tmp_path) == (
        f"error: data.{key}='{data}': must be where the run's data are on this machine (it read them there; "
        f"give data.{key}=<where they are now>)"
    )
    other = "path" if key == "root" else "root"
    assert refused(in_process, "eval", f"run_id={run_id}", f"data.{other}={moved}", root=tmp_path) == (
        f"error: data.{other}='{moved}': must be unset: the run's {kind} data are moved by "
        f"data.{key}=<where they are now>"
    )
    values = in_process(
        "eval", f"run_id={run_id}", f"data.{key}={moved}", f"paths.output_dir={output}", root=tmp_path
    )
    printed = capsys.readouterr().out
    metrics = client(tmp_path).get_run(run_id).data.metrics
    assert values["eval/acc"] == metrics["eval/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert all(f"\n{name} " in printed for name in classes) and f"on {kind} ({moved})" in printed
    assert {"confusion_matrix.png", "mistakes.png", "per_class.txt"} <= eval_files(output)

    images = moved / "cat" if kind == "image_folder" else moved  # an npz's x_test
    rows = read_csv(
        in_process(
            "predict", f"run_id={run_id}", f"input={images}", f"output={tmp_path / 'p.csv'}", root=tmp_path
        )
    )
    assert list(rows[0])[3:] == list(classes) and {r["predicted"] for r in rows} <= set(classes)


def test_eval_reads_a_built_in_data_sets_files_where_data_root_says(trained, tmp_path, in_process, capsys):
    root, run_id = trained
    write_mnist(tmp_path / "elsewhere", n_test=50)  # not the run's 100 test images: these are read
    overrides = (f"data.root={tmp_path / 'elsewhere'}", "mistakes=0", f"paths.output_dir={tmp_path}")
    in_process("eval", f"run_id={run_id}", *overrides, root=root)
    assert "on mnist (mnist), 50 test images" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a mistake only on a machine without CUDA")
@pytest.mark.parametrize("script", ["eval", "predict"])
def test_device_cuda_without_cuda_is_one_line_and_exit_2_before_anything_is_read(script, tmp_path):
    given = ["input=x.png"] if script == "predict" else []
    result = app(script, "run_id=0123456789abcdef", *given, "device=cuda", root=tmp_path, check=False)
    assert (
        last_line(result)
        == "error: device='cuda': must be auto or cpu (torch sees no CUDA GPU on this machine)"
    )
    assert not (tmp_path / "mlruns").exists()


def test_predict_into_a_folder_writes_predictions_csv_there(trained, tmp_path, in_process):
    root, run_id = trained
    idx = f"input={root / 'data' / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte'}"
    (tmp_path / "existing").mkdir()
    for output, written in (("existing", "existing"), ("new/", "new")):
        path = in_process("predict", f"run_id={run_id}", idx, f"output={tmp_path}/{output}", root=root)
        assert path == tmp_path / written / "predictions.csv" and len(read_csv(path)) == 100
    (tmp_path / "a_file").write_text("")
    assert refused(
        in_process, "predict", f"run_id={run_id}", idx, f"output={tmp_path}/a_file/p.csv", root=root
    ) == (
        f"error: output='{tmp_path}/a_file/p.csv': must be a .csv file or a folder ({tmp_path}/a_file is a "
        "file, not a folder)"
    )


@pytest.mark.parametrize(
    ("script", "overrides", "line"),
    [
        (
            "eval",
            ["logger.log_model=maybe"],
            "error: logger.log_model='maybe': must be null (on for a single run, off in a sweep), true or "
            "false",
        ),
        ("predict", ["input=x.png", "batch_size=0"], "error: batch_size=0: must be an integer >= 1"),
        ("predict", ["input=x.png", "resize=maybe"], "error: resize='maybe': must be true or false"),
        (
            "predict",
            ["input=x.png", "output=[a,b]"],
            "error: output=['a', 'b']: must be null, a .csv file or a folder",
        ),
    ],
)
def test_bad_values_of_eval_and_predict_keys_are_one_line_before_mlflow_is_touched(
    in_process, tmp_path, script, overrides, line
):
    assert refused(in_process, script, "run_id=abc", *overrides, root=tmp_path) == line
    assert not (tmp_path / "mlruns").exists()


def test_an_empty_array_is_refused_as_input(trained, tmp_path, in_process):
    root, run_id = trained
    np.savez(tmp_path / "none.npz", images=np.zeros((0, 28, 28), np.uint8))
    given = (f"input={tmp_path / 'none.npz'}", f"output={tmp_path}/")
    line = refused(in_process, "predict", f"run_id={run_id}", *given, root=root)
    assert line.endswith(
        "must be images of the run's shape, N×1×28×28 or N×28×28×1 or N×28×28 (it holds 0×28×28)"
    )


def test_eval_writes_its_table_and_predict_its_csv_atomically(trained, tmp_path, in_process, monkeypatch):
    """Both files go through trainlab.atomic: a kill mid-write leaves no half-written one."""
    from trainlab.evaluate import evaluation, prediction

    written = []
    for module in (evaluation, prediction):
        monkeypatch.setattr(module, "write_atomically", lambda path, data: written.append(path.name))
    root, run_id = trained
    checkpoint = f"ckpt_path={best_checkpoint(root)}"
    in_process("eval", checkpoint, "mistakes=0", "logger=none", f"paths.output_dir={tmp_path}", root=root)
    idx = f"input={root / 'data' / 'MNIST' / 'raw' / 't10k-images-idx3-ubyte'}"
    in_process("predict", f"run_id={run_id}", idx, f"output={tmp_path / 'p.csv'}", root=root)
    assert written == ["per_class.txt", "p.csv"]
